"""When to close the open sink file: the roll policy (sans-io; the clock is passed in)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RollPolicy"]


@dataclass(frozen=True, slots=True)
class RollPolicy:
    """Close a sink file once it holds ``roll_bytes`` or was opened ``roll_seconds`` ago.

    Age counts from the file's first write (an idle collector creates no empty files), on a
    monotonic clock. Size is checked after each group commit, so a file may exceed ``roll_bytes``
    by at most one commit's worth of data.
    """

    roll_bytes: int
    roll_seconds: float

    def due(self, size: int, opened_at: float | None, now: float) -> bool:
        """True if the file (``opened_at`` None: no open file) should be closed now."""
        if opened_at is None:
            return False
        return size >= self.roll_bytes or now - opened_at >= self.roll_seconds

    def deadline(self, opened_at: float | None) -> float | None:
        """The clock time when the open file rolls by age, or None without an open file."""
        return None if opened_at is None else opened_at + self.roll_seconds
