"""pgoutput messages → row changes grouped by transaction (sans-io).

:class:`PgChangeAssembler` is fed decoded pgoutput messages in stream order and returns
:class:`~._rowchange.TxnBegin`, :class:`~._rowchange.RowChange` and :class:`~._rowchange.TxnEnd`
items. It keeps the relation cache (Relation messages define a table's columns; a new Relation for a
known relation id is how PostgreSQL announces a schema change) and resolves column types through an
injected catalog lookup (enums, domains and arrays of those are not built in; primary keys and
NOT NULL flags are not in the Relation message). With ``REPLICA IDENTITY FULL`` every column is
flagged as part of the identity, so the event key comes from the table's primary key instead.

State machine: ``idle`` —Begin→ ``in transaction`` —Commit→ ``idle``. Transactions whose commit LSN
is at or below :attr:`PgChangeAssembler.skip_through` (already delivered before a reconnect) are
dropped whole. Nothing is buffered: a change is returned as soon as its message is fed, so a
transaction of any size goes through in constant memory (the server sends each transaction after
its commit, whole and in commit order; it spills big ones to its own disk while decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from ._pgtypes import CatalogType, PgType, resolve_type
from ._rowchange import ColumnSpec, RowChange, TableSpec, TxnBegin, TxnEnd

__all__ = ["PgChangeAssembler", "RelationCatalog"]


@dataclass(frozen=True, slots=True)
class RelationCatalog:
    """What the catalog says about a relation that pgoutput does not: primary key and NOT NULL columns."""

    primary_key: tuple[str, ...]
    not_null: frozenset[str]


@dataclass(slots=True)
class _Rel:
    spec: TableSpec
    types: tuple[PgType, ...]
    names: tuple[str, ...]


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
    _seq: int = 0

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def table(self, relid: int) -> TableSpec | None:
        rel = self._rels.get(relid)
        return rel.spec if rel else None

    def feed(self, msg: PgMessage) -> TxnBegin | RowChange | TxnEnd | TableSpec | None:
        """Consume one message; returns the item it produced, if any."""
        if isinstance(msg, Begin):
            if self._txn is not None:
                raise ValueError("Begin inside a transaction: the stream lost a Commit")
            self._txn = msg
            self._skipping = msg.final_lsn <= self.skip_through
            self._seq = 0
            return None if self._skipping else TxnBegin(msg.final_lsn, pg_micros_to_ms(msg.commit_time), msg.xid)
        if isinstance(msg, Commit):
            if self._txn is None:
                raise ValueError("Commit outside a transaction")
            self._txn = None
            if self._skipping:
                self._skipping = False
                return None
            self.skip_through = max(self.skip_through, msg.commit_lsn)
            return TxnEnd(msg.commit_lsn, pg_micros_to_ms(msg.commit_time), msg.end_lsn, self._seq)
        if isinstance(msg, Relation):
            return self._relation(msg)
        if isinstance(msg, (Type, Origin, Message)):
            return None
        if self._txn is None:
            raise ValueError(f"{type(msg).__name__} outside a transaction")
        if self._skipping:
            return None
        if isinstance(msg, Truncate):
            self.truncates += 1
            return None
        return self._change(msg)

    def _relation(self, msg: Relation) -> TableSpec:
        cat = self.relation_catalog(msg.relid)
        names = tuple(c.name for c in msg.columns)
        types = tuple(resolve_type(c.type_oid, c.typmod, self.type_catalog) for c in msg.columns)
        key = tuple(k for k in cat.primary_key if k in names) or tuple(c.name for c in msg.columns if c.is_key)
        table = msg.name if msg.namespace == "public" else f"{msg.namespace}.{msg.name}"
        cols = tuple(
            ColumnSpec(c.name, t.avro, nullable=c.name not in cat.not_null and c.name not in key, db_type=t.name)
            for c, t in zip(msg.columns, types, strict=True)
        )
        spec = TableSpec(table, cols, key)
        self._rels[msg.relid] = _Rel(spec, types, names)
        return spec

    def _values(self, rel: _Rel, tup: tuple[TupleValue, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
        row: dict[str, Any] = {}
        unchanged: list[str] = []
        for name, typ, raw in zip(rel.names, rel.types, tup, strict=True):
            if raw is None:
                row[name] = None
            elif raw is UNCHANGED:
                row[name] = None
                unchanged.append(name)
            else:
                assert isinstance(raw, bytes)
                row[name] = typ.parse(raw.decode("utf-8"))
        return row, tuple(unchanged)

    def _change(self, msg: Insert | Update | Delete) -> RowChange:
        rel = self._rels.get(msg.relid)
        if rel is None:
            raise ValueError(f"change for relation {msg.relid} before its Relation message")
        assert self._txn is not None
        self._seq += 1
        spec = rel.spec
        if isinstance(msg, Insert):
            after, unchanged = self._values(rel, msg.new)
            return RowChange(spec, "c", {k: after[k] for k in spec.key}, None, after, unchanged)
        if isinstance(msg, Update):
            after, unchanged = self._values(rel, msg.new)
            before = None
            if msg.old is not None and msg.old_kind == "O":
                before, _ = self._values(rel, msg.old)
            elif msg.old is not None:  # 'K': only the old key's columns are meaningful
                old, _ = self._values(rel, msg.old)
                before = {k: old[k] for k in spec.key}
            if unchanged and before is not None and msg.old_kind == "O":
                # REPLICA IDENTITY FULL sends the old row whole: fill in what the new tuple left out
                for name in unchanged:
                    after[name] = before[name]
                unchanged = ()
            return RowChange(spec, "u", {k: after[k] for k in spec.key}, before, after, unchanged)
        old, _ = self._values(rel, msg.old)
        before = old if msg.old_kind == "O" else {k: old[k] for k in spec.key}
        return RowChange(spec, "d", {k: old[k] for k in spec.key}, before, None, ())
