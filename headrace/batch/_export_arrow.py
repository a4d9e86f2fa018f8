"""Database rows → Arrow record batches, and the export manifest (sans-io: values in, values out).

The Arrow type of a column comes from its logical kind (``headrace.relay.ColumnType``, the same
mapping of SQL types the relay uses, see docs/type-mapping.md):

==============  =============================  ==============================================
kind            Arrow type                     values
==============  =============================  ==============================================
boolean         bool
int / long      int32 / int64
float / double  float32 / float64
decimal(p, s)   decimal128(p, s) (p ≤ 38)      decimal without precision, or p > 38: string
string, enum    string
bytes           binary
date            date32
time            time64[us]
timestamp       timestamp[us]                  timestamptz: timestamp[us, UTC]
uuid            string                         canonical 8-4-4-4-12 text
json            string                         JSON text
interval        duration[us]
array           list<item>
==============  =============================  ==============================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .._typemap import ColumnType, TableMeta

__all__ = [
    "WATERMARK_KINDS",
    "ExportManifest",
    "arrow_schema",
    "arrow_type",
    "from_watermark",
    "rows_to_batch",
    "to_watermark",
]

Convert = Callable[[Any], Any]


def arrow_type(t: ColumnType) -> pa.DataType:
    """The Arrow type of a column of logical type ``t`` (see the module docstring)."""
    k = t.kind
    if k == "boolean":
        return pa.bool_()
    if k == "int":
        return pa.int32()
    if k == "long":
        return pa.int64()
    if k == "float":
        return pa.float32()
    if k == "double":
        return pa.float64()
    if k == "decimal":
        if t.precision is not None and 0 < t.precision <= 38:
            return pa.decimal128(t.precision, t.scale or 0)
        return pa.string()
    if k == "bytes":
        return pa.binary()
    if k == "date":
        return pa.date32()
    if k == "time":
        return pa.time64("us")
    if k == "timestamp":
        return pa.timestamp("us")
    if k == "timestamptz":
        return pa.timestamp("us", tz="UTC")
    if k in ("interval", "duration"):
        return pa.duration("us")
    if k == "array":
        assert t.items is not None
        return pa.list_(arrow_type(t.items))
    return pa.string()  # string, enum, uuid, json


def arrow_schema(meta: TableMeta) -> pa.Schema:
    """The Arrow schema of an exported table: one field per column, in table order."""
    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in meta.columns])


def _json_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=str)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else str(v)


def _decimal_text(v: Any) -> str:
    """A number as positional text, as the database writes it (``0.0000000000``, not ``0E-10``); a
    float (SQLite's REAL in a NUMERIC column) as the shortest text that reads back as the same double."""
    if isinstance(v, float):
        v = decimal.Decimal(repr(v))
    if isinstance(v, decimal.Decimal):
        return format(v, "f") if v.is_finite() else str(v)
    return _text(v)


def _converter(t: ColumnType, at: pa.DataType) -> Convert | None:
    """A per-value conversion for values the driver returns in a form Arrow does not take as is."""
    if t.kind == "json":
        return _json_text
    if t.kind == "decimal" and pa.types.is_string(at):
        return _decimal_text
    if t.kind == "uuid":
        return _text
    if t.kind in ("string", "enum"):
        return _text  # a driver may hand back enums or other text-like objects
    if t.kind == "decimal":
        return lambda v: v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))
    if t.kind in ("float", "double"):
        return float  # SQLAlchemy's MySQL DOUBLE hands back Decimal (asdecimal) by default
    if t.kind == "array":
        assert t.items is not None and pa.types.is_list(at)
        item = _converter(t.items, at.value_type)
        if item is not None:
            return lambda v: [None if x is None else item(x) for x in v]
    return None


def rows_to_batch(meta: TableMeta, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """A record batch of ``rows`` (tuples in column order) with :func:`arrow_schema` of ``meta``.

    Raises ValueError naming the column when a value does not fit its column's type.
    """
    schema = arrow_schema(meta)
    arrays = []
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in meta.columns]
    for values, col, fld in zip(columns, meta.columns, schema, strict=True):
        conv = _converter(col.type, fld.type)
        try:
            if conv is not None and col.type.kind in _DIRECT_FIRST:
                try:  # the driver's values usually fit as they are: convert only when they do not
                    arrays.append(pa.array(values, type=fld.type))
                    continue
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                    pass
            if conv is not None:
                values = tuple(None if v is None else conv(v) for v in values)
            arrays.append(pa.array(values, type=fld.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"column {col.name!r} ({col.type.kind}): a value does not fit {fld.type}: {exc}") from exc
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


#: kinds whose driver values Arrow usually takes as they are (str, Decimal, float): tried before converting
_DIRECT_FIRST = frozenset({"string", "enum", "decimal", "float", "double"})


@dataclass
class ExportManifest:
    """``table=T/MANIFEST.json``: the committed files of one table's export (the commit point).

    ``exports`` lists the export folders in order, each with its files and rows; a full export has
    one, an incremental one an entry per run. ``watermark`` is the incremental column's largest
    exported value (JSON text form), ``None`` before the first increment.
    """

    table: str
    mode: str  # "full" or "incremental"
    columns: list[str]
    exports: list[dict[str, Any]] = field(default_factory=list)
    watermark: Any = None
    incremental_column: str | None = None

    @property
    def rows(self) -> int:
        return sum(int(e["rows"]) for e in self.exports)

    @property
    def files(self) -> list[str]:
        """The data files, relative to ``table=T/``."""
        return [f"{e['name']}/{f}" for e in self.exports for f in e["files"]]

    def to_bytes(self) -> bytes:
        doc = {
            "table": self.table,
            "mode": self.mode,
            "columns": self.columns,
            "incremental_column": self.incremental_column,
            "watermark": self.watermark,
            "rows": self.rows,
            "exports": self.exports,
        }
        return json.dumps(doc, indent=1, default=str).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ExportManifest:
        doc = json.loads(data)
        return cls(
            table=doc["table"],
            mode=doc["mode"],
            columns=list(doc["columns"]),
            exports=list(doc["exports"]),
            watermark=doc.get("watermark"),
            incremental_column=doc.get("incremental_column"),
        )


#: kinds an incremental column may have: values that only grow as rows are added
WATERMARK_KINDS = ("int", "long", "decimal", "date", "timestamp", "timestamptz", "string")


def to_watermark(v: Any) -> Any:
    """The JSON form of an incremental column's value (integers stay integers; others become text)."""
    if v is None or isinstance(v, int | str):
        return v
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dt.date):  # dates and datetimes
        return v.isoformat()
    raise ValueError(f"cannot keep a watermark of type {type(v).__name__}")


def from_watermark(kind: str, v: Any) -> Any:
    """The typed value of a watermark saved by :func:`to_watermark`, for a column of ``kind``."""
    if v is None or kind in ("int", "long", "string"):
        return v
    if kind == "decimal":
        return decimal.Decimal(v)
    if kind == "date":
        return dt.date.fromisoformat(v)
    if kind in ("timestamp", "timestamptz"):
        return dt.datetime.fromisoformat(v)
    raise ValueError(f"a {kind} column cannot be an incremental column")
