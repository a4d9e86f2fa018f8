"""Avro encoding of row images, done once when the relay takes a window in (sans-io).

:class:`RowCodec` turns ``{column: Python value}`` into schemaless Avro bytes for one schema version
and back, optionally resolving to a reader schema the application gives (Avro schema resolution:
added fields take their defaults, removed ones are skipped). Kinds Avro has no logical type for
travel as annotated primitives (``headrace.type``: JSON and unscaled decimals as strings, intervals
as microseconds) and are turned back into Python values on decoding.

:func:`encode_window` encodes a source's :class:`ChangeWindow` into event frames.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from ._event import Event, encode_event, encode_key
from ._schema import COLUMN_PROP, KIND_PROP, ColumnType, SchemaRegistry, SchemaVersion
from .sources._base import ChangeWindow, RowChange

__all__ = ["Codecs", "EncodedWindow", "RowCodec", "encode_window"]

Convert = Callable[[Any], Any]


def _identity(v: Any) -> Any:
    return v


def _to_decimal(v: Any) -> decimal.Decimal:
    return v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _encoder(t: ColumnType) -> Convert:
    k = t.kind
    if k == "decimal":
        if t.scale is not None and t.precision is not None:
            q = decimal.Decimal(1).scaleb(-t.scale)
            return lambda v: _to_decimal(v).quantize(q)
        return lambda v: str(_to_decimal(v))
    if k == "json":
        return _JSON_ENCODER.encode
    if k == "interval":
        return lambda v: v // dt.timedelta(microseconds=1) if isinstance(v, dt.timedelta) else int(v)
    if k == "boolean":
        return bool
    if k in ("int", "long"):
        return int
    if k in ("float", "double"):
        return float
    if k == "uuid":
        return lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
    if k in ("string", "enum"):
        return lambda v: v if isinstance(v, str) else str(v)
    if k == "bytes":
        return lambda v: bytes(v) if not isinstance(v, str) else v.encode()
    if k == "array":
        assert t.items is not None
        item = _encoder(t.items)
        return lambda v: [None if x is None else item(x) for x in v]
    return _identity


#: kinds whose Python value needs no conversion when it already has this exact type
_NATIVE: dict[str, type] = {
    "long": int,
    "int": int,
    "double": float,
    "float": float,
    "string": str,
    "enum": str,
    "bytes": bytes,
    "boolean": bool,
    "uuid": uuid.UUID,
}


def _decoder_for(avro_type: Any) -> Convert | None:
    """Post-decoding conversion for an Avro field type carrying a ``headrace.type`` annotation."""
    if isinstance(avro_type, list):
        inner = [t for t in avro_type if t != "null"]
        return _decoder_for(inner[0]) if len(inner) == 1 else None
    if not isinstance(avro_type, dict):
        return None
    kind = avro_type.get(KIND_PROP)
    if kind == "json":
        return json.loads
    if kind == "decimal":
        return decimal.Decimal
    if kind == "interval-micros":
        return lambda v: dt.timedelta(microseconds=v)
    if avro_type.get("type") == "array":
        item = _decoder_for(avro_type.get("items"))
        if item is not None:
            return lambda v: [None if x is None else item(x) for x in v]
    return None


class RowCodec:
    """Encode/decode the rows of one schema version (optionally resolving to a reader schema)."""

    def __init__(self, version: SchemaVersion, reader_schema: dict[str, Any] | None = None) -> None:
        self.version = version
        self._writer = fastavro.parse_schema(version.schema)
        self._reader = fastavro.parse_schema(reader_schema) if reader_schema is not None else None
        self._enc: list[tuple[str, str, Convert, type | None]] = []
        if version.meta is not None:
            for col, field in zip(version.meta.columns, version.schema["fields"], strict=True):
                self._enc.append((col.name, field["name"], _encoder(col.type), _NATIVE.get(col.type.kind)))
        out_schema = reader_schema if reader_schema is not None else version.schema
        self._dec: list[tuple[str, str, Convert | None]] = [
            (f["name"], f.get(COLUMN_PROP, f["name"]), _decoder_for(f["type"])) for f in out_schema["fields"]
        ]
        # most tables: Avro field names are the column names and fastavro's values need nothing more
        self._passthrough = all(name == col and conv is None for name, col, conv in self._dec)

    def encode(self, row: Mapping[str, Any]) -> bytes:
        """Avro bytes of ``row`` ({SQL column: value}); a missing column encodes as null."""
        if not self._enc:
            raise ValueError("this codec has no table metadata to encode with")
        rec: dict[str, Any] = {}
        for col, name, conv, native in self._enc:
            v = row.get(col)
            rec[name] = v if v is None or type(v) is native else conv(v)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self._writer, rec)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """``{SQL column: typed value}`` of an Avro row written with this version's schema."""
        rec = fastavro.schemaless_reader(io.BytesIO(data), self._writer, self._reader)
        assert isinstance(rec, dict)
        if self._passthrough:
            return rec
        out: dict[str, Any] = {}
        for name, col, conv in self._dec:
            v = rec.get(name)
            out[col] = conv(v) if conv is not None and v is not None else v
        return out


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

    def table_set(self, tables: set[str]) -> frozenset[str]:
        key = frozenset(tables)
        return self._table_sets.setdefault(key, key)

    def for_change(self, change: RowChange) -> RowCodec:
        sv = self.registry.register(change.table)
        codec = self._by_fp.get(sv.fingerprint)
        if codec is None or codec.version.meta is not sv.meta:
            codec = self._by_fp[sv.fingerprint] = RowCodec(sv)
        return codec


def _frames(window: ChangeWindow, codecs: Codecs) -> Iterator[tuple[RowChange, bytes]]:
    it = iter(window.changes)
    prev = next(it, None)
    while prev is not None:
        nxt = next(it, None)
        codec = codecs.for_change(prev)
        ev = Event(
            scn=prev.scn,
            source=prev.table.name,
            op=prev.op,
            key=encode_key(prev.key),
            ts_ms=window.ts_ms if prev.ts_ms is None else prev.ts_ms,
            fingerprint=codec.version.fingerprint,
            before=codec.encode(prev.before) if prev.before is not None else None,
            after=codec.encode(prev.after) if prev.after is not None else None,
            window_end=nxt is None,
        )
        yield prev, encode_event(ev)
        prev = nxt


def encode_window(window: ChangeWindow, codecs: Codecs, limit: int | None = None) -> EncodedWindow | None:
    """Encode every change of ``window`` into frames; None for an empty window.

    When the frames would exceed ``limit`` bytes the window is still drained (the source needs
    that) but its data is dropped: the result has ``count`` set and empty ``data``, and the caller
    treats it as a gap.
    """
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
