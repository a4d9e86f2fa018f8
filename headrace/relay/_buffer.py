"""The relay's ring buffer of encoded windows, bounded by bytes (sans-io, single-threaded).

Theory of operation: windows are appended in SCN order. The buffer holds whole windows only; when
adding one would pass ``capacity`` bytes, the oldest whole windows are evicted first. A window that
alone is larger than the whole buffer is not kept: it becomes a gap (everything older is evicted
too), and subscribers behind it are told ``scn_too_old``.

``horizon`` is the SCN after which the buffer can serve without a gap: a ``since`` ≥ ``horizon``
is served, an older one is too old. It starts at the source's start SCN and moves to each evicted
window's SCN.

The SCN index is a plain list of window SCNs with a moving head, so finding the first window after
any SCN is a bisection, O(log n); the list is compacted once half of it is evicted.

Accounting counts each window's bytes plus :data:`WINDOW_OVERHEAD` for its Python objects, so the
memory the buffer holds stays within its bound.
"""

from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass

from ._codec import EncodedWindow
from ._event import peek_header, with_window_end
from ._filter import Filter

__all__ = ["WINDOW_OVERHEAD", "ReadResult", "RingBuffer", "TooOld"]

#: Bytes charged per window for the objects around its data (window object, bytes header, index slot).
WINDOW_OVERHEAD = 320


class TooOld(Exception):
    """``since`` is older than the buffer's horizon."""

    def __init__(self, since: int, oldest_scn: int) -> None:
        self.since = since
        self.oldest_scn = oldest_scn
        super().__init__(f"SCN {since} is older than the buffer's oldest {oldest_scn}")


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Frames of whole windows after ``since`` (filtered), and how far the scan went."""

    data: bytes
    scn: int  # the SCN up to which the stream was scanned (a window end, or ``since``)
    windows: int
    events: int


class RingBuffer:
    """Whole windows in SCN order within ``capacity`` bytes."""

    def __init__(self, capacity: int, start_scn: int = 0) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.horizon = start_scn
        self._wins: list[EncodedWindow] = []
        self._scns: list[int] = []
        self._head = 0
        self.bytes = 0
        self.events = 0
        self.evicted_windows = 0

    def __len__(self) -> int:
        return len(self._wins) - self._head

    @property
    def newest_scn(self) -> int:
        return self._scns[-1] if len(self) else self.horizon

    @property
    def oldest_scn(self) -> int:
        """The oldest ``since`` the buffer can serve (its horizon)."""
        return self.horizon

    @staticmethod
    def cost(w: EncodedWindow) -> int:
        return len(w.data) + WINDOW_OVERHEAD

    def append(self, w: EncodedWindow) -> int:
        """Add a window (SCN above the newest); returns how many windows were evicted for it."""
        if w.scn <= self.newest_scn:
            raise ValueError(f"window SCN {w.scn} is not above the newest {self.newest_scn}")
        cost = self.cost(w)
        if cost > self.capacity or not w.data:
            n = len(self)
            self._evict_all(w.scn)
            return n
        evicted = 0
        while self.bytes + cost > self.capacity and len(self):
            self._evict_one()
            evicted += 1
        self._wins.append(w)
        self._scns.append(w.scn)
        self.bytes += cost
        self.events += w.count
        return evicted

    def _evict_one(self) -> None:
        w = self._wins[self._head]
        self._wins[self._head] = None  # type: ignore[call-overload]  # free the data now
        self._head += 1
        self.bytes -= self.cost(w)
        self.events -= w.count
        self.horizon = w.scn
        self.evicted_windows += 1
        if self._head > 1024 and self._head * 2 > len(self._wins):
            del self._wins[: self._head]
            del self._scns[: self._head]
            self._head = 0

    def _evict_all(self, scn: int) -> None:
        self.evicted_windows += len(self)
        self._wins.clear()
        self._scns.clear()
        self._head = 0
        self.bytes = 0
        self.events = 0
        self.horizon = scn

    def measured_bytes(self) -> int:
        """Memory actually held, by ``sys.getsizeof`` of every live object (O(n); for checks, not hot paths)."""
        total = sys.getsizeof(self._wins) + sys.getsizeof(self._scns)
        shared: dict[int, int] = {}
        for w in self._wins[self._head :]:
            total += sys.getsizeof(w) + sys.getsizeof(w.data)
            total += sys.getsizeof(w.scn) + sys.getsizeof(w.first_scn) + sys.getsizeof(w.ts_ms)
            shared[id(w.tables)] = sys.getsizeof(w.tables)
        return total + sum(shared.values())

    def first_after(self, since: int) -> int:
        """Index (into the live windows) of the first window with SCN > ``since``; O(log n)."""
        return bisect.bisect_right(self._scns, since, lo=self._head) - self._head

    def read(self, since: int, max_bytes: int, flt: Filter | None = None) -> ReadResult:
        """Whole windows after ``since``, up to ``max_bytes`` (at least one window if any matches).

        Raises :class:`TooOld` when ``since`` < :attr:`horizon`.
        """
        if since < self.horizon:
            raise TooOld(since, self.horizon)
        i = self._head + self.first_after(since)
        parts: list[bytes] = []
        size = windows = events = 0
        scanned = since
        n = len(self._wins)
        while i < n:
            w = self._wins[i]
            if flt is None:
                chunk, count = w.data, w.count
            else:
                chunk, count = _filtered(w, flt)
            if count and size and size + len(chunk) > max_bytes:
                break
            if count:
                parts.append(chunk)
                size += len(chunk)
                windows += 1
                events += count
            scanned = w.scn
            i += 1
            if size >= max_bytes:
                break
        return ReadResult(b"".join(parts), max(scanned, since), windows, events)


def _filtered(w: EncodedWindow, flt: Filter) -> tuple[bytes, int]:
    whole = flt.wants_tables(w.tables)
    if whole is True:
        return w.data, w.count
    if whole is False:
        return b"", 0
    data = w.data
    view = memoryview(data)
    spans: list[tuple[int, int]] = []
    off = 0
    while off < len(data):
        h = peek_header(view, off)
        if flt.matches(h):
            spans.append((off, off + h.length))
        off += h.length
    if not spans:
        return b"", 0
    if len(spans) == w.count:
        return data, w.count
    last_start, last_end = spans[-1]
    out = [data[a:b] for a, b in spans[:-1]]
    out.append(with_window_end(view[last_start:last_end]))
    return b"".join(out), len(spans)
