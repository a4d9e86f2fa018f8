"""``headrace demo``: run what headrace has on embedded defaults, in a temporary directory.

The log path: a collector and an agent as real processes; the agent tails three generated log files
(one of them rotated by rename half way), and the demo waits until the agent reports every byte
acked, stops both daemons cleanly, and counts the lines in the closed sink files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import fastavro
import httpx
import yaml
from rich.console import Console
from rich.table import Table

from .errors import FatalError

__all__ = ["demo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "headrace", *args, "--log-format", "json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FatalError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise FatalError(f"{self.name} did not answer {url} within {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STREAMS = ("web", "app", "db")


def _write_lines(logs: Path, lines: int, first: int = 0, rotate_at: int = -1) -> dict[str, int]:
    """Append lines ``first``..``lines`` over three files, rotating ``web.log`` by rename at ``rotate_at``."""
    per_stream: Counter[str] = Counter()
    files = {name: (logs / f"{name}.log").open("a") for name in STREAMS}
    try:
        for i in range(first, lines):
            name = STREAMS[i % 3]
            files[name].write(f"{time.time():.6f} {name} line {i} of the headrace demo\n")
            per_stream[name] += 1
            if i == rotate_at:
                files["web"].close()
                os.rename(logs / "web.log", logs / "web.log.1")
                files["web"] = (logs / "web.log").open("a")
    finally:
        for f in files.values():
            f.close()
    return dict(per_stream)


def _agent_status(port: int) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=5).json()
    return status


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise FatalError(f"timed out after {timeout:.0f} s waiting for {what}")


def _count_sink_lines(done: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in sorted(done.glob("*.avro")):
        with path.open("rb") as f:
            for rec in fastavro.reader(f):
                assert isinstance(rec, dict)
                found[Path(str(rec["stream"])).name.split(".")[0]] += bytes(rec["data"]).count(b"\n")
    return found


def _run_log_path(base: Path, lines: int, console: Console) -> bool:
    logs = base / "logs"
    logs.mkdir(parents=True)
    cport, aport = _free_port(), _free_port()
    config = {
        "collector": {"listen": f"127.0.0.1:{cport}", "sink_dir": str(base / "sink"), "roll_seconds": 5},
        "agent": {
            "name": "demo-host",
            "collectors": [f"http://127.0.0.1:{cport}"],
            "state_dir": str(base / "agent"),
            "listen": f"127.0.0.1:{aport}",
            "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
        },
    }
    cfg_path = base / "headrace.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    console.print(f"[bold]log path[/]: config {cfg_path}")
    collector = _Proc("collector", ["collector", "--config", str(cfg_path)], base)
    agent: _Proc | None = None
    try:
        collector.wait_http(f"http://127.0.0.1:{cport}/healthz")
        agent = _Proc("agent", ["agent", "--config", str(cfg_path)], base)
        agent.wait_http(f"http://127.0.0.1:{aport}/healthz")
        # Start the three files and let the agent find them, as it would find long-lived logs.
        written = Counter(_write_lines(logs, len(STREAMS)))
        _wait(lambda: len(_agent_status(aport)["streams"]) == len(STREAMS), 30, "the agent to find the files")
        written.update(_write_lines(logs, lines, first=len(STREAMS), rotate_at=lines // 2))
        total_bytes = sum(p.stat().st_size for p in logs.iterdir())

        def all_acked() -> bool:
            streams = _agent_status(aport)["streams"]
            return bool(sum(s["acked_offset"] for s in streams) >= total_bytes)

        _wait(all_acked, 60, "the collector to acknowledge every byte")
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()
    found = _count_sink_lines(base / "sink" / "done")
    table = Table(title=f"{sum(written.values())} lines written → {base / 'sink' / 'done'}")
    for col in ("stream", "written", "in sink files"):
        table.add_column(col)
    for name in sorted(written):
        table.add_row(name, str(written[name]), str(found[name]))
    console.print(table)
    return found == written


@click.command()
@click.option("--lines", default=5000, show_default=True, help="How many log lines to generate.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to run (default: a new temporary directory, kept afterwards).",
)
def demo(lines: int, directory: str | None) -> None:
    """Run a collector and an agent on embedded defaults and show where every line landed."""
    console = Console(stderr=False)
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        ok = _run_log_path(base, lines, console)
    except FatalError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        sys.exit(1)
    console.print(f"files, configs and daemon logs are in {base}")
    if not ok:
        console.print("[red]some lines are missing or duplicated[/]")
        sys.exit(1)
    console.print("[green]every line arrived exactly once[/]")
