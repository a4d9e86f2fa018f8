"""Bootstrap sessions in progress, so compaction keeps the log they still need (sans-io; clock injected).

A subscriber in its snapshot phase will catch up from its ``snapshot_scn``; one in catch-up reads
from its ``since``. Each request records that SCN under the subscriber's id. Compaction never
removes log windows above the lowest SCN of a session seen within ``timeout`` seconds. Sessions
live in memory only: for ``timeout`` seconds after a (re)start nothing is compacted, so sessions
that were running before the restart can report again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Sessions"]


class Sessions:
    """Lowest SCN still needed by each recently seen bootstrap session."""

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self.timeout = timeout
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float]] = {}

    def touch(self, subscriber: str, scn: int) -> None:
        with self._lock:
            self._seen[subscriber] = (scn, self.clock())

    def keep_from(self) -> int | None:
        """Compaction must keep windows above this SCN (0 while just started); None: no constraint."""
        now = self.clock()
        if now - self.started < self.timeout:
            return 0
        with self._lock:
            for k in [k for k, (_, t) in self._seen.items() if now - t > self.timeout]:
                del self._seen[k]
            return min((scn for scn, _ in self._seen.values()), default=None)

    def count(self) -> int:
        with self._lock:
            return len(self._seen)
