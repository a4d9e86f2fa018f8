"""Row schemas: Avro record schemas of tables, their fingerprints, and a versioned registry.

The SQL-type → Avro mapping itself (:class:`TableMeta`, :class:`ColumnType`, :func:`avro_schema`)
lives in the shared :mod:`headrace._typemap`; it is re-exported here for the relay's modules.

A schema's fingerprint is the CRC-64-AVRO of its parsing canonical form, as 16 hex digits (the id
of Avro single-object encoding). The registry gives each table's distinct schemas increasing
version numbers; when it has a directory it writes each new schema there atomically, so a
restarted relay still serves the schemas of events it wrote before.

Resume-state contract: ``<dir>/<fingerprint>.json`` per schema, written once (temp + fsync +
rename) before any event that uses it is encoded; nothing else is saved.
"""

from __future__ import annotations

import json
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
from .._typemap import (
    COLUMN_PROP,
    KIND_PROP,
    KINDS,
    MARKER_NAMES,
    MARKER_PROP,
    UNCHANGED_MARKER,
    UNREPRESENTABLE_MARKER,
    Column,
    ColumnType,
    TableMeta,
    avro_name,
    avro_schema,
    column_type_from_sqlalchemy,
    marker_fields,
    table_meta_from_sqlalchemy,
)

__all__ = [
    "COLUMN_PROP",
    "KINDS",
    "KIND_PROP",
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


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """CRC-64-AVRO of the parsing canonical form, as 16 hex digits."""
    parsed = fastavro.parse_schema(schema, _write_hint=False)
    return str(_avro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


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
