"""``headrace subscribe``'s progress through a bootstrap snapshot: rows read, the snapshot's SCN, the rate.

On a terminal (stderr is a TTY) a rich progress line on stderr, redrawn in place (log lines print
above it: see :mod:`headrace._logging`); otherwise a ``snapshot_progress`` log line at most every
``every`` seconds, one when the snapshot phase starts (``rows: 0``) and one when it ends (``done``).
The subscriber's callbacks drive it: :meth:`SnapshotProgress.phase` on each checkpoint (the rows of a
window count while the phase is ``snapshot``), :meth:`SnapshotProgress.rows` per window,
:meth:`SnapshotProgress.restart` when the snapshot starts over.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ..._logging import get_logger

__all__ = ["SnapshotProgress"]

log = get_logger("subscribe")


class SnapshotProgress:
    """Progress of one subscriber's snapshot phase (see the module docstring)."""

    def __init__(
        self, every: float = 5.0, live: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.live = sys.stderr.isatty() if live is None else live
        self.clock = clock
        self.in_snapshot = False
        self.rows_read = 0
        self.snapshot_scn: int | None = None
        self._started = 0.0
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None

    def phase(self, phase: str, snapshot_scn: int | None = None) -> None:
        """The subscriber is now in ``phase`` (``snapshot``, ``catchup``, ``relay``)."""
        if snapshot_scn is not None:
            self.snapshot_scn = snapshot_scn
        if phase == "snapshot" and not self.in_snapshot:
            self.in_snapshot = True
            self.rows_read = 0
            self._started = self._last_log = self.clock()
            self._show(force=True)
        elif phase != "snapshot" and self.in_snapshot:
            self.in_snapshot = False
            self._show(force=True, done=True)
            self.close()
        elif self.in_snapshot:
            self._show()

    def rows(self, n: int) -> None:
        """A window of ``n`` events was delivered (counted as rows while in the snapshot phase)."""
        if self.in_snapshot and n:
            self.rows_read += n
            self._show()

    def restart(self, reason: str) -> None:
        """The snapshot starts over: the count starts again from 0."""
        if self.in_snapshot:
            log.info("snapshot_restarted", reason=reason, rows_read_before=self.rows_read)
            self.rows_read = 0
            self._started = self.clock()

    def rate(self) -> float:
        seconds = self.clock() - self._started
        return self.rows_read / seconds if seconds > 0 else 0.0

    def close(self) -> None:
        """Take the progress line off the terminal (idempotent)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _show(self, force: bool = False, done: bool = False) -> None:
        if self.live:
            self._render(done)
            if not done:
                return
        now = self.clock()
        if not force and now - self._last_log < self.every:
            return
        self._last_log = now
        log.info(
            "snapshot_progress",
            rows=self.rows_read,
            snapshot_scn=self.snapshot_scn,
            rows_per_s=round(self.rate(), 1),
            seconds=round(now - self._started, 3),
            done=done,
        )

    def _render(self, done: bool) -> None:
        if self._bar is None and not done:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("snapshot: {task.fields[rows]} rows read at SCN {task.fields[scn]} ({task.fields[rate]}/s)"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("snapshot", total=None, rows=0, scn="?", rate="0")
        if self._bar is not None:
            scn = "?" if self.snapshot_scn is None else self.snapshot_scn
            self._bar.update(self._task, rows=f"{self.rows_read:,}", scn=scn, rate=f"{self.rate():,.0f}")
