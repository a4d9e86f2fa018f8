"""Row schemas (Avro, as the relay serves them) → Arrow columns a Delta table holds, and value converters (sans-io).

Delta Lake's types are Arrow's minus a few: no time of day, no interval, no unsigned integers, no
JSON, no decimal wider than 38 digits. So (docs/sinks.md): ``time`` → its ISO text; ``interval``
and ``duration`` → ISO 8601 text; JSON and arrays → JSON text; ``uuid`` and unconstrained decimals
→ text; ``timestamptz`` → ``timestamp[us, UTC]``; ``timestamp`` → ``timestamp[us]`` (Delta's
``timestamp_ntz``). A *text-fallback* value (the database's own text for a value its kind cannot
hold, e.g. PostgreSQL ``infinity``) in a typed column becomes null (the sink logs nothing per value;
see the limits in docs/sinks.md).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .._typemap import COLUMN_PROP, KIND_PROP
from ._sqltypes import json_text

__all__ = ["LakeColumn", "lake_columns"]

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class LakeColumn:
    """One lake column: name, Arrow type, and the converter of its values (None: as is)."""

    name: str
    type: pa.DataType
    convert: Convert | None = None


def _text(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, dt.time | dt.date | dt.datetime):
        return v.isoformat()
    return str(v)


def _json(v: Any) -> Any:
    return None if v is None else json_text(v)


def _typed(*kinds: type) -> Convert:
    """Values of ``kinds`` as they are; anything else (a text fallback) becomes null."""

    def conv(v: Any) -> Any:
        return v if isinstance(v, kinds) else None

    return conv


def _branch(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        inner = [t for t in avro_type if t != "null"]
        return inner[0] if inner else "string"
    return avro_type


def _column_type(avro_type: Any) -> tuple[pa.DataType, Convert | None]:
    t = _branch(avro_type)
    if isinstance(t, str):
        simple: dict[str, tuple[pa.DataType, Convert | None]] = {
            "boolean": (pa.bool_(), _typed(bool)),
            "int": (pa.int32(), _typed(int)),
            "long": (pa.int64(), _typed(int)),
            "float": (pa.float32(), _typed(float, int)),
            "double": (pa.float64(), _typed(float, int)),
            "string": (pa.string(), _text),
            "bytes": (pa.binary(), _typed(bytes)),
        }
        return simple.get(t, (pa.string(), _text))
    kind = t.get(KIND_PROP)
    logical = t.get("logicalType")
    if logical == "decimal":
        p, s = int(t["precision"]), int(t.get("scale", 0))
        if p <= 38:
            return pa.decimal128(p, s), _typed(decimal.Decimal)
        return pa.string(), _text
    if logical == "date":
        return pa.date32(), _typed(dt.date)
    if logical == "local-timestamp-micros":
        return pa.timestamp("us"), _typed(dt.datetime)
    if logical == "timestamp-micros":
        return pa.timestamp("us", tz="UTC"), _typed(dt.datetime)
    if logical == "uuid" or kind == "uuid":
        return pa.string(), lambda v: str(v) if isinstance(v, uuid.UUID) else _text(v)
    if kind == "json" or t.get("type") == "array":
        return pa.string(), _json
    if logical == "time-micros" or kind in ("decimal", "interval", "interval-micros", "duration-micros", "enum"):
        return pa.string(), _text
    base = t.get("type")
    if isinstance(base, str):
        return _column_type(base)
    return pa.string(), _text


def lake_columns(schema: dict[str, Any]) -> list[LakeColumn]:
    """The lake columns of a row schema (Avro record, as served by ``/v1/schemas``), in order."""
    out = []
    for f in schema["fields"]:
        typ, conv = _column_type(f["type"])
        out.append(LakeColumn(f.get(COLUMN_PROP, f["name"]), typ, conv))
    return out
