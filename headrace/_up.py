"""``headrace up``: every daemon a config has a section for, in one supervised process tree.

Theory of operation. The parts start in dependency order — collector, agent, relay, bootstrap,
then a ``sink`` when the config has that section (it needs ``sink.listen``) —
each as a child process (``python -m headrace <part> --config FILE``) in a session of its own (a
terminal's Ctrl-C reaches only ``up``, which then stops them in order), and each is waited for on
its ``/healthz`` before the next starts. The supervisor polls the children; :class:`RestartPolicy`
(plain code: exit status and clock in, decision out) decides what a death means:

* exit 2 (a configuration or usage error) is not retried: every part is stopped and ``up`` exits 2;
* any other death is restarted after an exponential backoff (1 s doubling to 30 s), reset once the
  part has stayed up for a minute; more than ``max_restarts`` deaths within ``window_seconds`` stop
  everything and ``up`` exits 1 (a crash loop that restarting does not fix).

On SIGTERM or SIGINT the parts stop in reverse order, each with SIGTERM (they finish in-flight acks
and save checkpoints) and SIGKILL only after ``stop_seconds``. A child's parent-death signal is set,
so a ``kill -9`` of ``up`` does not leave daemons behind.

Status page: ``--status-listen`` (default 127.0.0.1:7000) serves the page of the whole and the
``/v1/overview`` it polls (:mod:`headrace._up_status`), from a thread of ``up`` itself, so it keeps
answering while parts die and restart; it is bound before any part starts.

Resume state: none of its own. Each part keeps its own (checkpoints, spools, slots); restarting a
part is the same as the part restarting itself. Without ``--config`` it writes embedded defaults to
``DIR/headrace-up.yaml`` (DIR: ``./headrace-data``): a collector, an agent tailing ``DIR/logs/*.log``,
a relay on the SQLite database ``DIR/app.db`` (created empty when missing) and a bootstrap server.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from ._cli import common_options
from ._config import parse_listen
from ._logging import get_logger
from .errors import ListenError

if TYPE_CHECKING:
    from ._up_status import StatusServer

__all__ = ["PARTS", "RestartPolicy", "default_config", "up"]

log = get_logger("up")

#: the daemons, in the order they start (each needs the ones before it)
PARTS = ("collector", "agent", "relay", "bootstrap")
#: parts started after the daemons when the config has their section (no default listen: they need ``listen``)
LATE_PARTS = ("sink",)
DEFAULT_LISTEN = {"collector": "127.0.0.1:7070", "agent": "127.0.0.1:7071", "relay": "127.0.0.1:7080",
                  "bootstrap": "127.0.0.1:7090"}  # fmt: skip
DEFAULT_STATUS_LISTEN = "127.0.0.1:7000"
EXIT_USAGE = 2
EXIT_LISTEN = 6  # a part's port is in use: said once, not retried at start


@dataclass
class RestartPolicy:
    """When a dead part restarts, and when ``up`` gives up (plain code: statuses and times in)."""

    max_restarts: int = 10
    window_seconds: float = 300.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    healthy_after: float = 60.0
    deaths: deque[float] = field(default_factory=deque)
    delay: float = 0.0

    def on_exit(self, status: int, now: float, up_since: float) -> tuple[str, float]:
        """``("restart", after_seconds)``, ``("usage", 0)`` (exit 2: stop everything, exit 2) or
        ``("crash_loop", 0)`` (too many deaths in the window: stop everything, exit 1)."""
        if status == EXIT_USAGE:
            return "usage", 0.0
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - self.window_seconds:
            self.deaths.popleft()
        if len(self.deaths) > self.max_restarts:
            return "crash_loop", 0.0
        if now - up_since >= self.healthy_after:
            self.delay = 0.0
        self.delay = self.first_delay if self.delay == 0 else min(self.delay * 2, self.max_delay)
        return "restart", self.delay


def default_config(base: Path) -> dict[str, Any]:
    """The embedded defaults of ``headrace up`` under ``base``."""
    app_db = base / "app.db"
    return {
        "collector": {"listen": DEFAULT_LISTEN["collector"], "sink_dir": str(base / "sink"), "roll_seconds": 60},
        "agent": {
            "collectors": [f"http://{DEFAULT_LISTEN['collector']}"],
            "listen": DEFAULT_LISTEN["agent"],
            "state_dir": str(base / "agent"),
            "sources": [{"path": str(base / "logs" / "*.log"), "data_type": "app"}],
        },
        "relay": {
            "listen": DEFAULT_LISTEN["relay"],
            "source": f"sqlite:///{app_db}",
            "state_dir": str(base / "relay"),
            "durable_consumers": ["bootstrap"],
        },
        "bootstrap": {
            "listen": DEFAULT_LISTEN["bootstrap"],
            "relays": [f"http://{DEFAULT_LISTEN['relay']}"],
            "store": f"sqlite:///{base / 'bootstrap.db'}",
            "seed": f"sqlite:///{app_db}",
        },
    }


def _set_parent_death_signal() -> None:
    """In the child: SIGTERM when ``up`` dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class _Part:
    name: str
    url: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    last_exit: int | None = None
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    def view(self) -> dict[str, Any]:
        """What the supervisor knows of this part (for the status page)."""
        running = self.proc is not None and self.proc.poll() is None
        state = "running" if running else ("restarting" if self.restart_at is not None else "stopped")
        if self.proc is None:
            state = "not started"
        return {"state": state, "pid": self.proc.pid if running and self.proc else None,
                "restarts": self.restarts, "last_exit": self.last_exit}  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=_set_parent_death_signal)
        self.started = time.monotonic()
        self.restart_at = None

    def stop(self, seconds: float) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            log.warning("part_killed", part=self.name, why=f"still running {seconds:g} s after SIGTERM")
            self.proc.kill()
            return self.proc.wait()


def _url(listen: str) -> str:
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def _wait_healthy(part: _Part, timeout: float, stop: threading.Event) -> str | None:
    """None once ``part`` answers ``/healthz`` (any status: it is serving); else why not."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        assert part.proc is not None
        if part.proc.poll() is not None:
            return f"exited with status {part.proc.returncode} while starting"
        try:
            httpx.get(part.url + "/healthz", timeout=2)
            return None
        except httpx.HTTPError:
            time.sleep(0.1)
    return f"did not answer {part.url}/healthz within {timeout:g} s"


def run_up(
    config: Path,
    sections: dict[str, Any],
    *,
    log_format: str = "json",
    stop_seconds: float = 45.0,
    start_timeout: float = 60.0,
    announce: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    status: StatusServer | None = None,
) -> int:
    """Start every part ``sections`` has, supervise them until ``stop`` is set; return the exit status.

    ``status`` (already bound) serves the status page from the start and is stopped at the end.
    """
    stop = stop or threading.Event()
    parts = [
        _Part(
            name,
            _url(str(sections[name].get("listen") or DEFAULT_LISTEN[name])),
            [sys.executable, "-m", "headrace", name, "--config", str(config), "--log-format", log_format],
        )
        for name in (*PARTS, *LATE_PARTS)
        if name in sections
    ]
    if not parts:
        announce(f"headrace up: {config} has no daemon section ({', '.join(PARTS)})")
        return EXIT_USAGE
    running: list[_Part] = []
    if status is not None:
        status.supervisor = lambda: {p.name: p.view() for p in parts}
        status.start()
        announce(f"{'status':<10} {status.url}")
    try:
        for part in parts:
            part.start()
            running.append(part)
            problem = _wait_healthy(part, start_timeout, stop)
            if problem is not None:
                announce(f"headrace up: {part.name} {problem}; stopping")
                code = part.proc.poll() if part.proc is not None else None
                return code if code in (EXIT_USAGE, EXIT_LISTEN) else 1
            announce(f"{part.name:<10} {part.url}")
        announce(f"headrace up: {len(parts)} parts running (config {config}); Ctrl-C or SIGTERM stops them")
        while not stop.wait(0.2):
            now = time.monotonic()
            for part in parts:
                assert part.proc is not None
                if part.restart_at is not None:
                    if now >= part.restart_at:
                        part.restarts += 1
                        log.info("part_restarting", part=part.name, restarts=part.restarts)
                        part.start()
                    continue
                code = part.proc.poll()
                if code is None:
                    continue
                part.last_exit = code
                action, delay = part.policy.on_exit(code, now, part.started)
                if action == "usage":
                    announce(f"headrace up: {part.name} exited with status 2 (configuration); stopping")
                    return EXIT_USAGE
                if action == "crash_loop":
                    announce(f"headrace up: {part.name} died {part.policy.max_restarts + 1} times; stopping")
                    return 1
                log.warning("part_died", part=part.name, status=code, restart_in_seconds=delay)
                part.restart_at = now + delay
        return 0
    finally:
        for part in reversed(running):
            part.stop(stop_seconds)
        if status is not None:
            status.stop()
        log.info("up_stopped")


@click.command()
@common_options
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="./headrace-data",
    show_default=True,
    help="Where the embedded defaults keep their data (without --config).",
)
@click.option(
    "--status-listen",
    default=None,
    metavar="HOST:PORT",
    help=f"Where to serve the status page of the whole ('off': nowhere). [default: {DEFAULT_STATUS_LISTEN}, "
    "skipped with a warning when that port is taken]",
)
def up(config_path: str | None, directory: str, status_listen: str | None) -> None:
    """Run every daemon the config has a section for (collector, agent, relay, bootstrap), supervised.

    Without --config: a collector, an agent tailing DIR/logs/*.log, a relay on DIR/app.db (SQLite)
    and a bootstrap server, with their data in DIR. The status page of the whole is served on
    --status-listen (GET /; GET /v1/overview is its data). Exit status: 0 after SIGTERM/SIGINT, 2 when
    a part's configuration is wrong, 1 when a part keeps dying, 6 when --status-listen cannot be bound.
    """
    if config_path is None:
        base = Path(directory).absolute()
        (base / "logs").mkdir(parents=True, exist_ok=True)
        sqlite3.connect(base / "app.db").close()  # the relay needs the file; tables come later
        sections = default_config(base)
        config = base / "headrace-up.yaml"
        config.write_text(yaml.safe_dump(sections, sort_keys=False))
        models: dict[str, Any] = {}
        if status_listen != "off":
            from ._check import check_config

            models = check_config(str(config))[1]
    else:
        from ._check import check_config

        findings, models = check_config(config_path)
        problems = [f for f in findings if not f.ok]
        for f in problems:
            click.echo(f"headrace up: {f.where}: {f.detail}", err=True)
        if problems:
            raise SystemExit(EXIT_USAGE)
        config = Path(config_path)
        sections = {name: {"listen": models[name].listen} for name in (*PARTS, *LATE_PARTS) if name in models}
        if "sink" in sections and not sections["sink"]["listen"]:
            click.echo("headrace up: sink.listen is needed to supervise the sink (its /healthz)", err=True)
            raise SystemExit(EXIT_USAGE)
    server = _status_server(status_listen, models)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    fmt = "json" if not sys.stderr.isatty() else "console"
    raise SystemExit(run_up(config, sections, log_format=fmt, stop=stop, announce=click.echo, status=server))


def _status_server(listen: str | None, models: dict[str, Any]) -> StatusServer | None:
    """The bound status server for ``--status-listen`` (None: off, or the default port is taken)."""
    from ._overview import read_grants, targets
    from ._up_status import StatusServer, insecure

    if listen == "off":
        return None
    grants = read_grants(models)
    problem = insecure(listen or DEFAULT_STATUS_LISTEN, grants)
    if problem is not None:
        click.echo(f"headrace up: {problem}", err=True)
        raise SystemExit(EXIT_USAGE)
    try:
        return StatusServer(listen or DEFAULT_STATUS_LISTEN, targets(models), grants, batch=models)
    except ListenError as exc:
        if listen is not None:  # asked for this address: say so and stop, as a daemon would
            click.echo(f"headrace up: {exc}", err=True)
            raise SystemExit(EXIT_LISTEN) from None
        click.echo(f"headrace up: no status page: {exc} (choose another with --status-listen)", err=True)
        return None
