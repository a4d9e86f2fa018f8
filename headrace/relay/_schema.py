"""Row schemas: SQL column metadata → Avro record schema, fingerprints, and a versioned registry.

Sans-io except for :class:`SchemaRegistry`'s optional directory persistence. A source describes each
table as a :class:`TableMeta` (columns with a :class:`ColumnType` *kind*, nullability, key columns),
built from SQLAlchemy reflection (:func:`table_meta_from_sqlalchemy`) or from the decoder's own
metadata (PostgreSQL relation messages, MySQL ``information_schema``). :func:`avro_schema` maps it
to an Avro record; the mapping table is in ``docs/type-mapping.md``.

A schema's fingerprint is the CRC-64-AVRO of its parsing canonical form, as 16 hex digits (the id
of Avro single-object encoding). The registry gives each table's distinct schemas increasing
version numbers; when it has a directory it writes each new schema there atomically, so a
restarted relay still serves the schemas of events it wrote before.

Resume-state contract: ``<dir>/<fingerprint>.json`` per schema, written once (temp + fsync +
rename) before any event that uses it is encoded; nothing else is saved.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as _avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from .._atomic import write_atomic
from .._logging import get_logger

__all__ = [
    "KINDS",
    "MARKER_NAMES",
    "MARKER_PROP",
    "UNCHANGED_MARKER",
    "UNREPRESENTABLE_MARKER",
    "Column",
    "ColumnType",
    "SchemaRegistry",
    "SchemaVersion",
    "TableMeta",
    "avro_name",
    "avro_schema",
    "column_type_from_sqlalchemy",
    "marker_fields",
    "schema_fingerprint",
    "source_listing",
    "table_meta_from_sqlalchemy",
]

log = get_logger("relay.schema")

#: The logical column kinds a source may use (see docs/type-mapping.md).
KINDS = frozenset(
    {
        "boolean",
        "int",
        "long",
        "float",
        "double",
        "decimal",
        "string",
        "bytes",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "uuid",
        "json",
        "interval",
        "duration",
        "enum",
        "array",
    }
)

#: kinds whose Avro type is already ``string`` (a text fallback adds nothing to them)
_TEXT_KINDS = frozenset({"string", "json", "interval", "enum", "uuid"})

#: Avro property naming the headrace kind where Avro has no logical type for it.
KIND_PROP = "headrace.type"
#: Avro property holding the SQL column name when it is not a valid Avro name.
COLUMN_PROP = "headrace.column"
#: Avro property marking a column the relay adds to say something about a row's values (its value: the
#: marker's kind, :data:`UNCHANGED_MARKER` or :data:`UNREPRESENTABLE_MARKER`). Consumers find a marker
#: by this property, never by its name: a user column may have any name.
MARKER_PROP = "headrace.marker"
#: PostgreSQL: columns of ``after`` whose TOASTed value an UPDATE left alone (not sent; null in the row)
UNCHANGED_MARKER = "unchanged"
#: columns set to null because the relay could not represent their value (``on_unrepresentable``)
UNREPRESENTABLE_MARKER = "unrepresentable"
#: each marker's preferred column name; ``_2``, ``_3`` … is added when a table has a column of that name
MARKER_NAMES = {UNCHANGED_MARKER: "_headrace_unchanged", UNREPRESENTABLE_MARKER: "_headrace_unrepresentable"}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """A column's logical type: a kind from :data:`KINDS` plus its parameters."""

    kind: str
    precision: int | None = None  # decimal
    scale: int | None = None  # decimal
    items: ColumnType | None = None  # array element type
    symbols: tuple[str, ...] = ()  # enum labels (informational; enums travel as strings)
    #: values the kind's Python type cannot hold travel as the database's own text (a ``string``
    #: branch in the Avro union); see docs/type-mapping.md
    text_fallback: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")
        if self.kind == "array" and self.items is None:
            raise ValueError("an array column needs an item type")

    @property
    def has_text_branch(self) -> bool:
        """Whether the Avro type has a separate ``string`` branch for text-fallback values."""
        return self.text_fallback and self.kind not in _TEXT_KINDS and not self.unscaled_decimal

    @property
    def unscaled_decimal(self) -> bool:
        """A decimal without fixed precision and scale: it travels as its exact text."""
        return self.kind == "decimal" and (self.precision is None or self.scale is None)


@dataclass(frozen=True, slots=True)
class Column:
    """One column: SQL name, logical type, nullability."""

    name: str
    type: ColumnType
    nullable: bool = True
    #: set on a column the relay adds (an array of column names): :data:`UNCHANGED_MARKER` or
    #: :data:`UNREPRESENTABLE_MARKER`
    marker: str | None = None


@dataclass(frozen=True, slots=True)
class TableMeta:
    """A table as a source sees it now: columns in order and the key columns.

    ``key`` names the primary-key columns. A table without one gets a source-defined key (SQLite:
    ``rowid``), which the source lists here too, with a column of its own if the row lacks it.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    namespace: str = "headrace.tables"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def marker_column(self, kind: str) -> str | None:
        """The name of the marker column of ``kind`` (see :data:`MARKER_PROP`), if the table has one."""
        for c in self.columns:
            if c.marker == kind:
                return c.name
        return None

    def with_marker(self, kind: str) -> tuple[TableMeta, str]:
        """This table with a marker column of ``kind`` added (if it has none yet), and that column's name:
        :data:`MARKER_NAMES`'s name, suffixed ``_2``, ``_3`` … past any column the table already has."""
        have = self.marker_column(kind)
        if have is not None:
            return self, have
        taken = {c.name for c in self.columns}
        base = name = MARKER_NAMES[kind]
        i = 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        extra = Column(name, ColumnType("array", items=ColumnType("string")), True, marker=kind)
        return TableMeta(self.name, (*self.columns, extra), self.key, self.namespace), name


def marker_fields(schema: dict[str, Any]) -> dict[str, str]:
    """``{marker kind: column name}`` of an Avro row schema's marker columns (see :data:`MARKER_PROP`)."""
    out = {}
    for f in schema.get("fields", ()):
        kind = f.get(MARKER_PROP)
        if kind is not None:
            out[str(kind)] = str(f.get(COLUMN_PROP, f["name"]))
    return out


_NAME_RE = re.compile(r"[^A-Za-z0-9_]")


def avro_name(name: str) -> str:
    """A valid Avro name for a SQL identifier (invalid characters → ``_``, a leading digit → ``_``)."""
    out = _NAME_RE.sub("_", name) or "_"
    return "_" + out if out[0].isdigit() else out


def _avro_type(t: ColumnType) -> Any:
    k = t.kind
    if k in ("boolean", "int", "long", "float", "double", "string", "bytes"):
        return k
    if k == "decimal":
        if not t.unscaled_decimal:
            return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}
        return {"type": "string", KIND_PROP: "decimal"}
    if k == "date":
        return {"type": "int", "logicalType": "date"}
    if k == "time":
        return {"type": "long", "logicalType": "time-micros"}
    if k == "timestamp":
        return {"type": "long", "logicalType": "local-timestamp-micros"}
    if k == "timestamptz":
        return {"type": "long", "logicalType": "timestamp-micros"}
    if k == "uuid":
        # with a text fallback any text may travel, which the uuid logical type would refuse to read
        return {"type": "string", KIND_PROP: "uuid"} if t.text_fallback else {"type": "string", "logicalType": "uuid"}
    if k == "json":
        return {"type": "string", KIND_PROP: "json"}
    if k == "interval":
        return {"type": "string", KIND_PROP: "interval"}
    if k == "duration":
        return {"type": "long", KIND_PROP: "duration-micros"}
    if k == "enum":
        return {"type": "string", KIND_PROP: "enum"}
    assert t.items is not None
    return {"type": "array", "items": _field_type(t.items, nullable=True)}


def _field_type(t: ColumnType, nullable: bool) -> Any:
    """``T``, ``["null", T]``, or with a text fallback ``[T, "string"]`` / ``["null", T, "string"]``."""
    branches = ["null"] if nullable else []
    branches.append(_avro_type(t))
    if t.has_text_branch:
        branches.append("string")
    return branches[0] if len(branches) == 1 else branches


def _unique_names(columns: Sequence[str]) -> list[str]:
    """Avro field names for SQL column names: sanitised, then made unique (``a_b``, ``a_b_2`` …)."""
    names = [avro_name(c) for c in columns]
    taken = set()
    exact = set(names) & set(columns)  # a column already named validly keeps its name
    out = []
    for col, name in zip(columns, names, strict=True):
        if name in taken or (name != col and name in exact):
            i = 2
            while f"{name}_{i}" in taken or f"{name}_{i}" in exact:
                i += 1
            name = f"{name}_{i}"
        taken.add(name)
        out.append(name)
    return out


def avro_schema(meta: TableMeta) -> dict[str, Any]:
    """The Avro record schema of a table's rows (nullable columns are ``["null", T]`` with default null)."""
    fields: list[dict[str, Any]] = []
    names = _unique_names([c.name for c in meta.columns])
    for c, name in zip(meta.columns, names, strict=True):
        f: dict[str, Any] = {"name": name, "type": _field_type(c.type, c.nullable)}
        if c.nullable:
            f["default"] = None
        if name != c.name:
            f[COLUMN_PROP] = c.name
        if c.marker is not None:
            f[MARKER_PROP] = c.marker
        fields.append(f)
    return {"type": "record", "name": avro_name(meta.name), "namespace": meta.namespace, "fields": fields}


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """CRC-64-AVRO of the parsing canonical form, as 16 hex digits."""
    parsed = fastavro.parse_schema(schema, _write_hint=False)
    return str(_avro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def column_type_from_sqlalchemy(t: Any) -> ColumnType:
    """Map a SQLAlchemy type (reflected or declared) to a :class:`ColumnType`.

    Unknown types map to ``string`` (values travel as their text), with a log line.
    """
    from sqlalchemy import types as st
    from sqlalchemy.sql import sqltypes

    if isinstance(t, st.Boolean):
        return ColumnType("boolean")
    if isinstance(t, st.Enum):
        return ColumnType("enum", symbols=tuple(t.enums))
    if isinstance(t, st.Integer):
        return ColumnType("int" if isinstance(t, st.SmallInteger) else "long")
    if isinstance(t, st.Float | st.Double):
        return ColumnType("double")
    if isinstance(t, st.Numeric):
        return ColumnType("decimal", precision=t.precision, scale=t.scale if t.precision is not None else None)
    if isinstance(t, st.Uuid):
        return ColumnType("uuid")
    if isinstance(t, st.JSON):
        return ColumnType("json")
    if isinstance(t, st.DateTime):
        return ColumnType("timestamptz" if t.timezone else "timestamp")
    if isinstance(t, st.Date):
        return ColumnType("date")
    if isinstance(t, st.Time):
        return ColumnType("time")
    if isinstance(t, st.Interval | sqltypes._AbstractInterval):  # PostgreSQL's reflected INTERVAL: only the latter
        return ColumnType("interval")
    if isinstance(t, st.ARRAY):
        return ColumnType("array", items=column_type_from_sqlalchemy(t.item_type))
    if isinstance(t, st._Binary):
        return ColumnType("bytes")
    if isinstance(t, st.String):
        return ColumnType("string")
    log.warning("unmapped_sql_type", sql_type=repr(t), mapped_to="string")
    return ColumnType("string")


def table_meta_from_sqlalchemy(table: Any, overrides: dict[str, ColumnType] | None = None) -> TableMeta:
    """A :class:`TableMeta` from a reflected ``sqlalchemy.Table`` (``overrides`` by column name)."""
    overrides = overrides or {}
    cols = tuple(
        Column(c.name, overrides.get(c.name) or column_type_from_sqlalchemy(c.type), bool(c.nullable))
        for c in table.columns
    )
    key = tuple(c.name for c in table.primary_key.columns)
    return TableMeta(name=table.name, columns=cols, key=key)


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One registered schema of one table."""

    table: str
    version: int
    fingerprint: str
    schema: dict[str, Any]
    meta: TableMeta | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "version": self.version, "fingerprint": self.fingerprint, "schema": self.schema}


class SchemaRegistry:
    """Fingerprint → schema, and each table's versions in order. Thread-safe.

    With ``directory`` set, schemas are loaded from it at construction and each new one is saved
    there before :meth:`register` returns.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._by_fp: dict[str, SchemaVersion] = {}
        self._by_table: dict[str, list[SchemaVersion]] = {}
        self._by_meta: dict[TableMeta, SchemaVersion] = {}
        # fast path: the same TableMeta object again (sources share one per table until it changes);
        # the entry holds the object, so its id cannot be reused while the entry exists
        self._by_id: dict[int, tuple[TableMeta, SchemaVersion]] = {}
        self._dir = Path(directory) if directory is not None else None
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            loaded = []
            for p in self._dir.glob("*.json"):
                d = json.loads(p.read_text())
                loaded.append(SchemaVersion(d["table"], d["version"], d["fingerprint"], d["schema"]))
            for sv in sorted(loaded, key=lambda s: (s.table, s.version)):
                self._by_fp[sv.fingerprint] = sv
                self._by_table.setdefault(sv.table, []).append(sv)

    def register(self, meta: TableMeta) -> SchemaVersion:
        """The version for ``meta``'s current shape, registering a new version when it changed."""
        hit = self._by_id.get(id(meta))
        if hit is not None and hit[0] is meta:
            return hit[1]
        with self._lock:
            # an equal TableMeta announced again (PostgreSQL re-sends Relation messages after cache
            # invalidations) maps to the version registered for the first one, through the fast path
            known = self._by_meta.get(meta)
            if known is not None:
                self._by_id[id(meta)] = (meta, known)
                return known
            schema = avro_schema(meta)
            fp = schema_fingerprint(schema)
            versions = self._by_table.setdefault(meta.name, [])
            for sv in reversed(versions):
                if sv.fingerprint == fp and sv.schema == schema:
                    sv = SchemaVersion(sv.table, sv.version, fp, schema, meta)
                    self._by_meta[meta] = sv
                    return sv
            sv = SchemaVersion(meta.name, len(versions) + 1, fp, schema, meta)
            if self._dir is not None:
                write_atomic(self._dir / f"{fp}.json", json.dumps(sv.to_json(), sort_keys=True).encode())
            versions.append(sv)
            self._by_fp[fp] = sv
            self._by_meta[meta] = sv
            log.info("schema_registered", table=meta.name, version=sv.version, fingerprint=fp)
            return sv

    def get(self, fingerprint: str) -> SchemaVersion | None:
        """The schema with this fingerprint, or None."""
        with self._lock:
            return self._by_fp.get(fingerprint.lower())

    def versions(self, table: str) -> list[SchemaVersion]:
        """Every registered version of ``table``, oldest first."""
        with self._lock:
            return list(self._by_table.get(table, ()))

    def tables(self) -> list[str]:
        with self._lock:
            return sorted(self._by_table)


def source_listing(names: Iterable[str], versions: Callable[[str], Sequence[SchemaVersion]]) -> list[dict[str, Any]]:
    """The ``/v1/sources`` body: each source's schema versions (oldest first) and its newest fingerprint."""
    out = []
    for name in sorted(names):
        vs = list(versions(name))
        out.append(
            {
                "name": name,
                "versions": [{"version": v.version, "fingerprint": v.fingerprint} for v in vs],
                "fingerprint": vs[-1].fingerprint if vs else None,
            }
        )
    return out
