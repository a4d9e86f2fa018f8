"""A page of PostgreSQL rows in text form → each row's key and Avro bytes, a column at a time.

The seeding hot path (:mod:`headrace.bootstrap._seed_pgfast`). The reference is the snapshot's own
path: :func:`~._pgsnapshot.parse_rows` parses each text value with its ``PgType.parse`` into a
:class:`~._base.RowChange`, and :meth:`~headrace.relay.Codecs.encode_change` writes the row with the
relay's compiled writer. An Avro record's bytes are its fields' bytes back to back, so a page can be
encoded a *column* at a time — each column's values into their field bytes (union branch included),
then every row's fields joined — with no per-row dict, ``RowChange`` or writer call.

Two kinds of column encoder, both producing exactly the reference's bytes:

* **fused** (the common kinds whose PostgreSQL text maps to Avro bytes directly): ``smallint``,
  ``integer``, ``bigint``, ``oid`` (``int(text)`` → zig-zag varint), text-like columns (``text``,
  ``varchar``, ``char``, ``name``, enums, ``json``/``jsonb``, types shown as text: the UTF-8 bytes),
  ``boolean``, ``bytea`` (hex → bytes), ``real``/``double precision`` (``float(text)`` packed), and
  ``uuid`` (PostgreSQL's canonical text *is* ``str(UUID(text))``; any other text goes through
  ``UUID``). Each restates the relay's parser and the compiled writer's code for that kind.
* **generic** (every other column: numerics, dates, times, timestamps, intervals, arrays, text
  fallbacks, domains of those): the column's own ``PgType.parse``, then the row writer's generated
  code for that one field in a loop over the column
  (:func:`~headrace.relay._avrocolumns.compile_column_writer`; the same converter and native type as
  :class:`~headrace.relay._codec.RowCodec`) — the reference's code, per value.

Anything unexpected raises (a value the writer refuses, a NULL in a NOT NULL column, a length past
the inline varint table); the caller then encodes that page through the reference path, which gives
the same bytes or the reference's own error. ``tests/test_seed_pg_columns.py`` holds the two paths
side by side on generated values of every type the relay supports, through a real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from .._avrocolumns import compile_column_writer
from .._codec import _encoder, _native
from .._event import encode_key
from .._schema import Column, TableMeta
from ._pgtypes import PgType, _array_parser, _bool, _bytea, _date, _float, _str, _timestamptz

__all__ = ["PageEncoder", "column_encoder"]

#: one column's values (PostgreSQL text or None) → each value's Avro field bytes
ColumnEncoder = Callable[[Sequence[str | None]], list[bytes]]

_I64 = 1 << 63
_ONE = [bytes((i,)) for i in range(128)]
#: zig-zag varint of every non-negative n < 8192, indexed by n (lengths of strings)
_LEN = [bytes((2 * i,)) if i < 64 else bytes((((2 * i) & 0x7F) | 0x80, (2 * i) >> 7)) for i in range(8192)]
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
_UUID_LEN = _LEN[36]


_TWO = [b""] * 128 + [bytes(((z & 0x7F) | 0x80, z >> 7)) for z in range(128, 0x4000)]


#: the 14 low bits of a long's varint when more follow: two bytes, both with the continuation bit
_C14 = [bytes(((c & 0x7F) | 0x80, (c >> 7) | 0x80)) for c in range(0x4000)]


def _varint(n: int) -> bytes:
    """The Avro long ``n`` (zig-zag varint, 14 bits per step; OverflowError outside 64 bits, as the writer)."""
    if not -_I64 <= n < _I64:
        raise OverflowError("Python int too large to convert to C long")
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _ONE[z]
    if z < 0x4000:
        return _TWO[z]
    if z < 0x200000:
        return bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14))
    parts = []
    while z >= 0x4000:
        parts.append(_C14[z & 0x3FFF])
        z >>= 14
    parts.append(_ONE[z] if z < 0x80 else _TWO[z])
    return b"".join(parts)


def _union(ftype: Any) -> tuple[bytes | None, bytes] | None:
    """(null prefix, value prefix) of a field ``T`` or ``["null", T]``; None for any other union."""
    if not isinstance(ftype, list):
        return None, b""
    if len(ftype) == 2 and ftype[0] == "null" and ftype[1] != "null":
        return b"\x00", b"\x02"
    return None


def _fused(col: Column, parse: Any, ftype: Any, item: PgType | None = None) -> ColumnEncoder | None:
    """A fused encoder for ``col`` (see the module docstring), or None when it needs the generic one;
    ``item``: an array column's element type."""
    t = col.type
    if parse is Decimal and t.kind == "decimal" and t.precision is not None and t.scale is not None:
        return _fixed_decimals(col, parse, ftype, t.precision, t.scale)
    if parse is _timestamptz and t.kind == "timestamptz":
        return _timestamps_utc(col, parse, ftype)
    if parse is _date and t.kind == "date":
        return _dates(col, parse, ftype)
    if t.kind == "array" and item is not None:
        return _arrays(col, ftype, item)
    if t.has_text_branch:
        return None
    u = _union(ftype)
    if u is None:
        return None
    null, pre = u
    kind = t.kind
    if parse is int and kind in ("int", "long"):
        lo, hi = (-0x80000000, 0x7FFFFFFF) if kind == "int" else (-_I64, _I64 - 1)

        def ints(values: Sequence[str | None]) -> list[bytes]:
            out = []
            for s in values:
                if s is None:
                    if null is None:
                        raise TypeError("NULL in a NOT NULL column")
                    out.append(null)
                    continue
                n = int(s)
                if not lo <= n <= hi:
                    raise OverflowError(n)
                z = (n << 1) ^ (n >> 63)
                if z < 0x4000:
                    out.append(pre + (_ONE[z] if z < 0x80 else _TWO[z]))
                elif z < 0x200000:
                    out.append(pre + bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80, z >> 14)))
                else:
                    out.append(pre + _varint(n))
            return out

        return ints
    if parse is _str and kind in ("string", "enum", "json"):

        def texts(values: Sequence[str | None]) -> list[bytes]:
            out = []
            for s in values:
                if s is None:
                    if null is None:
                        raise TypeError("NULL in a NOT NULL column")
                    out.append(null)
                    continue
                e = s.encode()
                n = len(e)
                out.append(pre + (_LEN[n] if n < 8192 else _varint(n)) + e)
            return out

        return texts
    if parse is _bool and kind == "boolean":
        yes, no = pre + b"\x01", pre + b"\x00"
        return lambda values: [(yes if s == "t" else no) if s is not None else _null(null) for s in values]
    if parse is _bytea and kind == "bytes":

        def blobs(values: Sequence[str | None]) -> list[bytes]:
            out = []
            for s in values:
                if s is None:
                    out.append(_null(null))
                    continue
                b = _bytea(s)
                n = len(b)
                out.append(pre + (_LEN[n] if n < 8192 else _varint(n)) + b)
            return out

        return blobs
    if parse is _float and kind in ("double", "float"):
        import struct

        pack = struct.Struct("<d" if kind == "double" else "<f").pack
        return lambda values: [pre + pack(float(s)) if s is not None else _null(null) for s in values]
    if parse is uuid.UUID and kind == "uuid" and not t.text_fallback:

        def uuids(values: Sequence[str | None]) -> list[bytes]:
            out = []
            for s in values:
                if s is None:
                    out.append(_null(null))
                elif _CANONICAL_UUID(s):  # PostgreSQL's own output: str(UUID(s)) == s
                    out.append(pre + _UUID_LEN + s.encode())
                else:
                    e = str(uuid.UUID(s)).encode()
                    out.append(pre + _varint(len(e)) + e)
            return out

        return uuids
    return None


def _null(null: bytes | None) -> bytes:
    if null is None:
        raise TypeError("NULL in a NOT NULL column")
    return null


def _prefixes(ftype: Any) -> tuple[bytes | None, bytes] | None:
    """(null prefix, value prefix) of ``T``, ``["null", T]``, ``[T, "string"]`` or ``["null", T, "string"]``."""
    if not isinstance(ftype, list):
        return None, b""
    if ftype[:1] == ["null"] and len(ftype) in (2, 3) and ftype[1] != "null":
        return b"\x00", b"\x02"
    if len(ftype) == 2 and ftype[0] != "null" and ftype[1] == "string":
        return None, b"\x00"
    return None


def _fixed_decimals(col: Column, parse: Any, ftype: Any, precision: int, scale: int) -> ColumnEncoder | None:
    """``numeric(p, s)``: PostgreSQL prints exactly ``s`` decimals, so the text without its point is
    the Avro decimal's unscaled integer (what quantizing ``Decimal(text)`` to ``s`` places and writing
    it gives); any other text (NaN, a negative scale) goes through the generic encoder."""
    pre = _prefixes(ftype)
    if pre is None or scale < 0:
        return None
    null, vpre = pre
    generic = _generic(col, parse, ftype)
    shape = re.compile(rf"-?[0-9]+\.[0-9]{{{scale}}}" if scale else r"-?[0-9]+").fullmatch
    limit = 10**precision

    def decimals(values: Sequence[str | None]) -> list[bytes]:
        out = []
        for s in values:
            if s is None:
                out.append(_null(null))
                continue
            if shape(s):
                u = int(s.replace(".", "")) if scale else int(s)
                if -limit < u < limit:
                    e = u.to_bytes((abs(u).bit_length() + 8) // 8, "big", signed=True)
                    out.append(vpre + _ONE[2 * len(e)] + e if len(e) < 64 else vpre + _varint(len(e)) + e)
                    continue
            out.append(generic([s])[0])
        return out

    return decimals


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_fromisoformat = dt.datetime.fromisoformat


def _timestamps_utc(col: Column, parse: Any, ftype: Any) -> ColumnEncoder | None:
    """``timestamptz`` under the session's ``TimeZone=UTC``: a text ending ``+00`` is that UTC time,
    written as its microseconds since the epoch (what the reference's aware datetime gives); any
    other text (infinity, BC, years past 9999) goes through the generic encoder."""
    pre = _prefixes(ftype)
    if pre is None:
        return None
    null, vpre = pre
    generic = _generic(col, parse, ftype)

    def timestamps(values: Sequence[str | None]) -> list[bytes]:
        out = []
        for s in values:
            if s is None:
                out.append(_null(null))
                continue
            if s.endswith("+00") and len(s) >= 22 and s[4] == "-":
                try:
                    d = _fromisoformat(s[:-3])
                except ValueError:
                    out.append(generic([s])[0])
                    continue
                n = (
                    (d.toordinal() - _EPOCH_ORDINAL) * 86400 + d.hour * 3600 + d.minute * 60 + d.second
                ) * 1_000_000 + d.microsecond
                out.append(vpre + _varint(n))
                continue
            out.append(generic([s])[0])
        return out

    return timestamps


def _dates(col: Column, parse: Any, ftype: Any) -> ColumnEncoder | None:
    """``date``: its parser's ``datetime.date`` written as days since the epoch; a text it leaves as
    text (infinity, BC, years past 9999) goes through the generic encoder."""
    pre = _prefixes(ftype)
    if pre is None:
        return None
    null, vpre = pre
    generic = _generic(col, parse, ftype)
    date = dt.date

    def dates(values: Sequence[str | None]) -> list[bytes]:
        out = []
        for s in values:
            if s is None:
                out.append(_null(null))
                continue
            v = parse(s)
            out.append(vpre + _varint(v.toordinal() - _EPOCH_ORDINAL) if type(v) is date else generic([s])[0])
        return out

    return dates


def _arrays(col: Column, ftype: Any, item: PgType) -> ColumnEncoder | None:
    """A one-dimensional array of a kind with a fused encoder: the array parser's split of the text
    (``parse_array`` with the element parser applied to each element's text — here the element's
    fused encoder does both), written as one Avro array block; a text the parser keeps whole (more
    dimensions, explicit bounds) goes to the string branch, as the reference's text fallback."""
    t = col.type
    if not (isinstance(ftype, list) and ftype[-1] == "string" and t.has_text_branch and t.items is not None):
        return None
    pre = _prefixes(ftype)
    body = ftype[-2]
    if pre is None or not (isinstance(body, dict) and body.get("type") == "array" and len(body) == 2):
        return None
    null, vpre = pre
    tpre = _ONE[2 * (len(ftype) - 1)]  # the string branch: the last one
    elem = _fused(Column("item", t.items, True), item.parse, body["items"], item.items)
    if elem is None:
        return None
    split = _array_parser(_str)
    empty = vpre + b"\x00"

    def arrays(values: Sequence[str | None]) -> list[bytes]:
        splits = [None if s is None else split(s) for s in values]
        # every element of the page's arrays through the element encoder at once, then dealt back
        flat = elem([x for items in splits if type(items) is list for x in items])
        out = []
        i = 0
        for items in splits:
            if items is None:
                out.append(_null(null))
            elif type(items) is str:
                e = items.encode()
                out.append(tpre + _varint(len(e)) + e)
            elif items:
                n = len(items)
                out.append(vpre + (_LEN[n] if n < 8192 else _varint(n)) + b"".join(flat[i : i + n]) + b"\x00")
                i += n
            else:
                out.append(empty)
        return out

    return arrays


def _generic(col: Column, parse: Any, ftype: Any) -> ColumnEncoder:
    """The reference's own code per value: ``parse``, then the row writer's code for this one field
    (:func:`~headrace.relay._avrocolumns.compile_column_writer`)."""
    return compile_column_writer(ftype, _encoder(col.type), _native(col.type), parse)


def column_encoder(col: Column, parse: Any, ftype: Any, item: PgType | None = None) -> ColumnEncoder:
    """The encoder of one column: its values' text → their Avro field bytes (module docstring);
    ``item``: an array column's element type (without it, arrays take the generic encoder)."""
    return _fused(col, parse, ftype, item) or _generic(col, parse, ftype)


class PageEncoder:
    """Encodes pages of one table's rows (tuples of text in ``meta.columns`` order) for the schema
    ``fields`` (the table's Avro record fields): each row's event key and Avro bytes."""

    def __init__(
        self,
        meta: TableMeta,
        parsers: Sequence[Any],
        fields: Sequence[dict[str, Any]],
        types: Sequence[PgType] | None = None,
    ) -> None:
        items = [t.items for t in types] if types is not None else [None] * len(parsers)
        specs = list(zip(meta.columns, parsers, [f["type"] for f in fields], items, strict=True))
        self._columns = [column_encoder(*spec) for spec in specs]
        #: how many columns have a fused encoder (the rest: the generic one)
        self.fused = sum(1 for spec in specs if _fused(*spec) is not None)
        pos = {c.name: i for i, c in enumerate(meta.columns)}
        self._key_idx = [pos[k] for k in meta.key]
        self._key_parsers = [parsers[i] for i in self._key_idx]
        #: one integer key column: the key straight from the number (as ``encode_key`` writes it)
        self.int_key = len(self._key_idx) == 1 and self._key_parsers[0] is int

    def encode(self, rows: Sequence[tuple[str | None, ...]]) -> tuple[list[bytes], list[bytes], list[int] | None]:
        """The event keys and Avro rows of ``rows``, and for a one-integer key its numbers (else None)."""
        if not rows:
            return [], [], [] if self.int_key else None
        cols = list(zip(*rows, strict=True))
        fields = [enc(col) for enc, col in zip(self._columns, cols, strict=True)]
        join = b"".join
        afters = [join(t) for t in zip(*fields, strict=True)] if len(fields) > 1 else fields[0]
        if self.int_key:
            nums = [int(s) for s in cols[self._key_idx[0]]]  # a NULL key: TypeError (the reference path)
            return [b"[%d]" % n for n in nums], afters, nums
        kcols = [
            [None if s is None else p(s) for s in cols[i]]
            for i, p in zip(self._key_idx, self._key_parsers, strict=True)
        ]
        return [encode_key(list(vals)) for vals in zip(*kcols, strict=True)], afters, None
