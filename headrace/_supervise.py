"""Supervising a daemon's background workers: a dead thread is a dead daemon, never a silent one.

Every long-running thread of a daemon (the agent's reader and shipper, a forwarding collector's
pump, the bootstrap server's seeder, follower and applier …) runs under one :class:`Supervisor`.
When a worker ends while the daemon is not stopping — an exception escaping its loop, or its
function returning — the supervisor

* records it: ``/healthz`` answers 503 with ``reason`` naming the worker and the error (see
  :meth:`Supervisor.health`), the log has a ``worker_died`` line at level error (with the
  traceback), and ``headrace_worker_deaths_total{worker,kind}`` counts it;
* restarts it after a backoff (``backoff_seconds`` doubling up to ``max_backoff_seconds``),
  calling the worker's ``on_restart`` first (which rebuilds whatever in-memory state the death
  left unknown, from disk), counted in ``headrace_worker_restarts_total{worker}`` and logged as
  ``worker_restarted``;
* gives up after more than ``max_restarts`` deaths within ``window_seconds``: a worker whose rule
  is ``exit`` makes the daemon exit non-zero (:func:`request_exit`: a graceful SIGTERM, then
  :func:`headrace._http.run_app` raises :class:`~headrace.errors.FatalError`, so systemd or
  Kubernetes restarts the process and recovery from disk runs); one whose rule is ``degrade`` is
  left stopped and reported as degraded (``/healthz`` stays 200: the daemon still does its job
  without it, e.g. the agent's file-event watcher, whose work the periodic rescans also do).

A death by a full disk (``ENOSPC``/``EDQUOT`` anywhere in the exception chain) is not a crash: the
worker waits for space, is restarted every ``max(backoff)`` ≤ 5 s for as long as it takes, and such
deaths never count towards ``max_restarts`` (``kind="disk_full"``). ``/healthz`` stays 503 with
``disk full`` in the reason until the worker has run ``settle_seconds`` without dying.

A restarted worker counts as healthy again only after it ran ``settle_seconds`` without dying, so
a worker dying at once after every restart never shows green between deaths.

Threads a daemon does not own (watchdog's observer) are watched with :meth:`Supervisor.watch`: a
monitor thread looks at ``alive()`` and restarts them the same way. It polls every ``check_seconds``
unless every watched thread announces its end (``notifies=True``: the thread calls
:meth:`Supervisor.poke` as it ends); then it sleeps until poked or a restart is due, so an idle
daemon has no timer here.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from pydantic import Field

from ._config import Section
from ._logging import get_logger

__all__ = [
    "Supervisor",
    "SupervisorConfig",
    "exit_requested",
    "is_disk_full",
    "request_exit",
]

log = get_logger("supervise")

DEATHS = Counter(
    "headrace_worker_deaths_total", "Background workers that ended unexpectedly, by kind", ["worker", "kind"]
)
RESTARTS = Counter("headrace_worker_restarts_total", "Background workers restarted by the supervisor", ["worker"])
UP = Gauge("headrace_worker_up", "1 while a background worker runs and is settled, else 0", ["worker"])

OnExhausted = Literal["exit", "degrade"]
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_MAX_BACKOFF = 5.0


class SupervisorConfig(Section):
    """How a daemon's background workers are restarted (the ``supervise:`` key of each daemon's section)."""

    max_restarts: int = Field(
        default=5, ge=0, description="deaths (not counting a full disk) allowed in window_seconds; one more gives up"
    )
    window_seconds: float = Field(default=300.0, gt=0)
    backoff_seconds: float = Field(default=1.0, gt=0, description="first wait before a restart; doubles")
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    settle_seconds: float = Field(
        default=5.0, ge=0, description="a restarted worker is healthy again after running this long"
    )


_exit_reason: str | None = None
_exit_lock = threading.Lock()


def request_exit(reason: str) -> None:
    """Make the daemon shut down gracefully and exit non-zero with ``reason`` (first reason wins)."""
    global _exit_reason
    with _exit_lock:
        first = _exit_reason is None
        if first:
            _exit_reason = reason
    if first:
        log.critical("daemon_exiting", reason=reason)
        os.kill(os.getpid(), signal.SIGTERM)


def exit_requested() -> str | None:
    """The reason given to :func:`request_exit`, if the daemon is exiting because of a worker."""
    return _exit_reason


def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` or anything in its cause/context chain is an ``ENOSPC``/``EDQUOT`` :class:`OSError`."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "returned while the daemon was running"
    text = f"{type(exc).__name__}: {exc}"
    return ("disk full: " + text) if is_disk_full(exc) else text


@dataclass
class _Worker:
    name: str
    on_exhausted: OnExhausted
    on_restart: Callable[[], None] | None
    state: str = "starting"  # running | restarting | dead | degraded | stopped
    error: str | None = None  # why it last died
    disk_full: bool = False
    started_at: float = 0.0
    restarts: int = 0
    consecutive: int = 0  # deaths since it last settled
    deaths: deque[float] = field(default_factory=deque)  # crash times within the window
    thread: threading.Thread | None = None
    # watched (not owned) workers
    alive: Callable[[], bool] | None = None
    restart: Callable[[], None] | None = None
    next_attempt: float = 0.0
    notifies: bool = False  # a watched thread that calls Supervisor.poke as it ends


class Supervisor:
    """Runs and watches one daemon's background workers; see the module docstring."""

    def __init__(
        self,
        daemon: str,
        config: SupervisorConfig | None = None,
        *,
        on_fatal: Callable[[str], None] = request_exit,
        clock: Callable[[], float] = time.monotonic,
        check_seconds: float = 0.5,
    ) -> None:
        self.daemon = daemon
        self.config = config or SupervisorConfig()
        self.on_fatal = on_fatal
        self.clock = clock
        self.check_seconds = check_seconds
        self.failed: str | None = None
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._poked = threading.Event()
        self._monitor: threading.Thread | None = None

    # -- registering ------------------------------------------------------------------------------

    def run(
        self,
        name: str,
        target: Callable[[], None],
        *,
        on_restart: Callable[[], None] | None = None,
        on_exhausted: OnExhausted = "exit",
    ) -> threading.Thread:
        """Start ``target`` in a supervised thread named ``name`` (restarted in that thread when it dies)."""
        w = _Worker(name, on_exhausted, on_restart)
        with self._lock:
            self._workers[name] = w
        t = threading.Thread(target=self._loop, args=(w, target), name=name, daemon=True)
        w.thread = t
        t.start()
        return t

    def watch(
        self,
        name: str,
        alive: Callable[[], bool],
        restart: Callable[[], None],
        *,
        on_exhausted: OnExhausted = "degrade",
        notifies: bool = False,
    ) -> None:
        """Watch a thread started elsewhere: when ``alive()`` turns false, call ``restart()`` (with backoff).

        ``notifies``: the thread calls :meth:`poke` when it ends (then it is not polled).
        """
        w = _Worker(
            name,
            on_exhausted,
            None,
            state="running",
            started_at=self.clock(),
            alive=alive,
            restart=restart,
            notifies=notifies,
        )
        with self._lock:
            self._workers[name] = w
        UP.labels(name).set(1)
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name=f"{self.daemon}-supervisor", daemon=True)
            self._monitor.start()

    def stop(self) -> None:
        """The daemon is stopping: workers that end from now on are not deaths, and nothing is restarted."""
        self._stopping.set()
        self._poked.set()

    def poke(self) -> None:
        """A watched thread ended (or may have): look at the watched threads now."""
        self._poked.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the owned-thread loop --------------------------------------------------------------------

    def _loop(self, w: _Worker, target: Callable[[], None]) -> None:
        while True:
            w.started_at = self.clock()
            w.state = "running"
            UP.labels(w.name).set(1 if w.error is None else 0)
            err: BaseException | None = None
            try:
                target()
            except BaseException as exc:  # every way out of the loop is reported
                err = exc
            if self._stopping.is_set():
                w.state = "stopped"
                if err is not None:
                    log.warning("worker_error_while_stopping", worker=w.name, error=_describe(err))
                return
            delay = self._died(w, err)
            while True:  # wait, rebuild (a failed rebuild is another death), then run again
                if delay is None:
                    return
                if self._stopping.wait(delay):
                    w.state = "stopped"
                    return
                if w.on_restart is not None:
                    try:
                        w.on_restart()
                    except Exception as exc:
                        log.error("worker_restart_failed", worker=w.name, error=_describe(exc), exc_info=exc)
                        delay = self._died(w, exc)
                        continue
                break
            self._restarted(w)

    def _died(self, w: _Worker, err: BaseException | None, why: str | None = None) -> float | None:
        """Record a death; the backoff before the restart, or None if the supervisor gave up."""
        now = self.clock()
        cfg = self.config
        if w.error is None or now - w.started_at >= cfg.settle_seconds:
            w.consecutive = 0
        w.consecutive += 1
        w.error = why or _describe(err)
        w.disk_full = is_disk_full(err)
        kind = "disk_full" if w.disk_full else "crash"
        DEATHS.labels(w.name, kind).inc()
        UP.labels(w.name).set(0)
        if w.disk_full:
            log.error("worker_died", daemon=self.daemon, worker=w.name, kind=kind, error=w.error)
            w.state = "restarting"
            return min(self._backoff(w), _DISK_FULL_MAX_BACKOFF)
        log.error("worker_died", daemon=self.daemon, worker=w.name, kind=kind, error=w.error, exc_info=err)
        w.deaths.append(now)
        while w.deaths and now - w.deaths[0] > cfg.window_seconds:
            w.deaths.popleft()
        if len(w.deaths) > cfg.max_restarts:
            self._give_up(w)
            return None
        w.state = "restarting"
        return self._backoff(w)

    def _backoff(self, w: _Worker) -> float:
        cfg = self.config
        return float(min(cfg.backoff_seconds * 2.0 ** min(w.consecutive - 1, 30), cfg.max_backoff_seconds))

    def _restarted(self, w: _Worker) -> None:
        w.restarts += 1
        RESTARTS.labels(w.name).inc()
        log.warning("worker_restarted", daemon=self.daemon, worker=w.name, restarts=w.restarts, after=w.error)

    def _give_up(self, w: _Worker) -> None:
        limit = f"{self.config.max_restarts} restarts in {self.config.window_seconds:g} s"
        if w.on_exhausted == "degrade":
            w.state = "degraded"
            log.error("worker_given_up", daemon=self.daemon, worker=w.name, error=w.error, limit=limit)
            return
        w.state = "dead"
        reason = f"{w.name} died more than {limit}; last: {w.error}"
        self.failed = reason
        log.critical("worker_given_up", daemon=self.daemon, worker=w.name, error=w.error, limit=limit)
        self.on_fatal(reason)

    # -- watched threads --------------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        while not self._stopping.is_set():
            self._poked.wait(self._next_check())
            self._poked.clear()
            if self._stopping.is_set():
                return
            self.check()

    def _next_check(self) -> float | None:
        """Seconds until the monitor must look again (None: only when poked)."""
        with self._lock:
            watched = [w for w in self._workers.values() if w.alive is not None]
        due: float | None = None
        for w in watched:
            if w.state == "restarting":
                wait = max(0.0, w.next_attempt - self.clock())
            elif w.state == "running" and not w.notifies:
                wait = self.check_seconds
            else:
                continue
            due = wait if due is None else min(due, wait)
        return due

    def check(self) -> None:
        """Look at every watched thread once (the monitor thread calls this every ``check_seconds``)."""
        with self._lock:
            watched = [w for w in self._workers.values() if w.alive is not None]
        for w in watched:
            if self._stopping.is_set():
                return
            try:
                if w.state == "running" and not w.alive():  # type: ignore[misc]
                    delay = self._died(w, None, "thread not running")
                    if delay is not None:
                        w.next_attempt = self.clock() + delay
                elif w.state == "restarting" and self.clock() >= w.next_attempt:
                    w.restart()  # type: ignore[misc]
                    w.started_at = self.clock()
                    w.state = "running"
                    self._restarted(w)
            except Exception as exc:  # a failed restart is another death
                delay = self._died(w, exc)
                if delay is not None:
                    w.next_attempt = self.clock() + delay

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{"ok": …, "reason": …, "workers": {name: {…}}}`` for ``/healthz`` (ok is False if any worker is down)."""
        now = self.clock()
        problems: list[str] = []
        degraded: list[str] = []
        workers: dict[str, Any] = {}
        with self._lock:
            items = list(self._workers.values())
        for w in items:
            state = w.state
            if state == "running" and w.thread is not None and not w.thread.is_alive() and not self.stopping:
                state, w.error = "dead", w.error or "thread not running"
            settled = state == "running" and (w.error is None or now - w.started_at >= self.config.settle_seconds)
            if state == "running" and not settled:
                state = "recovering"
            if settled:
                UP.labels(w.name).set(1)
            workers[w.name] = {"state": state, "restarts": w.restarts, "last_error": w.error}
            if state in ("restarting", "recovering", "dead"):
                problems.append(f"{w.name} {state}: {w.error}")
            elif state == "degraded":
                degraded.append(f"{w.name}: {w.error}")
        out: dict[str, Any] = {"ok": not problems, "workers": workers}
        if problems:
            out["reason"] = "; ".join(problems)
        if degraded:
            out["degraded"] = "; ".join(degraded)
        return out
