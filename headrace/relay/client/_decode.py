"""Decoded events for applications: typed values, optional reader schemas (sans-io).

:class:`EventDecoder` turns wire :class:`~headrace.relay._event.Event` objects into
:class:`ChangeEvent` with Python values, fetching each writer schema once through a callable
(the subscriber asks the relay's ``/v1/schemas/{fingerprint}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zlib import crc32 as _crc32

from ..._frozen import fast_constructor
from ..._gcpause import gc_paused
from ...errors import InvalidInput
from .._codec import RowCodec
from .._event import (
    _CRC_UNPACK,
    _FIXED,
    _HEAD_SIZE,
    _HEAD_UNPACK,
    _OPS,
    _SOURCE_STR,
    Event,
    EventFields,
    Op,
    _unpack_head,
    decode_key,
    frame_fields,
)
from .._schema import UNCHANGED_MARKER, UNREPRESENTABLE_MARKER, SchemaVersion

__all__ = ["ChangeEvent", "EventDecoder", "Window"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change with decoded, typed values.

    ``op`` is :attr:`Op.TRUNCATE <headrace.relay.Op.TRUNCATE>` when every row of ``table`` was deleted
    (``TRUNCATE``): then ``key`` is ``[]`` and ``before``/``after`` are None; a consumer keeping a copy
    empties that table, in the window's order.

    ``before`` and ``after`` hold the table's columns only. What the relay says about their values
    travels beside them: ``unchanged`` (PostgreSQL: columns whose TOASTed value this UPDATE left as it
    was and did not send; they are None in ``after``, and a copy keeps its old value) and
    ``unrepresentable`` (columns the relay set to None because it could not represent their value,
    under ``on_unrepresentable: null_with_marker``).
    """

    scn: int
    table: str
    op: Op
    key: list[Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ts_ms: int
    window_end: bool
    fingerprint: str
    schema_version: int
    #: the first event of a table in a schema other than the one this decoder saw for it last: the
    #: table's columns changed (compare ``schema_version``); never set on a table's first event
    schema_changed: bool = False
    #: columns of ``after`` not sent because their TOASTed value was left unchanged (keep the old value)
    unchanged: tuple[str, ...] = ()
    #: columns of ``before``/``after`` set to None because the relay could not represent their value
    unrepresentable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """The events of one source transaction (or several consecutive ones), in order."""

    scn: int
    events: list[ChangeEvent]


class _Table:
    """What decoding needs of one writer schema, looked up once per frame by its fingerprint bytes."""

    __slots__ = ("codec", "fingerprint", "markers", "read", "read_at", "version")

    def __init__(self, fingerprint: str, codec: RowCodec) -> None:
        self.fingerprint = fingerprint
        self.codec = codec
        self.version = codec.version.version
        self.markers = bool(codec.markers)
        self.read = codec.decode
        at = codec.reader_at()
        self.read_at: Callable[[bytes, int, int], dict[str, Any]] = at if at is not None else self._slice_read

    def _slice_read(self, buf: bytes, start: int, end: int) -> dict[str, Any]:
        return self.read(buf[start:end])


class EventDecoder:
    """Decode events, fetching and caching writer schemas by fingerprint.

    Every method gives the same :class:`ChangeEvent` values (and raises the same errors) as decoding
    the body's frames into :class:`Event` objects and those one by one with :meth:`decode`; they
    share one state (the codecs, and the schema each table was last seen in, for
    ``schema_changed``), so a subscriber may mix them. The fastest is :meth:`decode_body` (a whole
    response body, frames decoded in place: no :class:`Event`, no payload copies).

    Rows are decoded eagerly: a :class:`ChangeEvent` stays a plain frozen dataclass whose ``before``
    and ``after`` are dicts (equal-comparing, picklable, safe to hand to another thread), rather than
    a lazy view that would decode on first access.
    """

    def __init__(
        self,
        fetch_schema: Callable[[str], SchemaVersion],
        reader_schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.fetch_schema = fetch_schema
        self.reader_schemas = dict(reader_schemas or {})
        self._codecs: dict[str, RowCodec] = {}
        self._last_fp: dict[str, str] = {}
        self._tables: dict[bytes, _Table] = {}  # by the 8 fingerprint bytes a frame header carries
        self._by_hex: dict[str, _Table] = {}  # by fingerprint (hex), as events carry it

    def codec(self, fingerprint: str, table: str) -> RowCodec:
        c = self._codecs.get(fingerprint)
        if c is None:
            sv = self.fetch_schema(fingerprint)
            c = self._codecs[fingerprint] = RowCodec(sv, self.reader_schemas.get(table))
        return c

    def _table(self, fp: bytes, source: str) -> _Table:
        t = self._tables[fp] = self._table_hex(fp.hex(), source)
        return t

    def _table_hex(self, fingerprint: str, source: str) -> _Table:
        t = self._by_hex.get(fingerprint)
        if t is None:
            t = self._by_hex[fingerprint] = _Table(fingerprint, self.codec(fingerprint, source))
        return t

    def decode(self, e: Event) -> ChangeEvent:
        """One wire event as a :class:`ChangeEvent` (fetching its writer schema the first time)."""
        return self.decode_many((e,))[0]

    def decode_many(self, events: Iterable[Event]) -> list[ChangeEvent]:
        """:meth:`decode` of each event, in order."""
        out: list[ChangeEvent] = []
        append = out.append
        by_hex, last_fps, make, key_of = self._by_hex, self._last_fp, _new_change_event, decode_key
        for e in events:
            fp, source = e.fingerprint, e.source
            t = by_hex.get(fp)
            if t is None:
                t = self._table_hex(fp, source)
            last = last_fps.get(source)
            if last != fp:
                last_fps[source] = fp
            raw = e.before
            before = None if raw is None else t.read(raw)
            raw = e.after
            after = None if raw is None else t.read(raw)
            unchanged: tuple[str, ...] = ()
            unrepresentable: tuple[str, ...] = ()
            if t.markers:
                unchanged, unrepresentable = _pop_markers(t.codec, before, after)
            append(
                make(
                    e.scn,
                    source,
                    e.op,
                    key_of(e.key),
                    before,
                    after,
                    e.ts_ms,
                    e.window_end,
                    fp,
                    t.version,
                    last is not None and last != fp,
                    unchanged,
                    unrepresentable,
                )
            )
        return out

    def decode_frames(self, body: bytes) -> list[ChangeEvent]:
        """The events of a response body of whole windows (a snapshot page), decoded in one pass over
        its frames: the same events as ``[decode(e) for e in iter_frames(body)]`` with the same errors
        (a bad or cut frame, a body ending inside a window: :class:`~headrace.errors.InvalidInput`),
        without an :class:`Event` per frame."""
        out: list[ChangeEvent] = []
        with gc_paused():
            self._decode_body(body, None, out, None)
        return out

    def decode_body(self, body: bytes, since: int | None = None) -> list[list[ChangeEvent]]:
        """The windows of a ``/v1/stream`` response body, each a list of its events, decoded in one pass
        over the frames, in place; events at or below ``since`` are left out (not decoded), and so are
        windows left empty.

        The same events, and the same errors, as ``[decode_many([e for e in w if e.scn > since]) for w
        in decode_windows(body)]`` (empty windows dropped): a bad or cut frame, or a body ending inside a
        window, raises its :class:`~headrace.errors.InvalidInput` even when an earlier event's payload or
        schema fails to decode (the frames are checked first, as that path does).

        The cyclic garbage collector is paused while a body is decoded (see :mod:`headrace._gcpause`)."""
        windows: list[list[ChangeEvent]] = []
        with gc_paused():
            self._decode_body(body, since, [], windows)
        return windows

    def _decode_body(
        self, body: bytes, since: int | None, out: list[ChangeEvent], windows: list[list[ChangeEvent]] | None
    ) -> None:
        """Decode ``body``'s frames into ``out`` (and, with ``windows``, a list per window into it)."""
        buf = body if type(body) is bytes else bytes(body)
        size = len(buf)
        mv = memoryview(buf)
        unpack, crc32, crc_unpack, ops, sources = _HEAD_UNPACK, _crc32, _CRC_UNPACK, _OPS, _SOURCE_STR
        tables, last_fps, make, key_of = self._tables, self._last_fp, _new_change_event, decode_key
        head_size, fixed = _HEAD_SIZE, _FIXED
        append = out.append
        last_raw, last_source = b"", ""
        offset = 0
        first_scn = -1  # the SCN of the first frame of the window still open (-1: none is)
        decoding = False  # False while a frame is being read and checked, True while its event is decoded
        try:
            while offset < size:
                decoding = False
                if size - offset < head_size:
                    _unpack_head(buf, offset)  # raises the error
                body_len, version, op, flags, _r, scn, ts_ms, fp, slen, klen, blen, alen = unpack(buf, offset)
                end = offset + 4 + body_len
                if version != 1 or body_len != fixed + slen + klen + blen + alen or size < end:
                    _unpack_head(buf, offset)  # raises the error
                if crc32(mv[offset + 4 : end - 4]) != crc_unpack(buf, end - 4)[0]:
                    raise InvalidInput("bad_crc", f"CRC mismatch in the event frame at offset {offset} (SCN {scn})")
                p = offset + head_size
                q = p + slen
                if slen == len(last_raw) and buf.startswith(last_raw, p):  # the table of the frame before
                    source = last_source
                else:
                    last_raw = buf[p:q]
                    source = sources.get(last_raw)  # type: ignore[assignment]
                    if source is None:
                        source = str(last_raw, "utf-8")
                        if len(sources) < 65536:
                            sources[last_raw] = source
                    last_source = source
                opv = ops.get(op)
                if opv is None:
                    raise InvalidInput("bad_op", f"unknown operation {op!r} at offset {offset}")
                if first_scn < 0:
                    first_scn = scn
                if flags & 1:
                    first_scn = -1
                offset = end
                decoding = True  # the frame is whole and checked: an error from here on is a decoding error
                if since is not None and scn <= since:
                    if flags & 1 and windows is not None and out:
                        windows.append(out)
                        out = []
                        append = out.append
                    continue
                t = tables.get(fp)
                if t is None:
                    t = self._table(fp, source)
                fph = t.fingerprint
                last = last_fps.get(source)
                if last != fph:
                    last_fps[source] = fph
                r = q + klen  # the key is buf[q:r], the row before buf[r:s], the row after buf[s:end - 4]
                s = r + blen
                if flags & 2:
                    try:
                        before = t.read_at(buf, r, s)
                    except Exception:  # the reference path gives the values or the error
                        before = t.codec.decode_reference(buf[r:s])
                else:
                    before = None
                if flags & 4:
                    try:
                        after = t.read_at(buf, s, s + alen)
                    except Exception:
                        after = t.codec.decode_reference(buf[s : s + alen])
                else:
                    after = None
                unchanged: tuple[str, ...] = ()
                unrepresentable: tuple[str, ...] = ()
                if t.markers:
                    unchanged, unrepresentable = _pop_markers(t.codec, before, after)
                # the key: one integer is most keys (decode_key's own fast path, without slicing it first)
                if klen > 2 and buf[q] == 0x5B and buf[r - 1] == 0x5D:
                    digits = buf[q + 1 : r - 1]
                    key = [int(digits)] if digits.isdigit() and (digits[0] != 0x30 or klen == 3) else key_of(buf[q:r])
                else:
                    key = key_of(buf[q:r])
                append(
                    make(
                        scn,
                        source,
                        opv,
                        key,
                        before,
                        after,
                        ts_ms,
                        (flags & 1) == 1,
                        fph,
                        t.version,
                        last is not None and last != fph,
                        unchanged,
                        unrepresentable,
                    )
                )
                if flags & 1 and windows is not None:
                    windows.append(out)
                    out = []
                    append = out.append
        except Exception:
            if decoding:  # a bad frame after this one, or a partial window, is the error to raise
                _check_frames(buf, offset, first_scn)
            raise
        if first_scn >= 0:
            raise InvalidInput("partial_window", f"the stream ended inside the window after SCN {first_scn}")

    def decode_fields(self, rows: Sequence[EventFields]) -> list[ChangeEvent]:
        """The events given as their fields (:data:`~headrace.relay._event.EventFields`), decoded in
        order (a snapshot page parsed by :func:`~headrace.relay._event.frame_fields`)."""
        out: list[ChangeEvent] = []
        append = out.append
        by_hex, last_fps, make, key_of = self._by_hex, self._last_fp, _new_change_event, decode_key
        for scn, source, op, key, ts_ms, fp, raw_before, raw_after, window_end in rows:
            t = by_hex.get(fp)
            if t is None:
                t = self._table_hex(fp, source)
            last = last_fps.get(source)
            if last != fp:
                last_fps[source] = fp
            before = None if raw_before is None else t.read(raw_before)
            after = None if raw_after is None else t.read(raw_after)
            unchanged: tuple[str, ...] = ()
            unrepresentable: tuple[str, ...] = ()
            if t.markers:
                unchanged, unrepresentable = _pop_markers(t.codec, before, after)
            append(
                make(
                    scn,
                    source,
                    op,
                    key_of(key),
                    before,
                    after,
                    ts_ms,
                    window_end,
                    fp,
                    t.version,
                    last is not None and last != fp,
                    unchanged,
                    unrepresentable,
                )
            )
        return out


def _pop_markers(
    c: RowCodec, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Take the relay's marker columns out of the rows (they travel beside the row, never in it):
    ``(unchanged, unrepresentable)``."""
    unchanged: tuple[str, ...] = ()
    unrepresentable: tuple[str, ...] = ()
    marker = c.markers.get(UNCHANGED_MARKER)
    if marker is not None:
        unchanged = tuple((after or {}).pop(marker, None) or ())
        if before is not None:
            before.pop(marker, None)
    marker = c.markers.get(UNREPRESENTABLE_MARKER)
    if marker is not None:
        nulled = [*((before or {}).pop(marker, None) or ()), *((after or {}).pop(marker, None) or ())]
        unrepresentable = tuple(dict.fromkeys(nulled))
    return unchanged, unrepresentable


def _check_frames(buf: bytes, offset: int, first_scn: int) -> None:
    """Raise what reading the frames from ``offset`` on raises (a bad or cut frame, then a body ending
    inside a window, whose first frame had ``first_scn`` if it began before ``offset``): a decoding error
    is only raised when the body itself is sound, as when the frames are all read before decoding."""
    for f in frame_fields(buf, offset):
        if first_scn < 0:
            first_scn = f[0]
        if f[8]:
            first_scn = -1
    if first_scn >= 0:
        raise InvalidInput("partial_window", f"the stream ended inside the window after SCN {first_scn}")


#: a :class:`ChangeEvent` from all its fields in order, without the frozen dataclass's per-field setattr
_new_change_event = fast_constructor(ChangeEvent)
