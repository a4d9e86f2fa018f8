"""Events and windows, and their binary wire format (sans-io: bytes in, values out).

An :class:`Event` is one committed row change as it travels from the relay to a subscriber: SCN,
source table, operation, key, commit timestamp, the schema fingerprint of its payloads, the row
after and (where the source gives it) before as Avro binary, and a window-end mark. The events of
one source transaction form a *window*; the last one carries the mark. A window's SCN is the SCN of
its last event, and window SCNs strictly increase along the source's commit order.

Frame layout (all integers big-endian; see ``docs/relay-wire-format.md``)::

    offset size  field
    0      4     frame_len     bytes that follow this field, CRC included
    4      1     version       1
    5      1     op            ASCII 'c' insert, 'u' update, 'd' delete, 'r' snapshot read, 't' truncate
    6      1     flags         1 = window end, 2 = has before, 4 = has after
    7      1     reserved      0
    8      8     scn           u64
    16     8     ts_ms         i64, commit time, ms since the epoch (UTC)
    24     8     fingerprint   CRC-64-AVRO of the row schema's parsing canonical form
    32     2     source_len    u16
    34     4     key_len       u32
    38     4     before_len    u32
    42     4     after_len     u32
    46     …     source (UTF-8) | key (canonical JSON, UTF-8) | before (Avro) | after (Avro)
    end-4  4     crc           CRC-32 (zlib) of bytes 4 … end-4

A stream is frames back to back. An event is encoded once, when the relay takes it in; serving it
is copying bytes. The one exception is a filtered window whose marked last event was filtered out:
the server copies the last event it does send with the mark set and its CRC recomputed.

The key is the list of the row's key-column values as canonical JSON (:func:`encode_key`), so every
source produces the same bytes for the same key and ``mod:N:i`` partitions (CRC-32 of those bytes
mod N) agree across relays and source kinds.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import starmap
from typing import Any

from .._frozen import fast_constructor
from ..errors import InvalidInput
from ._values import JSON_NULL, Interval

__all__ = [
    "EVENTS_CONTENT_TYPE",
    "FLAG_AFTER",
    "FLAG_BEFORE",
    "FLAG_WINDOW_END",
    "HEADER",
    "Event",
    "EventFields",
    "EventHeader",
    "Op",
    "append_frame",
    "check_whole_windows",
    "decode_event",
    "decode_key",
    "decode_windows",
    "encode_event",
    "encode_frame",
    "encode_key",
    "frame_fields",
    "iter_frames",
    "json_default",
    "key_partition",
    "peek_header",
    "split_windows",
    "with_window_end",
]

EVENTS_CONTENT_TYPE = "application/x-headrace-events"
VERSION = 1
FLAG_WINDOW_END = 1
FLAG_BEFORE = 2
FLAG_AFTER = 4

#: frame_len, version, op, flags, reserved, scn, ts_ms, fingerprint, source_len, key_len, before_len, after_len
HEADER = struct.Struct(">IBcBBQq8sHIII")
_CRC = struct.Struct(">I")
_MAX_SCN = (1 << 64) - 1


class Op(enum.StrEnum):
    """The operation of a row change (Debezium's letters)."""

    INSERT = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"
    #: every row of the table was deleted (``TRUNCATE``): key ``[]``, no before/after, one event per table
    TRUNCATE = "t"


@dataclass(frozen=True, slots=True)
class Event:
    """One row change with its payloads still Avro-encoded (decode them with the row schema)."""

    scn: int
    source: str
    op: Op
    key: bytes
    ts_ms: int
    fingerprint: str
    before: bytes | None
    after: bytes | None
    window_end: bool = False


@dataclass(frozen=True, slots=True)
class EventHeader:
    """What a server reads of a frame to route and filter it without decoding payloads."""

    offset: int
    length: int  # whole frame, length prefix included
    scn: int
    op: Op
    window_end: bool
    source: str
    key: bytes


def json_default(value: Any) -> Any:
    """JSON for the typed values rows carry: decimals as text, bytes as base64, times and intervals as ISO
    8601, durations as seconds, a JSON null as null."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Interval):
        return str(value)
    if value is JSON_NULL:
        return None
    raise TypeError(f"a value of type {type(value).__name__} has no JSON form")


# one encoder object: json.dumps with non-default options builds a new one per call
_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=json_default)


def encode_key(values: Sequence[Any]) -> bytes:
    """The canonical key bytes: a compact JSON array of the key-column values in key order.

    Integers, strings, booleans and floats are JSON natives; decimals, dates, times, timestamps and
    UUIDs are their ``str``/ISO text; bytes are base64.
    """
    if len(values) == 1 and type(values[0]) is int:
        return b"[%d]" % values[0]
    return _KEY_ENCODER.encode(list(values)).encode()


def decode_key(key: bytes) -> list[Any]:
    """The key-column values as JSON values (decimals, dates, UUIDs as text; bytes as base64)."""
    if len(key) > 2 and key[0] == 0x5B and key[-1] == 0x5D:  # [ … ]: one integer is most keys
        inner = key[1:-1]
        digits = inner[1:] if inner[0] == 0x2D else inner  # after a minus sign
        # a JSON integer: ASCII digits (bytes.isdigit), no leading zero
        if digits.isdigit() and (digits[0] != 0x30 or len(digits) == 1):
            return [int(inner)]
    value = json.loads(key)
    if not isinstance(value, list):
        raise InvalidInput("bad_key", "an event key must be a JSON array")
    return value


def key_partition(key: bytes, n: int) -> int:
    """The ``mod:n`` partition (0 ≤ i < n) of a key: CRC-32 of the canonical key bytes mod n."""
    return zlib.crc32(key) % n


# the encoded bytes of sources and fingerprints seen (a relay has few tables and schemas)
_SOURCE_BYTES: dict[str, bytes] = {}
_FP_BYTES: dict[str, bytes] = {}
_OP_BYTES = {op: op.value.encode() for op in Op}
_OPS = {op.value.encode(): op for op in Op}
_HEAD_PACK = HEADER.pack
_CRC_PACK = _CRC.pack
_crc32 = zlib.crc32
_FIXED = HEADER.size - 4 + 4  # header after frame_len, plus the CRC


def _fp_bytes(fingerprint: str) -> bytes:
    fp = _FP_BYTES.get(fingerprint)
    if fp is None:
        fp = bytes.fromhex(fingerprint)
        if len(fp) != 8:
            raise ValueError("a fingerprint is 8 bytes (16 hex digits)")
        if len(_FP_BYTES) < 65536:
            _FP_BYTES[fingerprint] = fp
    return fp


def encode_frame(
    scn: int,
    source: str,
    op: Op,
    key: bytes,
    ts_ms: int,
    fingerprint: str,
    before: bytes | None,
    after: bytes | None,
    window_end: bool = False,
) -> bytes:
    """Serialize one event given as its fields (what :func:`encode_event` does, without an :class:`Event`)."""
    if not 0 <= scn <= _MAX_SCN:
        raise ValueError(f"SCN {scn} out of range")
    src = _SOURCE_BYTES.get(source)
    if src is None:
        src = source.encode()
        if len(_SOURCE_BYTES) < 65536:
            _SOURCE_BYTES[source] = src
    fp = _fp_bytes(fingerprint)
    flags = FLAG_WINDOW_END if window_end else 0
    if before is None:
        before = b""
    else:
        flags |= FLAG_BEFORE
    if after is None:
        after = b""
    else:
        flags |= FLAG_AFTER
    slen, klen, blen, alen = len(src), len(key), len(before), len(after)
    head = _HEAD_PACK(_FIXED + slen + klen + blen + alen, VERSION, _OP_BYTES[op], flags, 0, scn, ts_ms, fp,
                      slen, klen, blen, alen)  # fmt: skip
    frame = b"".join((head, src, key, before, after))
    return frame + _CRC_PACK(zlib.crc32(memoryview(frame)[4:]))


def append_frame(
    buf: bytearray,
    scn: int,
    source: str,
    op: Op,
    key: bytes,
    ts_ms: int,
    fingerprint: str,
    before: bytes | None,
    after: bytes | None,
    window_end: bool = False,
) -> None:
    """Append the frame :func:`encode_frame` returns for these fields to ``buf`` (without building it
    apart first: the relay packs a window's frames into one buffer)."""
    if not 0 <= scn <= _MAX_SCN:
        raise ValueError(f"SCN {scn} out of range")
    src = _SOURCE_BYTES.get(source)
    if src is None:
        src = source.encode()
        if len(_SOURCE_BYTES) < 65536:
            _SOURCE_BYTES[source] = src
    fp = _FP_BYTES.get(fingerprint)
    if fp is None:
        fp = _fp_bytes(fingerprint)
    flags = FLAG_WINDOW_END if window_end else 0
    if before is None:
        before = b""
    else:
        flags |= FLAG_BEFORE
    if after is None:
        after = b""
    else:
        flags |= FLAG_AFTER
    slen, klen, blen, alen = len(src), len(key), len(before), len(after)
    head = _HEAD_PACK(_FIXED + slen + klen + blen + alen, VERSION, _OP_BYTES[op], flags, 0, scn, ts_ms, fp,
                      slen, klen, blen, alen)  # fmt: skip
    crc = _crc32(after, _crc32(before, _crc32(key, _crc32(src, _crc32(head[4:])))))
    buf += head
    buf += src
    buf += key
    buf += before
    buf += after
    buf += _CRC_PACK(crc)


def encode_event(event: Event) -> bytes:
    """Serialize ``event`` as one frame."""
    return encode_frame(
        event.scn,
        event.source,
        event.op,
        event.key,
        event.ts_ms,
        event.fingerprint,
        event.before,
        event.after,
        event.window_end,
    )


def _unpack_head(buf: bytes | memoryview, offset: int) -> tuple[Any, ...]:
    if len(buf) - offset < HEADER.size:
        raise InvalidInput("truncated", f"a frame header at offset {offset} is cut short")
    head = HEADER.unpack_from(buf, offset)
    (body_len, version, _op, _flags, _r, _scn, _ts, _fp, slen, klen, blen, alen) = head
    if version != VERSION:
        raise InvalidInput("bad_version", f"frame version {version} at offset {offset}; this reader knows {VERSION}")
    if body_len != HEADER.size - 4 + slen + klen + blen + alen + 4:
        raise InvalidInput("bad_frame", f"inconsistent lengths in the frame at offset {offset}")
    if len(buf) - offset < 4 + body_len:
        raise InvalidInput("truncated", f"the frame at offset {offset} is cut short")
    return head


def peek_header(buf: bytes | memoryview, offset: int = 0) -> EventHeader:
    """Read the routing fields of the frame at ``offset`` (no CRC check, no payload decoding)."""
    body_len, _v, op, flags, _r, scn, _ts, _fp, slen, klen, _b, _a = _unpack_head(buf, offset)
    p = offset + HEADER.size
    return EventHeader(
        offset=offset,
        length=4 + body_len,
        scn=scn,
        op=Op(op.decode()),
        window_end=bool(flags & FLAG_WINDOW_END),
        source=bytes(buf[p : p + slen]).decode(),
        key=bytes(buf[p + slen : p + slen + klen]),
    )


def decode_event(buf: bytes | memoryview, offset: int = 0) -> tuple[Event, int]:
    """Decode and CRC-check the frame at ``offset``; returns the event and the next offset."""
    if len(buf) - offset < _HEAD_SIZE:
        _unpack_head(buf, offset)  # raises the error
    fields = next(frame_fields(buf, offset, 1))
    return _new_event(*fields), offset + 4 + _LEN_UNPACK(buf, offset)[0]  # checked by frame_fields


_LEN_UNPACK = struct.Struct(">I").unpack_from


_HEAD_UNPACK = HEADER.unpack_from
_CRC_UNPACK = _CRC.unpack_from
_HEAD_SIZE = HEADER.size
#: fingerprint bytes → hex, and source bytes → str, as frames carry them (a stream has few of each)
_FP_HEX: dict[bytes, str] = {}
_SOURCE_STR: dict[bytes, str] = {}
#: an :class:`Event` from its fields in order, without the frozen dataclass's per-field setattr
_new_event = fast_constructor(Event)

#: an event's fields in :class:`Event` order: scn, source, op, key, ts_ms, fingerprint, before, after, window_end
EventFields = tuple[int, str, Op, bytes, int, str, bytes | None, bytes | None, bool]


def frame_fields(buf: bytes | memoryview, offset: int = 0, limit: int = -1) -> Iterator[EventFields]:
    """The fields of every frame from ``offset`` on (at most ``limit``; -1: all), CRC-checked, in order:
    what :func:`iter_frames` makes its events of, without the events (raises on a bad or cut frame)."""
    size = len(buf)
    mv = memoryview(buf)
    fp_hex, sources, ops = _FP_HEX, _SOURCE_STR, _OPS
    unpack, crc32, crc_unpack = _HEAD_UNPACK, zlib.crc32, _CRC_UNPACK
    while offset < size and limit != 0:
        limit -= 1
        if size - offset < _HEAD_SIZE:
            _unpack_head(buf, offset)  # raises the error
        body_len, version, op, flags, _r, scn, ts_ms, fp, slen, klen, blen, alen = unpack(buf, offset)
        end = offset + 4 + body_len
        if version != VERSION or body_len != _FIXED + slen + klen + blen + alen or size < end:
            _unpack_head(buf, offset)  # raises the error
        if crc32(mv[offset + 4 : end - 4]) != crc_unpack(buf, end - 4)[0]:
            raise InvalidInput("bad_crc", f"CRC mismatch in the event frame at offset {offset} (SCN {scn})")
        p = offset + _HEAD_SIZE
        q = p + slen
        raw_source = bytes(buf[p:q])
        source = sources.get(raw_source)
        if source is None:
            source = str(raw_source, "utf-8")
            if len(sources) < 65536:
                sources[raw_source] = source
        p = q + klen
        key = bytes(buf[q:p])
        q = p + blen
        before = bytes(buf[p:q]) if flags & FLAG_BEFORE else None
        after = bytes(buf[q : q + alen]) if flags & FLAG_AFTER else None
        opv = ops.get(op)
        if opv is None:
            raise InvalidInput("bad_op", f"unknown operation {op!r} at offset {offset}") from None
        fph = fp_hex.get(fp)
        if fph is None:
            fph = fp.hex()
            if len(fp_hex) < 65536:
                fp_hex[fp] = fph
        yield scn, source, opv, key, ts_ms, fph, before, after, bool(flags & FLAG_WINDOW_END)
        offset = end


def check_whole_windows(rows: Sequence[EventFields]) -> None:
    """Raise what :func:`split_windows` raises (``partial_window``) when ``rows`` end inside a window."""
    if rows and not rows[-1][8]:
        i = len(rows) - 1
        while i > 0 and not rows[i - 1][8]:
            i -= 1
        raise InvalidInput("partial_window", f"the stream ended inside the window after SCN {rows[i][0]}")


def iter_frames(buf: bytes | memoryview) -> Iterator[Event]:
    """Decode every frame of a stream body, in order (raises on a bad or truncated frame)."""
    return starmap(_new_event, frame_fields(buf))  # lazy, as frame_fields: an error where the bad frame is


def decode_windows(buf: bytes | memoryview) -> list[list[Event]]:
    """``list(split_windows(iter_frames(buf)))`` in one loop: the events of a stream body grouped into
    windows (raises on a bad or truncated frame, and ``partial_window`` if the body ends inside one)."""
    out: list[list[Event]] = []
    current: list[Event] = []
    make = _new_event
    for fields in frame_fields(buf):
        current.append(make(*fields))
        if fields[8]:
            out.append(current)
            current = []
    if current:
        raise InvalidInput("partial_window", f"the stream ended inside the window after SCN {current[0].scn}")
    return out


def split_windows(events: Iterator[Event] | Sequence[Event]) -> Iterator[list[Event]]:
    """Group events into windows (each list ends with the marked event).

    Raises :class:`InvalidInput` (``partial_window``) if the events end inside a window.
    """
    current: list[Event] = []
    for e in events:
        current.append(e)
        if e.window_end:
            yield current
            current = []
    if current:
        raise InvalidInput("partial_window", f"the stream ended inside the window after SCN {current[0].scn}")


def with_window_end(frame: bytes | memoryview) -> bytes:
    """A copy of ``frame`` with the window-end flag set and its CRC recomputed."""
    out = bytearray(frame)
    out[6] |= FLAG_WINDOW_END
    _CRC.pack_into(out, len(out) - 4, zlib.crc32(memoryview(out)[4:-4]))
    return bytes(out)
