"""pgoutput messages → committed transactions of row changes (sans-io).

:class:`PgChangeAssembler` is fed decoded pgoutput messages in stream order and returns
:class:`TxnBegin`, :class:`~headrace.relay.sources.RowChange` and :class:`TxnEnd` items. It keeps
the relation cache (a Relation message defines a table's columns; a new one for a known relation
id is how PostgreSQL announces a schema change, which becomes a new :class:`TableMeta` and so a new
schema version) and resolves column types through injected catalog lookups: enums, domains and
arrays of those are not built in, and primary keys and NOT NULL flags are not in the Relation
message. With ``REPLICA IDENTITY FULL`` every column is flagged as identity, so the event key comes
from the table's primary key instead.

State machine: ``idle`` —Begin→ ``in transaction`` —Commit→ ``idle``. A transaction whose commit
LSN is at or below :attr:`PgChangeAssembler.skip_through` (already delivered before a reconnect)
is dropped whole. Nothing is buffered: a change comes out as soon as its message goes in, so a
transaction of any size passes in constant memory (with protocol version 1 the server sends each
transaction after its commit, whole and in commit order, spilling big ones to its own disk).

Unchanged TOAST values. An UPDATE that leaves a TOASTed value (a large text, bytea, json, array …)
as it was does not send it (``'u'`` in the tuple). With ``REPLICA IDENTITY FULL`` the old row has
it and it is filled in. Otherwise it is *marked*: the value is ``None`` and the column's name is
listed in the extra column :data:`UNCHANGED_COLUMN` (an array of strings). That column is added to
a table's schema (a new schema version) the first time the table has such an update, so tables that
never do keep exactly the columns of the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .._event import Op
from .._schema import Column, ColumnType, TableMeta
from ._base import RowChange
from ._pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    Delete,
    Insert,
    Message,
    Origin,
    PgMessage,
    Relation,
    Truncate,
    TupleValue,
    Type,
    Update,
    pg_micros_to_ms,
)
from ._pgtypes import CatalogType, PgType, bytes_parser, column_type, resolve_type

__all__ = ["UNCHANGED_COLUMN", "PgChangeAssembler", "RelationCatalog", "TxnBegin", "TxnEnd"]

UNCHANGED_COLUMN: Final = "_headrace_unchanged"


@dataclass(frozen=True, slots=True)
class RelationCatalog:
    """What the catalog says about a relation that pgoutput does not: primary key and NOT NULL columns."""

    primary_key: tuple[str, ...]
    not_null: frozenset[str]


@dataclass(frozen=True, slots=True)
class TxnBegin:
    """A transaction starts; ``scn`` is its commit LSN (PostgreSQL knows it up front)."""

    scn: int
    ts_ms: int
    xid: int


@dataclass(frozen=True, slots=True)
class TxnEnd:
    """A transaction ends: its commit LSN, commit time (Unix ms), the LSN after its commit record, rows."""

    scn: int
    ts_ms: int
    end_lsn: int
    rows: int


@dataclass(slots=True)
class _Rel:
    meta: TableMeta
    types: tuple[PgType, ...]
    names: tuple[str, ...]
    parsers: tuple[Callable[[bytes], Any], ...] = ()
    marked: TableMeta | None = None  # meta + UNCHANGED_COLUMN, once needed

    def __post_init__(self) -> None:
        self.parsers = tuple(bytes_parser(t) for t in self.types)


def table_name(namespace: str, name: str) -> str:
    """``orders`` for ``public.orders``, ``sales.orders`` otherwise."""
    return name if namespace == "public" else f"{namespace}.{name}"


def build_meta(
    table: str,
    columns: list[tuple[str, PgType]],
    catalog: RelationCatalog,
    identity: tuple[str, ...],
    full_identity: bool,
) -> TableMeta:
    """A :class:`TableMeta` from resolved columns; the key is the primary key, else the replica identity.

    Without ``REPLICA IDENTITY FULL`` an old row (``before``) carries only the key columns, the others
    being null, so there the non-key columns are nullable in the schema even when NOT NULL in the table.
    """
    names = [n for n, _ in columns]
    key = tuple(k for k in catalog.primary_key if k in names) or identity
    not_null = catalog.not_null if full_identity else frozenset()
    cols = tuple(Column(n, column_type(t), nullable=n not in not_null and n not in key) for n, t in columns)
    return TableMeta(name=table, columns=cols, key=key)


@dataclass(slots=True)
class PgChangeAssembler:
    """Turns pgoutput messages into transaction-delimited row changes; see the module docstring."""

    relation_catalog: Callable[[int], RelationCatalog]
    type_catalog: Callable[[int], CatalogType | None]
    skip_through: int = -1
    truncates: int = 0
    _rels: dict[int, _Rel] = field(default_factory=dict)
    _txn: Begin | None = None
    _skipping: bool = False
    _rows: int = 0

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def reset(self) -> None:
        """Forget the open transaction (the connection dropped; the server will send it again)."""
        self._txn = None
        self._skipping = False
        self._rows = 0

    def feed(self, msg: PgMessage) -> TxnBegin | RowChange | TxnEnd | TableMeta | None:
        """Consume one message; returns the item it produced, if any."""
        t = type(msg)
        if t is Insert or t is Update or t is Delete:  # the hot path
            if self._txn is None:
                raise ValueError(f"{t.__name__} outside a transaction")
            return None if self._skipping else self._change(msg)  # type: ignore[arg-type]
        if isinstance(msg, Begin):
            if self._txn is not None:
                raise ValueError("Begin inside a transaction: the stream lost a Commit")
            self._txn = msg
            self._skipping = msg.final_lsn <= self.skip_through
            self._rows = 0
            return None if self._skipping else TxnBegin(msg.final_lsn, pg_micros_to_ms(msg.commit_time), msg.xid)
        if isinstance(msg, Commit):
            if self._txn is None:
                raise ValueError("Commit outside a transaction")
            self._txn = None
            if self._skipping:
                self._skipping = False
                return None
            self.skip_through = max(self.skip_through, msg.commit_lsn)
            return TxnEnd(msg.commit_lsn, pg_micros_to_ms(msg.commit_time), msg.end_lsn, self._rows)
        if isinstance(msg, Relation):
            return self._relation(msg)
        if isinstance(msg, Type | Origin | Message):
            return None
        if self._txn is None:
            raise ValueError(f"{type(msg).__name__} outside a transaction")
        if self._skipping:
            return None
        if isinstance(msg, Truncate):
            self.truncates += 1
            return None
        return self._change(msg)

    def _relation(self, msg: Relation) -> TableMeta:
        cat = self.relation_catalog(msg.relid)
        types = tuple(resolve_type(c.type_oid, c.typmod, self.type_catalog) for c in msg.columns)
        names = tuple(c.name for c in msg.columns)
        identity = tuple(c.name for c in msg.columns if c.is_key)
        meta = build_meta(
            table_name(msg.namespace, msg.name),
            list(zip(names, types, strict=True)),
            cat,
            identity,
            full_identity=msg.replica_identity == "f",
        )
        self._rels[msg.relid] = _Rel(meta, types, names)
        return meta

    def _values(self, rel: _Rel, tup: tuple[TupleValue, ...]) -> tuple[dict[str, Any], list[str]]:
        if len(tup) != len(rel.names):
            raise ValueError(f"{rel.meta.name}: tuple has {len(tup)} columns, the relation {len(rel.names)}")
        row: dict[str, Any] = {}
        unchanged: list[str] = []
        for name, parse, raw in zip(rel.names, rel.parsers, tup):  # noqa: B905 - lengths checked above
            if raw is None:
                row[name] = None
            elif raw is UNCHANGED:
                row[name] = None
                unchanged.append(name)
            else:
                row[name] = parse(raw)  # type: ignore[arg-type]
        return row, unchanged

    def _marked(self, rel: _Rel) -> TableMeta:
        if rel.marked is None:
            extra = Column(UNCHANGED_COLUMN, ColumnType("array", items=ColumnType("string")), nullable=True)
            rel.marked = TableMeta(rel.meta.name, (*rel.meta.columns, extra), rel.meta.key, rel.meta.namespace)
        return rel.marked

    def _change(self, msg: Insert | Update | Delete) -> RowChange:
        rel = self._rels.get(msg.relid)
        if rel is None:
            raise ValueError(f"change for relation {msg.relid} before its Relation message")
        assert self._txn is not None
        self._rows += 1
        scn = self._txn.final_lsn
        meta = rel.marked or rel.meta
        key_cols = meta.key
        if type(msg) is Insert:
            after, _ = self._values(rel, msg.new)
            return RowChange(scn, meta, Op.INSERT, tuple([after[k] for k in key_cols]), None, after)
        if isinstance(msg, Update):
            after, unchanged = self._values(rel, msg.new)
            before: dict[str, Any] | None = None
            if msg.old is not None:
                old, _ = self._values(rel, msg.old)
                before = old if msg.old_kind == "O" else {k: old[k] for k in key_cols}
            if unchanged and msg.old_kind == "O" and before is not None:
                for name in unchanged:  # REPLICA IDENTITY FULL: the old row has the value
                    after[name] = before[name]
                unchanged = []
            if unchanged:
                meta = self._marked(rel)
                after[UNCHANGED_COLUMN] = unchanged
            return RowChange(scn, meta, Op.UPDATE, tuple(after[k] for k in key_cols), before, after)
        assert isinstance(msg, Delete)
        old, _ = self._values(rel, msg.old)
        before = old if msg.old_kind == "O" else {k: old[k] for k in key_cols}
        return RowChange(scn, meta, Op.DELETE, tuple(old[k] for k in key_cols), before, None)
