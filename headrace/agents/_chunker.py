"""Record boundaries: which bytes read from a file are whole records and may be shipped (sans-io).

Theory of operation. Bytes arrive in blocks (:meth:`Chunker.feed`); the chunker returns the longest
prefix of everything fed so far that ends on a record boundary, and holds the rest:

* line mode (no ``multiline_start``): a record ends with ``\\n``; the unterminated tail is held;
* multiline mode: a record starts at a line matching ``multiline_start`` (a regex matched at the
  start of a line, e.g. ``\\d{4}-\\d\\d-\\d\\d `` for timestamped lines whose stack traces follow
  on unmatched lines) and runs until the next such line. The last record is held even when its line
  is complete, because a continuation line may still follow. Lines before the first start line
  form one record of their own.

The shell calls :meth:`Chunker.flush` to release the held tail as a record when the file stopped
growing for the configured timeout, or when the file is finished (rotated away, deleted,
truncated). A held tail that grows past ``max_record_bytes`` is released as is (a record split
rather than unbounded memory). Nothing here knows about files, clocks or sockets.
"""

from __future__ import annotations

import re

__all__ = ["Chunker"]


class Chunker:
    """Splits a byte stream at record boundaries. One instance per file being read."""

    def __init__(self, multiline_start: str | None = None, max_record_bytes: int = 4 << 20) -> None:
        self._start = re.compile(multiline_start.encode()) if multiline_start else None
        self.max_record_bytes = max_record_bytes
        self._pending = b""

    @property
    def pending(self) -> int:
        """Bytes held back (an unterminated line or the last multiline record)."""
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        """Add ``data``; return the complete records now available (possibly ``b""``)."""
        buf = self._pending + data if self._pending else data
        cut = buf.rfind(b"\n") + 1  # end of the last complete line
        if self._start is not None and cut:
            cut = self._last_record_start(buf, cut)
        if len(buf) - cut > self.max_record_bytes:
            cut = len(buf)
        self._pending = buf[cut:]
        return buf[:cut]

    def _last_record_start(self, buf: bytes, end: int) -> int:
        """Offset of the last line in ``buf[:end]`` that starts a record (0 if none after offset 0)."""
        assert self._start is not None
        line_end = end - 1  # the newline ending the last complete line
        while line_end > 0:
            line_start = buf.rfind(b"\n", 0, line_end) + 1
            if line_start == 0:
                return 0
            if self._start.match(buf, line_start):
                return line_start
            line_end = line_start - 1
        return 0

    def flush(self) -> bytes:
        """Release the held tail as a record (the file stopped growing or is finished)."""
        out, self._pending = self._pending, b""
        return out

    def reset(self) -> None:
        """Forget the held tail without returning it."""
        self._pending = b""
