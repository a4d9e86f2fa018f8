"""How far a seed has got: rows seeded per table, of an estimate when the database gives one, and the rate.

One :class:`SeedProgress` per bootstrap server; the seeding thread calls :meth:`SeedProgress.begin`,
:meth:`SeedProgress.add` for each page and :meth:`SeedProgress.end`; ``/v1/status`` (``seeding``) and
``/healthz`` read :meth:`SeedProgress.status` from other threads. A ``seed_progress`` log line goes out
at most every ``log_every`` seconds (not one per page), and a ``seed_progress`` line with ``done``
when the seed ends. Plain code: the clock is injected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._logging import get_logger

__all__ = ["SeedProgress"]

log = get_logger("bootstrap.seed")


class SeedProgress:
    """Progress of the seed in hand (see the module docstring); thread-safe."""

    def __init__(self, log_every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log_every = log_every
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._rows: dict[str, int] = {}
        self._estimates: dict[str, int | None] = {}
        self._started = 0.0
        self._last_log = 0.0
        self._table: str | None = None
        self._ended: float | None = None

    def begin(
        self, gen: int, reason: str, estimates: Mapping[str, int | None], resumed: Mapping[str, int] | None = None
    ) -> None:
        """A seed of generation ``gen`` starts (``estimates``: table → estimated rows, None when unknown)."""
        with self._lock:
            now = self.clock()
            self._state = {"gen": gen, "reason": reason, "done": False}
            self._estimates = dict(estimates)
            self._rows = {t: 0 for t in estimates} | dict(resumed or {})
            self._started = self._last_log = now
            self._table = None
            self._ended = None

    def add(self, table: str, rows: int) -> None:
        """``rows`` more rows of ``table`` are in the store; logs ``seed_progress`` when one is due."""
        with self._lock:
            if self._state is None:
                return
            self._rows[table] = self._rows.get(table, 0) + rows
            self._table = table
            now = self.clock()
            due = now - self._last_log >= self.log_every
            if due:
                self._last_log = now
                snap = self._snapshot(now)
        if due:
            log.info("seed_progress", **_log_fields(snap))

    def end(self, done: bool) -> None:
        """The seed finished (``done``) or stopped (abandoned, failed, the server stops)."""
        with self._lock:
            if self._state is None or self._ended is not None:
                return
            self._state["done"] = done
            self._state["stopped"] = not done
            self._ended = self.clock()
            self._table = None
            snap = self._snapshot(self._ended)
        if done:
            log.info("seed_progress", **_log_fields(snap))

    def status(self) -> dict[str, Any] | None:
        """``{gen, reason, done, table, rows, estimated_rows, tables: {t: {rows, estimated_rows}}, seconds,
        rows_per_s, eta_seconds}`` of the last seed, or None before any."""
        with self._lock:
            return None if self._state is None else self._snapshot(self.clock())

    def _snapshot(self, now: float) -> dict[str, Any]:
        assert self._state is not None
        rows = sum(self._rows.values())
        known = [e for e in self._estimates.values() if e is not None]
        estimate = sum(max(e or 0, self._rows.get(t, 0)) for t, e in self._estimates.items()) if known else None
        seconds = max((self._ended if self._ended is not None else now) - self._started, 0.0)
        rate = rows / seconds if seconds > 0 else 0.0
        eta = (estimate - rows) / rate if estimate is not None and rate > 0 and not self._state["done"] else None
        return {
            **self._state,
            "table": self._table,
            "rows": rows,
            "estimated_rows": estimate,
            "tables": {
                t: {"rows": self._rows.get(t, 0), "estimated_rows": self._estimates.get(t)}
                for t in sorted(set(self._rows) | set(self._estimates))
            },
            "seconds": round(seconds, 3),
            "rows_per_s": round(rate, 1),
            "eta_seconds": None if eta is None else round(max(eta, 0.0), 1),
        }


def _log_fields(snap: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "gen": snap["gen"],
        "table": snap["table"],
        "rows": snap["rows"],
        "estimated_rows": snap["estimated_rows"],
        "rows_per_s": snap["rows_per_s"],
        "eta_seconds": snap["eta_seconds"],
        "done": snap["done"],
        "tables": {t: v["rows"] for t, v in snap["tables"].items()},
    }
