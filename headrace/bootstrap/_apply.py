"""Merging windows of change events into snapshot rows (sans-io: events in, row operations out).

The snapshot store holds, per source table and key, the row as of the newest change applied, as a
ready-to-serve ``r`` event frame (encoded once here, served by copying bytes). A delete removes the
key. :func:`merge` folds any number of consecutive windows into one operation per key — the last
change wins — so an apply transaction writes each key at most once. A truncate event (op ``t``)
drops what came before it for its table and becomes a table-wide delete (:data:`TRUNCATE_KEY`),
which the store runs first, in the same transaction, before the table's later operations.

Keys sort in :func:`sort_key` order: the bytes compare like the key values (integers numerically,
text by code point), so snapshot pages come in key order on any SQL database (the store keeps the
sort key as binary, compared bytewise).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..relay import Event, Op, decode_key, encode_event
from ..relay._event import _CRC, _MAX_SCN, FLAG_AFTER, HEADER

__all__ = ["TRUNCATE_KEY", "ReadFrame", "RowOp", "merge", "read_frames", "snapshot_frame", "sort_key"]

_I64 = 1 << 63
#: the sort key of a truncate operation (no row's sort key starts with 0x00)
TRUNCATE_KEY = b"\x00"


def _component(value: object) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool) and -_I64 <= value < _I64:
        return b"\x01" + (value + _I64).to_bytes(8, "big")
    if isinstance(value, str):
        return b"\x02" + value.encode().replace(b"\x00", b"\x00\xff") + b"\x00\x00"
    return b"\x03" + json.dumps(value, sort_keys=True).encode().replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def sort_key(key: bytes) -> bytes:
    """Bytes that order like the key's values (``key`` is the event's canonical JSON key)."""
    inner = key[1:-1]
    if inner.isdigit() or (inner[:1] == b"-" and inner[1:].isdigit()):  # the common one-integer key
        v = int(inner)
        if -_I64 <= v < _I64:
            return b"\x01" + (v + _I64).to_bytes(8, "big")
    return b"".join(_component(v) for v in decode_key(key))


def snapshot_frame(e: Event) -> bytes:
    """The ``r`` frame of the row after ``e`` (no window mark; the server marks each page's last)."""
    return encode_event(Event(e.scn, e.source, Op.READ, e.key, e.ts_ms, e.fingerprint, None, e.after))


def read_frames(
    scn: int, source: str, fingerprints: Sequence[str], keys: Sequence[bytes], afters: Sequence[bytes | None]
) -> list[bytes]:
    """The ``r`` frames (no window mark, ``ts_ms`` 0, no before image) of a page of rows of one
    source at ``scn``: byte for byte :func:`~headrace.relay.encode_event` of each row's
    ``Event(scn, source, Op.READ, key, 0, fingerprint, None, after)``, with the parts every row
    shares packed once (tests/test_bootstrap_read_frames.py holds the two side by side)."""
    if not 0 <= scn <= _MAX_SCN:
        raise ValueError(f"SCN {scn} out of range")
    src = source.encode()
    if len(src) > 0xFFFF:
        raise ValueError("a source name is at most 65,535 bytes")
    fixed = HEADER.size - 4 + len(src) + 4  # the body's bytes besides key and after image
    fp_bytes: dict[str, bytes] = {}
    pack, crc32 = HEADER.pack, zlib.crc32
    out: list[bytes] = []
    for fp, key, after in zip(fingerprints, keys, afters, strict=True):
        fpb = fp_bytes.get(fp)
        if fpb is None:
            fpb = fp_bytes[fp] = bytes.fromhex(fp)
            if len(fpb) != 8:
                raise ValueError("a fingerprint is 8 bytes (16 hex digits)")
        a = after or b""
        flags = FLAG_AFTER if after is not None else 0
        head = pack(fixed + len(key) + len(a), 1, b"r", flags, 0, scn, 0, fpb, len(src), len(key), 0, len(a))
        frame = b"".join((head, src, key, a))
        out.append(frame + _CRC.pack(crc32(memoryview(frame)[4:])))
    return out


@dataclass(frozen=True, slots=True)
class ReadFrame:
    """An ``r`` row already encoded as a frame (seeding): merged without decoding or re-encoding."""

    scn: int
    source: str
    key: bytes
    frame: bytes
    op: Op = Op.READ
    after: bytes | None = b""


@dataclass(frozen=True, slots=True)
class RowOp:
    """What to do to one key: store ``frame`` (an upsert) or, when it is None, delete the row; with
    :attr:`truncate`, delete every row of ``source`` (before the other operations of the batch)."""

    source: str
    sort_key: bytes
    scn: int
    frame: bytes | None

    @property
    def truncate(self) -> bool:
        return self.sort_key == TRUNCATE_KEY


#: ``fill(event, sort_key, previous frame, previous known)`` → a frame with placeholders filled, or
#: None when the event needs none (see :class:`._toast.ToastFiller`)
Fill = Callable[[Event, bytes, "bytes | None", bool], "bytes | None"]


def merge(windows: Iterable[Iterable[Event | ReadFrame]], fill: Fill | None = None) -> dict[tuple[str, bytes], RowOp]:
    """One operation per (source, sort key) for the events of ``windows`` in order (last wins).

    ``fill`` (optional) rewrites an after image that carries unchanged-TOAST placeholders, given the
    key's previous image in this merge when there is one. An UPDATE that moved a row to a new key
    arrives as a DELETE of the old key and then the UPDATE with the same ``before`` (see
    docs/relay-wire-format.md): its placeholders are filled from the old key's previous image."""
    out: dict[tuple[str, bytes], RowOp] = {}
    # the last DELETE per table: (its before image, the old key's sort key, its previous op, known)
    deleted: dict[str, tuple[bytes | None, bytes, RowOp | None, bool]] = {}
    for window in windows:
        for e in window:
            if e.op is Op.TRUNCATE:
                for k in [k for k in out if k[0] == e.source]:
                    del out[k]
                out[(e.source, TRUNCATE_KEY)] = RowOp(e.source, TRUNCATE_KEY, e.scn, None)
                continue
            sk = sort_key(e.key)
            if e.op is Op.READ and isinstance(e, ReadFrame):
                out[(e.source, sk)] = RowOp(e.source, sk, e.scn, e.frame)
            elif e.op is Op.DELETE or e.after is None:
                if fill is not None and isinstance(e, Event):
                    prev = out.get((e.source, sk))
                    deleted[e.source] = (e.before, sk, prev, (e.source, sk) in out)
                out[(e.source, sk)] = RowOp(e.source, sk, e.scn, None)
            else:
                assert isinstance(e, Event)
                frame = None
                if fill is not None:
                    moved = deleted.pop(e.source, None)
                    if moved is not None and e.before is not None and moved[0] == e.before and moved[1] != sk:
                        _before, old_sk, prev, known = moved  # the row came from the old key
                        frame = fill(e, old_sk, prev.frame if prev is not None else None, known)
                    else:
                        prev = out.get((e.source, sk))
                        frame = fill(e, sk, prev.frame if prev is not None else None, prev is not None)
                out[(e.source, sk)] = RowOp(e.source, sk, e.scn, frame or snapshot_frame(e))
    return out
