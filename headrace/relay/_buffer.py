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

Reading is two steps so a response can be streamed without assembling it: :meth:`RingBuffer.plan`
decides which windows (after ``since``, up to ``max_bytes``, filtered) a response holds and how long
it is, keeping no reference to any window; :meth:`RingBuffer.pieces` then walks the same windows
again and yields the body in pieces of a bounded size, each copied from the windows' bytes just
before it is needed. Windows are immutable and SCN-ordered, so the walk yields exactly what the plan
measured, unless a window still to be sent is evicted meanwhile: then it raises
:class:`~headrace.errors.ScnTooOld` and the response must be cut short (the subscriber retries and is
told ``scn_too_old``).

The reading core is pure and knows no buffer: :func:`plan_windows` and :func:`read_windows` take any
SCN-ordered windows (the bootstrap server reads its log store's windows with them), and
:meth:`RingBuffer.plan` / :meth:`RingBuffer.read` are thin shells that add the horizon check.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import ScnTooOld
from ._codec import EncodedWindow
from ._event import peek_header, with_window_end
from ._filter import Filter

__all__ = ["WINDOW_OVERHEAD", "ReadPlan", "ReadResult", "RingBuffer", "TooOld", "plan_windows", "read_windows"]

#: Bytes charged per window for the objects around its data (window object, bytes header, index slot).
WINDOW_OVERHEAD = 320
#: A plan remembers the filter's verdicts for at most this many windows (≈ 8 bytes each, plus partial masks).
MAX_PLAN_MASKS = 65_536
_LEN = struct.Struct(">I")


#: The buffer's "``since`` is older than the horizon" is the one :class:`~headrace.errors.ScnTooOld`
#: (``since``, ``oldest_scn``); this name stays for code written against the buffer's own class.
TooOld = ScnTooOld


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Frames of whole windows after ``since`` (filtered), and how far the scan went."""

    data: bytes
    scn: int  # the SCN up to which the stream was scanned (a window end, or ``since``)
    windows: int
    events: int


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What a response after ``since`` holds (no window data: :meth:`RingBuffer.pieces` yields that)."""

    since: int
    scn: int  # the SCN up to which the stream is scanned (a window end, or ``since``)
    windows: int
    events: int
    length: int  # bytes of the body
    flt: Filter | None
    #: per window walked (in order, the first :data:`MAX_PLAN_MASKS`), which frames ``flt`` let through:
    #: bit i for frame i, -1 all, 0 none; spares :meth:`RingBuffer.pieces` parsing the headers again
    masks: tuple[int, ...] = ()


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
        self._epoch = 0  # moves whenever list indices shift (compaction, a gap): readers bisect again
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
            self._epoch += 1

    def _evict_all(self, scn: int) -> None:
        self.evicted_windows += len(self)
        self._wins.clear()
        self._scns.clear()
        self._head = 0
        self._epoch += 1
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
        """Whole windows after ``since``, up to ``max_bytes`` (at least one window if any matches), in one
        ``bytes``; :meth:`plan` + :meth:`pieces` serve the same without assembling it.

        Raises :class:`~headrace.errors.ScnTooOld` when ``since`` < :attr:`horizon`.
        """
        if since < self.horizon:
            raise ScnTooOld(since, self.horizon)
        return read_windows(self._wins[self._head + self.first_after(since) :], since, max_bytes, flt)

    def plan(self, since: int, max_bytes: int, flt: Filter | None = None) -> ReadPlan:
        """Which windows after ``since`` a response of up to ``max_bytes`` holds (at least one window if
        any matches), their count, events and length; no data is copied.

        Raises :class:`~headrace.errors.ScnTooOld` when ``since`` < :attr:`horizon`.
        """
        if since < self.horizon:
            raise ScnTooOld(since, self.horizon)
        return plan_windows(
            itertools.islice(self._wins, self._head + self.first_after(since), None), since, max_bytes, flt
        )

    def pieces(self, plan: ReadPlan, piece_bytes: int) -> Iterator[bytes]:
        """The body ``plan`` describes, in pieces of exactly ``piece_bytes`` (the last one shorter).

        Each piece is copied from the windows when it is asked for; between pieces the generator holds
        only the window it is in. Raises :class:`~headrace.errors.ScnTooOld` when a window still to be sent was evicted
        since the previous piece (the body is then incomplete and must not be completed).
        """
        if piece_bytes <= 0:
            raise ValueError("piece_bytes must be positive")
        out: list[bytes | memoryview] = []
        size = 0
        for w, part in self._walk(plan):
            if size + len(part) < piece_bytes:  # the common case: a whole part fits
                out.append(part)
                size += len(part)
                continue
            mv = memoryview(part)
            while mv:
                take = min(len(mv), piece_bytes - size)
                out.append(mv[:take])
                mv = mv[take:]
                size += take
                if size == piece_bytes:
                    yield b"".join(out)
                    out.clear()
                    size = 0
                    if self.horizon >= w.scn:  # evicted (or a gap) while the piece was being sent
                        raise ScnTooOld(w.scn, self.horizon)
        if out:
            yield b"".join(out)

    def _walk(self, plan: ReadPlan) -> Iterator[tuple[EncodedWindow, bytes | memoryview]]:
        """The windows ``plan`` covers, again, with the parts of each its filter lets through."""
        after = plan.since  # the last window walked in full
        epoch = -1
        i = walked = 0
        while after < plan.scn:
            if self.horizon > after:
                raise ScnTooOld(after, self.horizon)
            if epoch != self._epoch:
                i = self._head + self.first_after(after)
                epoch = self._epoch
            w = self._wins[i]
            i += 1
            for part in _parts(w, plan.flt, _mask(plan, walked)):
                yield w, part
            walked += 1
            after = w.scn


def plan_windows(windows: Iterable[EncodedWindow], since: int, max_bytes: int, flt: Filter | None = None) -> ReadPlan:
    """Which of ``windows`` (SCN order; those ≤ ``since`` are passed over) a response of up to
    ``max_bytes`` holds (at least one window if any matches), their count, events and length (pure)."""
    size = n = events = 0
    scanned = since
    masks: list[int] = []
    for w in windows:
        if w.scn <= since:
            continue
        if flt is None:
            length, count = len(w.data), w.count
        else:
            length, count, mask = _measure(w, flt)
        if count and size and size + length > max_bytes:
            break
        if flt is not None and len(masks) < MAX_PLAN_MASKS:
            masks.append(mask)
        if count:
            size += length
            n += 1
            events += count
        scanned = w.scn
        if size >= max_bytes:
            break
    return ReadPlan(since, max(scanned, since), n, events, size, flt, tuple(masks))


def read_windows(windows: Sequence[EncodedWindow], since: int, max_bytes: int, flt: Filter | None = None) -> ReadResult:
    """What :func:`plan_windows` plans, as one ``bytes`` of frames (the last matching frame of each
    window marked as its end); pure: the windows are not kept."""
    plan = plan_windows(windows, since, max_bytes, flt)
    parts: list[bytes | memoryview] = []
    walked = 0
    for w in windows:
        if w.scn <= since:
            continue
        if w.scn > plan.scn:
            break
        parts.extend(_parts(w, flt, _mask(plan, walked)))
        walked += 1
    return ReadResult(b"".join(parts), plan.scn, plan.windows, plan.events)


def _mask(plan: ReadPlan, walked: int) -> int | None:
    """The frame mask :func:`plan_windows` kept for the ``walked``-th window, if it kept one."""
    return plan.masks[walked] if walked < len(plan.masks) else None


def _measure(w: EncodedWindow, flt: Filter) -> tuple[int, int, int]:
    """Length, event count and frame mask (bit i: frame i; -1 all, 0 none) of window ``w`` after ``flt``.

    The window-end patch of the last frame keeps lengths, so the length is the matching frames' sum.
    """
    whole = flt.wants_tables(w.tables)
    if whole is True:
        return len(w.data), w.count, -1
    if whole is False:
        return 0, 0, 0
    data = w.data
    view = memoryview(data)
    off = size = count = mask = 0
    bit = 1
    while off < len(data):
        h = peek_header(view, off)
        if flt.matches(h):
            size += h.length
            count += 1
            mask |= bit
        off += h.length
        bit <<= 1
    return size, count, (-1 if count == w.count else mask)


def _parts(w: EncodedWindow, flt: Filter | None, mask: int | None) -> Iterator[bytes | memoryview]:
    """Window ``w`` after ``flt`` (``mask`` from :func:`_measure` if known): runs of matching frames as
    views, the last matching frame marked as the window end."""
    if flt is None or mask == -1:
        yield w.data
        return
    if mask is None:
        whole = flt.wants_tables(w.tables)
        if whole is True:
            yield w.data
            return
        if whole is False:
            return
    elif mask == 0:
        return
    data = w.data
    view = memoryview(data)
    run_start = run_end = last_start = -1  # the run of matching frames held back (it may hold the last one)
    off = 0
    bit = 1
    while off < len(data):
        if mask is None:
            h = peek_header(view, off)
            length, match = h.length, flt.matches(h)
        else:
            length, match = 4 + _LEN.unpack_from(view, off)[0], bool(mask & bit)
            bit <<= 1
        if match:
            if off != run_end:
                if run_start >= 0:
                    yield view[run_start:run_end]
                run_start = off
            last_start = off
            run_end = off + length
        off += length
    if run_start < 0:
        return
    if last_start > run_start:
        yield view[run_start:last_start]
    yield with_window_end(view[last_start:run_end])
