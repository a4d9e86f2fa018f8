"""Row schemas (Avro, as the relay serves them) → replica column types and value converters (sans-io).

The mapping follows docs/type-mapping.md backwards: each field's Avro type (with its logical type or
``headrace.type``) names the source column's kind, and the kind picks a SQLAlchemy type. Values a
target cannot take as they are get a converter: intervals travel as their ISO 8601 text, JSON as
JSON (a JSON ``null`` stays a JSON null, SQL NULL stays NULL), arrays as JSON outside PostgreSQL.
A text-fallback value (the database's own text for a value the kind cannot hold, e.g. PostgreSQL's
``infinity``) is written as that text: PostgreSQL reads most of them back into the column's type;
other targets may refuse them (see docs/sinks.md, limits).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .._typemap import COLUMN_PROP, KIND_PROP
from ..relay import JSON_NULL, Interval

__all__ = ["ReplicaColumn", "replica_columns"]

Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class ReplicaColumn:
    """One replica column: SQL name, SQLAlchemy type, and the converter of its values (None: as is)."""

    name: str
    type: sa.types.TypeEngine[Any]
    convert: Convert | None = None


def _json_default(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return float(v) if v == v.to_integral_value() or abs(v.adjusted()) < 15 else str(v)
    if v is JSON_NULL:
        return None
    if isinstance(v, bytes | bytearray):
        return v.hex()
    if isinstance(v, dt.date | dt.time | dt.datetime):
        return v.isoformat()
    return str(v)


def json_text(v: Any) -> str:
    """JSON text of a decoded JSON value (decimals as numbers where a float holds them)."""
    return json.dumps(v, default=_json_default, ensure_ascii=False)


def _json_value(v: Any) -> Any:
    if v is None:
        return None
    if v is JSON_NULL:
        return sa.JSON.NULL
    return json.loads(json_text(v))  # plain JSON values (decimals → numbers) the driver's json encoder takes


def _interval(v: Any) -> Any:
    return str(v) if isinstance(v, Interval) else v


def _array_json(v: Any) -> Any:
    return None if v is None else json.loads(json_text(v))


def _branch(avro_type: Any) -> Any:
    """The value branch of a field type (drops ``null`` and a text-fallback ``string`` branch)."""
    if isinstance(avro_type, list):
        inner = [t for t in avro_type if t != "null"]
        return inner[0] if inner else "string"
    return avro_type


def _column_type(avro_type: Any, dialect: str) -> tuple[sa.types.TypeEngine[Any], Convert | None]:
    t = _branch(avro_type)
    if isinstance(t, str):
        simple: dict[str, sa.types.TypeEngine[Any]] = {
            "boolean": sa.Boolean(),
            "int": sa.Integer(),
            "long": sa.BigInteger(),
            "float": sa.Float(),
            "double": sa.Double(),
            "string": sa.Text(),
            "bytes": sa.LargeBinary(),
        }
        return simple.get(t, sa.Text()), None
    kind = t.get(KIND_PROP)
    logical = t.get("logicalType")
    if logical == "decimal":
        return sa.Numeric(int(t["precision"]), int(t.get("scale", 0)), asdecimal=True), None
    if logical == "date":
        return sa.Date(), None
    if logical == "time-micros":
        return sa.Time(), None
    if logical == "local-timestamp-micros":
        return sa.DateTime(), None
    if logical == "timestamp-micros":
        return sa.DateTime(timezone=True), None
    if logical == "uuid" or kind == "uuid":
        return sa.Uuid(as_uuid=True), None
    if kind == "json":
        return sa.JSON(none_as_null=True), _json_value
    if kind == "decimal":  # exact decimal text without fixed precision (PostgreSQL numeric)
        if dialect == "postgresql":
            return sa.Numeric(asdecimal=True), None
        return sa.Text(), lambda v: None if v is None else str(v)
    if kind in ("interval", "interval-micros"):
        return sa.Text(), _interval
    if kind == "duration-micros":
        return sa.Interval(), None
    if kind == "enum":
        return sa.Text(), None
    if t.get("type") == "array":
        if dialect == "postgresql":
            item, conv = _column_type(t["items"], dialect)
            if conv is None and not isinstance(item, sa.JSON):
                return sa.ARRAY(item), None
        return sa.JSON(none_as_null=True), _array_json
    base = t.get("type")
    if isinstance(base, str):
        return _column_type(base, dialect)
    return sa.Text(), None


def replica_columns(schema: dict[str, Any], dialect: str) -> list[ReplicaColumn]:
    """The replica columns of a row schema (Avro record, as served by ``/v1/schemas``), in order."""
    out = []
    for f in schema["fields"]:
        typ, conv = _column_type(f["type"], dialect)
        out.append(ReplicaColumn(f.get(COLUMN_PROP, f["name"]), typ, conv))
    return out
