"""Avro encoding of row images, done once when the relay takes a window in (sans-io).

:class:`RowCodec` turns ``{column: Python value}`` into schemaless Avro bytes for one schema version
and back, optionally resolving to a reader schema the application gives (Avro schema resolution:
added fields take their defaults, removed ones are skipped). Kinds Avro has no logical type for
travel as annotated primitives (``headrace.type``: JSON and unscaled decimals as strings, intervals
as microseconds) and are turned back into Python values on decoding.

:func:`encode_window` encodes a source's :class:`ChangeWindow` into event frames. An UPDATE that
changed the row's key becomes two events: a DELETE of the old key (with the old row as ``before``),
then the UPDATE under the new key, so anything that keeps rows by key drops the old one.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from ..errors import UnrepresentableValue
from ._avrofast import compile_reader, compile_writer
from ._event import Op, append_frame, encode_frame, encode_key
from ._schema import COLUMN_PROP, KIND_PROP, ColumnType, SchemaRegistry, SchemaVersion, TableMeta, marker_fields
from ._values import JSON_NULL, Interval
from .sources._base import ChangeWindow, RowChange

__all__ = ["Codecs", "EncodedWindow", "RowCodec", "encode_window", "encode_window_reference"]

Convert = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_TEXT = "string"  # the union branch of text-fallback values (fastavro's tuple notation picks it)


def _decimal_encoder(t: ColumnType) -> Convert:
    if t.unscaled_decimal:
        check = not t.text_fallback  # with a fallback any text travels (and decodes to a str if no number)

        def exact_text(v: Any) -> str:
            if isinstance(v, str):
                if check:
                    decimal.Decimal(v)  # checks it is a number; the database's own text travels as it is
                return v
            return str(v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v)))

        return exact_text
    assert t.precision is not None and t.scale is not None
    q = decimal.Decimal(1).scaleb(-t.scale)
    # a local context: the default one has 28 digits, DECIMAL(65,30) and numeric(1000,0) need more
    ctx = decimal.Context(prec=max(t.precision, 1), rounding=decimal.ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])
    fallback = t.has_text_branch

    def fixed(v: Any) -> Any:
        d = v if isinstance(v, decimal.Decimal) else decimal.Decimal(v if isinstance(v, str) else str(v))
        if not d.is_finite():
            if fallback:
                return (_TEXT, str(d))
            raise ValueError(f"{d} has no fixed-point form (decimal({t.precision},{t.scale}))")
        return d.quantize(q, context=ctx)

    return fixed


def _interval_text(v: Any) -> str:
    if isinstance(v, str):
        Interval.from_iso(v)  # checks the form; the database's text travels as it is
        return v
    if isinstance(v, dt.timedelta):
        return str(Interval.from_timedelta(v))
    if isinstance(v, Interval):
        return str(v)
    raise TypeError(f"not an interval: {v!r}")


def _duration_micros(v: Any) -> int:
    return v // dt.timedelta(microseconds=1) if isinstance(v, dt.timedelta) else int(v)


def _json_text(v: Any) -> str:
    if isinstance(v, str):
        return v  # the JSON text as the database gave it (exact numbers, key order, null)
    if v is JSON_NULL:
        return "null"
    return _JSON_ENCODER.encode(v)


def _base_encoder(t: ColumnType) -> Convert:
    k = t.kind
    if k == "decimal":
        return _decimal_encoder(t)
    if k == "json":
        return _json_text
    if k == "interval":
        return _interval_text
    if k == "duration":
        return _duration_micros
    if k == "boolean":
        return bool
    if k in ("int", "long"):
        return int
    if k in ("float", "double"):
        return float
    if k == "uuid":
        if t.text_fallback:  # a plain string field: a UUID as its text, any other text as it is
            return lambda v: v if isinstance(v, str) else str(v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)))
        return lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
    if k in ("string", "enum"):
        return lambda v: v if isinstance(v, str) else str(v)
    if k == "bytes":
        return lambda v: bytes(v) if not isinstance(v, str) else v.encode()
    if k == "array":
        assert t.items is not None
        item = _encoder(t.items)
        native = _NATIVE.get(t.items.kind)
        return lambda v: [x if x is None or type(x) is native else item(x) for x in v]
    return _identity


def _encoder(t: ColumnType) -> Convert:
    """Python value → what fastavro writes for the column (a text-fallback ``str`` → the string branch)."""
    conv = _base_encoder(t)
    if not t.has_text_branch:
        return conv
    return lambda v: (_TEXT, v) if isinstance(v, str) else conv(v)


#: kinds whose Python value needs no conversion when it already has this exact type
_NATIVE: dict[str, type] = {
    "long": int,
    "int": int,
    "double": float,
    "float": float,
    "string": str,
    "enum": str,
    "json": str,
    "bytes": bytes,
    "boolean": bool,
    "uuid": uuid.UUID,
}


def _native(t: ColumnType) -> type | None:
    # a str in a text-fallback column is a fallback value: it needs its union branch
    if t.has_text_branch or (t.kind == "uuid" and t.text_fallback):
        return None
    return _NATIVE.get(t.kind)


def _json_number(text: str) -> float | decimal.Decimal:
    """A JSON number with a fraction or exponent: a float when the float prints back as the same text,
    else a Decimal (``1.0000000000000000001`` and ``1.50`` stay exact)."""
    f = float(text)
    return f if repr(f) == text else decimal.Decimal(text)


#: one decoder: ``json.loads`` with a keyword argument builds a new ``JSONDecoder`` (and scanner) per
#: call, which was most of the cost of decoding a short JSON column
_JSON_DECODER = json.JSONDecoder(parse_float=_json_number)


def _json_value(text: str) -> Any:
    """A JSON column's text as its value (``JSON_NULL`` for ``null``): ``json.loads(text,
    parse_float=_json_number)``, the same values and errors, with one decoder."""
    if type(text) is not str or text.startswith("\ufeff"):  # json.loads's own checks and errors
        v = json.loads(text, parse_float=_json_number)
    else:
        v = _JSON_DECODER.decode(text)
    return JSON_NULL if v is None else v


_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|NaN|-?Infinity")


def _decimal_or_text(v: str) -> decimal.Decimal | str:
    """A decimal's text as a Decimal: a plain number, ``NaN`` or ``±Infinity`` as databases print them.
    Any other text (a SQLite value that does not fit its column, travelling as its text) stays a str."""
    return decimal.Decimal(v) if _DECIMAL_TEXT.fullmatch(v) else v


def _uuid_or_text(v: str) -> uuid.UUID | str:
    try:
        return uuid.UUID(v)
    except ValueError:
        return v


def _str_or(conv: Convert) -> Convert:
    return lambda v: v if isinstance(v, str) else conv(v)


def _decoder_for(avro_type: Any) -> Convert | None:
    """Post-decoding conversion for an Avro field type (annotated kinds, text fallbacks)."""
    if isinstance(avro_type, list):
        inner = [t for t in avro_type if t != "null"]
        if len(inner) == 2 and inner[1] == "string":  # a text fallback: the string branch is a value already
            base = inner[0]
            if isinstance(base, dict) and base.get("logicalType") == "decimal":
                return lambda v: _decimal_or_text(v) if isinstance(v, str) else v
            conv = _decoder_for(base)
            return _str_or(conv) if conv is not None else None
        return _decoder_for(inner[0]) if len(inner) == 1 else None
    if not isinstance(avro_type, dict):
        return None
    kind = avro_type.get(KIND_PROP)
    if kind == "json":
        return _json_value
    if kind == "decimal":
        return _decimal_or_text
    if kind == "uuid":
        return _uuid_or_text
    if kind == "interval":
        return Interval.from_iso
    if kind in ("duration-micros", "interval-micros"):  # interval-micros: schemas written before 0.x
        return lambda v: dt.timedelta(microseconds=v)
    if avro_type.get("type") == "array":
        item = _decoder_for(avro_type.get("items"))
        if item is not None:
            return lambda v: v if isinstance(v, str) else [None if x is None else item(x) for x in v]
    return None


class RowCodec:
    """Encode/decode the rows of one schema version (optionally resolving to a reader schema)."""

    def __init__(self, version: SchemaVersion, reader_schema: dict[str, Any] | None = None) -> None:
        self.version = version
        self._writer = fastavro.parse_schema(version.schema)
        self._reader = fastavro.parse_schema(reader_schema) if reader_schema is not None else None
        self._enc: list[tuple[str, str, Convert, type | None]] = []
        self._fast_encode: Callable[[Mapping[str, Any]], bytes] | None = None
        if version.meta is not None:
            types = []
            for col, field in zip(version.meta.columns, version.schema["fields"], strict=True):
                self._enc.append((col.name, field["name"], _encoder(col.type), _native(col.type)))
                types.append(field["type"])
            # the hot path: a writer compiled for this schema; the fastavro path below is the reference
            # (a table without columns has nothing to encode with: the reference path refuses it)
            if self._enc:
                self._fast_encode = compile_writer(
                    [(col, t, conv, native) for (col, _n, conv, native), t in zip(self._enc, types, strict=True)]
                )
        out_schema = reader_schema if reader_schema is not None else version.schema
        self._dec: list[tuple[str, str, Convert | None]] = [
            (f["name"], f.get(COLUMN_PROP, f["name"]), _decoder_for(f["type"])) for f in out_schema["fields"]
        ]
        #: {marker kind: column name} of the relay's marker columns (see ``_schema.MARKER_PROP``)
        self.markers = marker_fields(out_schema)
        # most tables: Avro field names are the column names and fastavro's values need nothing more
        self._passthrough = all(name == col and conv is None for name, col, conv in self._dec)
        # the hot path: a reader compiled for the writer schema (schema resolution stays with fastavro)
        self._fast_decode: Callable[[bytes], dict[str, Any]] | None = None
        self._reader_fields: list[tuple[str, Any, str, Convert | None]] | None = None
        self._fast_decode_at: Callable[[bytes, int, int], dict[str, Any]] | None = None
        if reader_schema is None:
            self._reader_fields = [
                (f["name"], f["type"], col, conv)
                for f, (_n, col, conv) in zip(out_schema["fields"], self._dec, strict=True)
            ]
            self._fast_decode = compile_reader(self._reader_fields)

    def encode(self, row: Mapping[str, Any]) -> bytes:
        """Avro bytes of ``row`` ({SQL column: value}); a missing column encodes as null."""
        if self._fast_encode is not None:
            try:
                return self._fast_encode(row)
            except Exception:  # the reference path below gives the bytes or the error
                pass
        return self.encode_reference(row)

    def encode_reference(self, row: Mapping[str, Any]) -> bytes:
        """:meth:`encode` through fastavro's own writer (the reference the compiled writer must match)."""
        if not self._enc:
            raise ValueError("this codec has no table metadata to encode with")
        rec: dict[str, Any] = {}
        for col, name, conv, native in self._enc:
            v = row.get(col)
            if v is None or type(v) is native:
                rec[name] = v
                continue
            try:
                rec[name] = conv(v)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise UnrepresentableValue(self.version.table, col, f"{type(v).__name__} {_short(v)}: {exc}") from exc
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, self._writer, rec)
        except (ValueError, TypeError, ArithmeticError, OverflowError) as exc:
            raise UnrepresentableValue(self.version.table, self._culprit(rec), str(exc)) from exc
        return buf.getvalue()

    def _culprit(self, rec: dict[str, Any]) -> str:
        """The first column whose value alone does not encode (for the error message)."""
        for col, name, _conv, _native in self._enc:
            field = next(f for f in self.version.schema["fields"] if f["name"] == name)
            one = fastavro.parse_schema({"type": "record", "name": "one", "fields": [{**field, "name": "v"}]})
            try:
                fastavro.schemaless_writer(io.BytesIO(), one, {"v": rec.get(name)})
            except (ValueError, TypeError, ArithmeticError, OverflowError):
                return col
        return "?"

    def decode(self, data: bytes) -> dict[str, Any]:
        """``{SQL column: typed value}`` of an Avro row written with this version's schema."""
        if self._fast_decode is not None:
            try:
                return self._fast_decode(data)
            except Exception:  # the reference path below gives the values or the error
                pass
        return self.decode_reference(data)

    def reader_at(self) -> Callable[[bytes, int, int], dict[str, Any]] | None:
        """The compiled reader that decodes a row in place, ``read(buf, start, end)`` for the row
        ``buf[start:end]`` (see :func:`~._avrofast.compile_reader`), or None with a reader schema.
        Any exception it raises means: :meth:`decode_reference` of those bytes gives the values or the
        error. Compiled on first use (only subscribers decoding whole bodies ask for it)."""
        if self._fast_decode_at is None and self._reader_fields is not None:
            self._fast_decode_at = compile_reader(self._reader_fields, at=True)
        return self._fast_decode_at

    def decode_reference(self, data: bytes) -> dict[str, Any]:
        """:meth:`decode` through fastavro's own reader (the reference the compiled reader must match)."""
        rec = fastavro.schemaless_reader(io.BytesIO(data), self._writer, self._reader)
        assert isinstance(rec, dict)
        if self._passthrough:
            return rec
        out: dict[str, Any] = {}
        for name, col, conv in self._dec:
            v = rec.get(name)
            out[col] = conv(v) if conv is not None and v is not None else v
        return out


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


@dataclass(frozen=True, slots=True)
class EncodedWindow:
    """A window as the buffer holds it: its frames back to back."""

    scn: int
    first_scn: int
    ts_ms: int
    count: int
    data: bytes
    tables: frozenset[str]


class Codecs:
    """A cache of encoders by schema fingerprint, registering schemas as tables change."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._by_fp: dict[str, RowCodec] = {}
        self._table_sets: dict[frozenset[str], frozenset[str]] = {}  # shared, so windows do not each hold one
        self._last: tuple[TableMeta, RowCodec] | None = None

    def table_set(self, tables: set[str]) -> frozenset[str]:
        key = frozenset(tables)
        return self._table_sets.setdefault(key, key)

    def for_change(self, change: RowChange) -> RowCodec:
        meta = change.table
        last = self._last
        if last is not None and last[0] is meta:  # the same table as the change before: most changes
            return last[1]
        sv = self.registry.register(meta)
        codec = self._by_fp.get(sv.fingerprint)
        if codec is None or codec.version.meta is not sv.meta:
            codec = self._by_fp[sv.fingerprint] = RowCodec(sv)
        # the registry answers the same TableMeta object with the same version (it holds the object)
        self._last = (meta, codec)
        return codec

    def encode_change(self, change: RowChange) -> tuple[SchemaVersion, bytes | None, bytes | None]:
        """The schema version of ``change`` and its before/after images encoded with it.

        The one place a change's images are encoded; a subclass may override it to decide what an
        unencodable value does (the relay's ``on_unrepresentable`` policy).
        """
        codec = self.for_change(change)
        before = codec.encode(change.before) if change.before is not None else None
        after = codec.encode(change.after) if change.after is not None else None
        return codec.version, before, after


def _old_key(change: RowChange, key: bytes) -> bytes | None:
    """The encoded key of an UPDATE's old row when the update changed the key ``key`` (else None)."""
    before = change.before
    if change.op is not Op.UPDATE or before is None or not change.table.key:
        return None
    if any(k not in before for k in change.table.key):
        return None
    old = encode_key([before[k] for k in change.table.key])
    return old if old != key else None


def _frames(window: ChangeWindow, codecs: Codecs) -> Iterator[tuple[RowChange, bytes]]:
    it = iter(window.changes)
    prev = next(it, None)
    encode_change = codecs.encode_change
    while prev is not None:
        nxt = next(it, None)
        version, before, after = encode_change(prev)
        ts_ms = window.ts_ms if prev.ts_ms is None else prev.ts_ms
        key = encode_key(prev.key)
        old_key = _old_key(prev, key)
        source = prev.table.name
        if old_key is not None:
            # an update that moved a row to another key: the old key is deleted first, so a copy kept
            # by key (a snapshot store, a partitioned subscriber) does not keep the old row
            yield prev, encode_frame(prev.scn, source, Op.DELETE, old_key, ts_ms, version.fingerprint, before, None)
        yield prev, encode_frame(prev.scn, source, prev.op, key, ts_ms, version.fingerprint, before, after, nxt is None)
        prev = nxt


def encode_window(window: ChangeWindow, codecs: Codecs, limit: int | None = None) -> EncodedWindow | None:
    """Encode every change of ``window`` into frames; None for an empty window.

    When the frames would exceed ``limit`` bytes the window is still drained (the source needs
    that) but its data is dropped: the result has ``count`` set and empty ``data``, and the caller
    treats it as a gap.

    One pass, each frame packed straight into the window's buffer (:func:`~._event.append_frame`);
    :func:`encode_window_reference` is the same, frame by frame.
    """
    # One growing buffer, not a list of small bytes objects: per-object overhead made a window of
    # narrow rows take about 4x its encoded size while it was being built.
    buf = bytearray()
    size = count = 0
    first = window.scn
    tables: set[str] = set()
    last_meta = None
    encode_change = codecs.encode_change
    it = iter(window.changes)
    change = next(it, None)
    while change is not None:
        nxt = next(it, None)
        version, before, after = encode_change(change)
        meta = change.table
        if meta is not last_meta:
            last_meta = meta
            tables.add(meta.name)
        ts_ms = window.ts_ms if change.ts_ms is None else change.ts_ms
        key = encode_key(change.key)
        old_key = _old_key(change, key) if change.op is Op.UPDATE else None
        if count == 0:
            first = change.scn
        if old_key is not None:
            # an update that moved a row to another key: the old key is deleted first, so a copy kept
            # by key (a snapshot store, a partitioned subscriber) does not keep the old row
            count += 1
            mark = len(buf)
            append_frame(buf, change.scn, meta.name, Op.DELETE, old_key, ts_ms, version.fingerprint, before, None)
            size += len(buf) - mark
            if limit is not None and size > limit:
                buf = bytearray()
                limit = -1  # over: drain the rest without keeping frames
        count += 1
        mark = len(buf)
        append_frame(buf, change.scn, meta.name, change.op, key, ts_ms, version.fingerprint, before, after, nxt is None)
        size += len(buf) - mark
        if limit is not None and size > limit:
            buf = bytearray()
            limit = -1
        change = nxt
    if count == 0:
        return None
    data = bytes(buf)
    del buf
    return EncodedWindow(window.scn, first, window.ts_ms, count, data, codecs.table_set(tables))


def encode_window_reference(window: ChangeWindow, codecs: Codecs, limit: int | None = None) -> EncodedWindow | None:
    """:func:`encode_window` frame by frame through :func:`~._event.encode_frame` (the reference the
    one-pass loop must match byte for byte)."""
    # One growing buffer, not a list of small bytes objects: per-object overhead made a window of
    # narrow rows take about 4x its encoded size while it was being built.
    buf = bytearray()
    size = count = 0
    first = window.scn
    tables: set[str] = set()
    for change, frame in _frames(window, codecs):
        if count == 0:
            first = change.scn
        count += 1
        size += len(frame)
        tables.add(change.table.name)
        if limit is None or size <= limit:
            buf += frame
        elif buf:
            buf = bytearray()
    if count == 0:
        return None
    data = bytes(buf)
    del buf
    return EncodedWindow(window.scn, first, window.ts_ms, count, data, codecs.table_set(tables))
