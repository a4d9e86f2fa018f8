"""How far a source may let its database discard log when no durable consumer is configured (sans-io).

With a bootstrap server, the relay passes the bootstrap store's applied SCN to
``ChangeSource.acknowledge`` and the source confirms exactly that. Without one
(``acknowledge(None)``), a PostgreSQL slot or a MySQL saved position trails what the relay has read
by ``retention_seconds``: a restarted relay re-reads that much history into its buffer, so subscribers
that were up to date when it stopped resume without ``scn_too_old``. :class:`ReadMarks` remembers
at most one (time, SCN) pair per second of reading, so its memory is bounded by
``retention_seconds``, not by the transaction rate.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ReadMarks"]


class ReadMarks:
    """(read time, SCN) marks; :meth:`durable` is the newest SCN read at least ``retention_seconds`` ago."""

    def __init__(self, retention_seconds: float) -> None:
        self.retention_seconds = retention_seconds
        self._marks: deque[tuple[float, int]] = deque()

    def read(self, now: float, scn: int) -> None:
        """A window with ``scn`` was read at ``now`` (monotonic seconds)."""
        if self._marks and now - self._marks[-1][0] < 1.0:
            self._marks[-1] = (self._marks[-1][0], scn)
        else:
            self._marks.append((now, scn))

    def durable(self, now: float) -> int | None:
        """Pop and return the newest SCN that is old enough, or None if there is none."""
        out = None
        horizon = now - self.retention_seconds
        while self._marks and self._marks[0][0] <= horizon:
            out = self._marks.popleft()[1]
        return out
