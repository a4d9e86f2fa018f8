"""pgoutput messages → committed transactions of row changes (sans-io).

:class:`PgChangeAssembler` is fed decoded pgoutput messages in stream order and returns
:class:`TxnBegin`, :class:`~headrace.relay.sources.RowChange` (a list of them for a TRUNCATE) and
:class:`TxnEnd` items. It keeps the relation cache (a Relation message defines a table's columns; a
new one for a known relation id is how PostgreSQL announces a schema change, which becomes a new
:class:`TableMeta` and so a new schema version) and resolves column types through injected catalog
lookups: enums, domains and arrays of those are not built in.

Keys (see :func:`build_meta`). A table is decoded with the Relation message that arrived with its
changes — the table as of the change — never with today's catalog alone. The event key is the
*replica identity*, because that is what PostgreSQL puts in the old tuple of every DELETE and of
every UPDATE that changes it: the primary key (``DEFAULT``), the index's columns (``USING INDEX``,
even when the table also has a primary key). Only ``REPLICA IDENTITY FULL`` flags every column, and
there the key is the primary key as the catalog gave it when the Relation message was first seen
(cached per relation id and message), or every column when the catalog has no usable answer (the
table was dropped, or its key changed, before the relay read the change). A table with no identity
at all (``NOTHING``, or ``DEFAULT`` without a primary key; PostgreSQL then only lets it publish
inserts) is keyed by every column.

State machine: ``idle`` —Begin→ ``in transaction`` —Commit→ ``idle``. A transaction whose commit
LSN is at or below :attr:`PgChangeAssembler.skip_through` (already delivered before a reconnect)
is dropped whole. Nothing is buffered: a change comes out as soon as its message goes in, so a
transaction of any size passes in constant memory (with protocol version 1 the server sends each
transaction after its commit, whole and in commit order, spilling big ones to its own disk).

TRUNCATE. A Truncate message becomes one :data:`~headrace.relay.Op.TRUNCATE` change per truncated
relation (key ``()``, no before/after image), in its place among the transaction's changes.

Unchanged TOAST values. An UPDATE that leaves a TOASTed value (a large text, bytea, json, array …)
as it was does not send it (``'u'`` in the tuple). When the old tuple has it — the whole old row
with ``REPLICA IDENTITY FULL``, and the old key (which PostgreSQL sends whenever a key value is
stored out of line) for identity columns — it is filled in, so a TOASTed key is always known.
Otherwise it is *marked*: the value is ``None`` and the column's name is listed in the extra column
:data:`UNCHANGED_COLUMN` (an array of strings; ``_2``, ``_3`` … appended when the table has a column
of that name, and the field marked ``headrace.marker: unchanged`` in the schema, which is how
consumers find it). That column is added to a table's schema (a new schema version) the first time
the table has such an update, so tables that never do keep exactly the columns of the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..._frozen import fast_constructor
from .._event import Op
from .._schema import MARKER_NAMES, UNCHANGED_MARKER, Column, TableMeta
from ._base import RowChange
from ._pgoutput import (
    BEGIN_FIELDS,
    COMMIT_FIELDS,
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
    decode,
    pg_micros_to_ms,
)
from ._pgrows import InsertReader, Refused, TupleReader, compile_insert, compile_tuple
from ._pgtypes import CatalogType, PgType, bytes_parser, column_type, resolve_type

__all__ = [
    "NOTICE_PREFIX",
    "UNCHANGED_COLUMN",
    "PgChangeAssembler",
    "RelationCatalog",
    "TxnBegin",
    "TxnEnd",
    "split_table_name",
    "table_name",
]

UNCHANGED_COLUMN: Final = MARKER_NAMES[UNCHANGED_MARKER]
#: ``RowChange(scn, table, op, key, before, after, ts_ms)`` without the frozen dataclass's per-field cost
_row_change = fast_constructor(RowChange)
_begin = fast_constructor(Begin)
_INSERT = Op.INSERT
_commit = fast_constructor(Commit)
#: the prefix of the logical decoding messages the relay's event trigger writes (a JSON object each,
#: collected in :attr:`PgChangeAssembler.notices` for the shell to report)
NOTICE_PREFIX: Final = "headrace"


@dataclass(frozen=True, slots=True)
class RelationCatalog:
    """What the catalog says about a relation that pgoutput does not: the order of its key columns.

    ``primary_key`` and ``identity_index`` (the ``REPLICA IDENTITY USING INDEX`` index) list columns
    in index order; ``not_null`` is kept for callers that show the table as it is now.
    """

    primary_key: tuple[str, ...]
    not_null: frozenset[str]
    identity_index: tuple[str, ...] = ()


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


_txn_begin = fast_constructor(TxnBegin)
_txn_end = fast_constructor(TxnEnd)


@dataclass(slots=True)
class _Rel:
    meta: TableMeta
    types: tuple[PgType, ...]
    names: tuple[str, ...]
    identity: frozenset[str]  # columns the old tuple of a 'K' update/delete carries
    parsers: tuple[Callable[[bytes], Any], ...] = ()
    marked: TableMeta | None = None  # meta + the unchanged marker column, once needed
    marker: str = ""  # that column's name
    insert: InsertReader | None = None  # the compiled INSERT reader (see feed_payload)
    read_tuple: TupleReader | None = None  # the compiled reader of UPDATE and DELETE tuples
    identity_names: tuple[str, ...] = ()  # the identity columns in column order (a 'K' old tuple's image)

    def __post_init__(self) -> None:
        self.parsers = tuple(bytes_parser(t) for t in self.types)
        self.identity_names = tuple(n for n in self.names if n in self.identity)
        if set(self.meta.key) <= set(self.names):
            self.insert = compile_insert(self.names, self.parsers, self.meta.key)
            self.read_tuple = compile_tuple(self.names, self.parsers)


def _part(name: str) -> str:
    # a part with a dot or a double quote is double-quoted, so the joined name stays unambiguous
    return '"' + name.replace('"', '""') + '"' if "." in name or '"' in name else name


def table_name(namespace: str, name: str) -> str:
    """``orders`` for ``public.orders``, ``sales.orders`` otherwise; a part holding a dot or a double
    quote is double-quoted (``public."s3.rx"`` is ``"s3.rx"``, ``s3.rx`` is ``s3.rx``)."""
    return _part(name) if namespace == "public" else f"{_part(namespace)}.{_part(name)}"


def split_table_name(text: str) -> tuple[str | None, str]:
    """``(schema or None, table)`` of a name as :func:`table_name` writes it (or as a user writes it in
    the config: ``orders``, ``sales.orders``, ``"s3.rx"``)."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            parts.append(text[i:j])
            i = j
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"not a table name: {text!r}")
        i += 1
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"not a table name (schema.table): {text!r}")


def _in_order(cols: tuple[str, ...], preferred: tuple[str, ...]) -> tuple[str, ...]:
    """``cols`` in the catalog's index order when the catalog names exactly those columns."""
    return preferred if preferred and sorted(preferred) == sorted(cols) else cols


def event_key(
    names: tuple[str, ...], identity: tuple[str, ...], replica_identity: str, catalog: RelationCatalog | None
) -> tuple[str, ...]:
    """The key columns of a table's events (see the module docstring).

    ``identity`` are the columns the Relation message flags as replica identity, in column order;
    ``replica_identity`` is its ``d``/``n``/``f``/``i`` letter; ``catalog`` is None when the relation
    no longer exists.
    """
    cat = catalog or RelationCatalog((), frozenset())
    if replica_identity == "f":
        pk = cat.primary_key
        return pk if pk and set(pk) <= set(names) else names
    if identity:
        return _in_order(identity, cat.identity_index if replica_identity == "i" else cat.primary_key)
    return names


def build_meta(
    table: str,
    columns: list[tuple[str, PgType]],
    identity: tuple[str, ...],
    replica_identity: str,
    catalog: RelationCatalog | None,
) -> TableMeta:
    """A :class:`TableMeta` from resolved columns; the key is :func:`event_key`.

    Only replica identity columns of a ``DEFAULT``/``USING INDEX`` table are NOT NULL in the schema:
    PostgreSQL guarantees them as of the change (the Relation message is as of the change). Every
    other column is nullable, even when NOT NULL in the table: an old row (``before``) carries only
    the identity columns, and with ``FULL`` the catalog — the only source of NOT NULL flags — may
    describe a later table than the change.
    """
    names = tuple(n for n, _ in columns)
    key = event_key(names, identity, replica_identity, catalog)
    required = frozenset(identity) if replica_identity in ("d", "i") else frozenset()
    cols = tuple(Column(n, column_type(t), nullable=n not in required) for n, t in columns)
    return TableMeta(name=table, columns=cols, key=key)


@dataclass(slots=True)
class PgChangeAssembler:
    """Turns pgoutput messages into transaction-delimited row changes; see the module docstring.

    ``relation_catalog`` answers for a relation id (None: no such relation any more); it is asked
    once per Relation message, only for ``REPLICA IDENTITY USING INDEX``/``DEFAULT`` key order and
    ``FULL`` primary keys.

    ``notices`` collects the JSON objects of the relay's own logical decoding messages (prefix
    :data:`NOTICE_PREFIX`) in transactions not skipped; the shell takes them out and reports them.
    """

    relation_catalog: Callable[[int], RelationCatalog | None]
    type_catalog: Callable[[int], CatalogType | None]
    skip_through: int = -1
    notices: list[dict[str, Any]] = field(default_factory=list)
    _rels: dict[int, _Rel] = field(default_factory=dict)
    #: ``b'I'`` + relation id (an INSERT's first 5 bytes) → the relation and its compiled INSERT reader
    _inserts: dict[bytes, tuple[_Rel, InsertReader]] = field(default_factory=dict)
    _catalog_cache: dict[Relation, RelationCatalog | None] = field(default_factory=dict)
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

    def feed_payload(self, payload: bytes) -> TxnBegin | RowChange | list[RowChange] | TxnEnd | TableMeta | None:
        """:meth:`feed` of the decoded ``payload`` (one pgoutput message), the same result; an INSERT,
        UPDATE or DELETE is read straight from the bytes by its relation's compiled readers
        (:mod:`._pgrows`) when they can, a Begin or Commit of exactly its size unpacked in one go;
        anything else takes ``decode``."""
        hit = self._inserts.get(payload[:5])  # 'I' + relation id: the hot path, one lookup
        if hit is not None:
            txn = self._txn
            if txn is not None and not self._skipping:
                target, read = hit
                try:
                    after, key = read(payload)
                except Exception:  # the reference path below gives the change or the error
                    pass
                else:
                    self._rows += 1
                    meta = target.marked or target.meta
                    return _row_change(txn.final_lsn, meta, _INSERT, key, None, after, None)
            return self.feed(decode(payload))
        kind = payload[0] if payload else 0
        if kind == 0x55 or kind == 0x44:  # 'U', 'D': their tuples read by the relation's compiled reader
            if self._txn is not None and not self._skipping:
                rel = self._rels.get(int.from_bytes(payload[1:5], "big"))
                if rel is not None and rel.read_tuple is not None:
                    try:
                        change = self._read_update(rel, payload) if kind == 0x55 else self._read_delete(rel, payload)
                    except Exception:  # the reference path below gives the change or the error
                        pass
                    else:
                        return change
        elif kind == 0x42 and len(payload) == BEGIN_FIELDS.size + 1:  # 'B', exactly its fields
            return self.feed(_begin(*BEGIN_FIELDS.unpack_from(payload, 1)))
        elif kind == 0x43 and len(payload) == COMMIT_FIELDS.size + 1:  # 'C'
            return self.feed(_commit(*COMMIT_FIELDS.unpack_from(payload, 1)))
        return self.feed(decode(payload))

    def feed(self, msg: PgMessage) -> TxnBegin | RowChange | list[RowChange] | TxnEnd | TableMeta | None:
        """Consume one message; returns the item it produced, if any (a TRUNCATE: a list of changes)."""
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
            return None if self._skipping else _txn_begin(msg.final_lsn, pg_micros_to_ms(msg.commit_time), msg.xid)
        if isinstance(msg, Commit):
            if self._txn is None:
                raise ValueError("Commit outside a transaction")
            self._txn = None
            if self._skipping:
                self._skipping = False
                return None
            self.skip_through = max(self.skip_through, msg.commit_lsn)
            return _txn_end(msg.commit_lsn, pg_micros_to_ms(msg.commit_time), msg.end_lsn, self._rows)
        if isinstance(msg, Relation):
            return self._relation(msg)
        if isinstance(msg, Message):
            if msg.prefix == NOTICE_PREFIX and not self._skipping:
                try:
                    notice = json.loads(msg.content)
                except ValueError:
                    notice = None
                if isinstance(notice, dict):
                    self.notices.append(notice)
            return None
        if isinstance(msg, Type | Origin):
            return None
        if self._txn is None:
            raise ValueError(f"{type(msg).__name__} outside a transaction")
        if self._skipping:
            return None
        if isinstance(msg, Truncate):
            return self._truncate(msg)
        return self._change(msg)

    def _catalog(self, msg: Relation) -> RelationCatalog | None:
        """The catalog's answer for this Relation message, asked once: replaying the same stream (after
        a reconnect) decodes it the same way even if the table has changed or gone meanwhile."""
        if msg not in self._catalog_cache:
            if len(self._catalog_cache) > 10_000:
                self._catalog_cache.clear()
            self._catalog_cache[msg] = self.relation_catalog(msg.relid)
        return self._catalog_cache[msg]

    def _relation(self, msg: Relation) -> TableMeta:
        types = tuple(resolve_type(c.type_oid, c.typmod, self.type_catalog) for c in msg.columns)
        names = tuple(c.name for c in msg.columns)
        identity = tuple(c.name for c in msg.columns if c.is_key)
        ident = msg.replica_identity
        cat = self._catalog(msg) if ident == "f" or len(identity) > 1 else None
        meta = build_meta(
            table_name(msg.namespace, msg.name), list(zip(names, types, strict=True)), identity, ident, cat
        )
        identity_set = frozenset(identity) if ident != "f" else frozenset(names)
        rel = self._rels[msg.relid] = _Rel(meta, types, names, identity_set)
        prefix = b"I" + msg.relid.to_bytes(4, "big")
        if rel.insert is not None:
            self._inserts[prefix] = (rel, rel.insert)
        else:
            self._inserts.pop(prefix, None)
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
            rel.marked, rel.marker = rel.meta.with_marker(UNCHANGED_MARKER)
        return rel.marked

    def _rel(self, relid: int) -> _Rel:
        rel = self._rels.get(relid)
        if rel is None:
            raise ValueError(f"change for relation {relid} before its Relation message")
        return rel

    def _truncate(self, msg: Truncate) -> list[RowChange]:
        assert self._txn is not None
        scn = self._txn.final_lsn
        out = []
        for relid in msg.relids:
            rel = self._rel(relid)
            out.append(RowChange(scn, rel.marked or rel.meta, Op.TRUNCATE, (), None, None))
        self._rows += len(out)
        return out

    def _read_update(self, rel: _Rel, buf: bytes) -> RowChange:
        """The UPDATE ``buf`` read by ``rel``'s compiled tuple reader, or raises (the caller then takes
        the reference path, which gives the change or the error)."""
        read = rel.read_tuple
        assert read is not None and self._txn is not None
        tag = buf[5]
        old_kind: str | None = None
        old: dict[str, Any] | None = None
        old_unchanged = None
        pos = 6
        if tag == 0x4B or tag == 0x4F:  # 'K', 'O'
            old_kind = "K" if tag == 0x4B else "O"
            old, old_unchanged, pos = read(buf, 6)
            tag = buf[pos]
            pos += 1
        if tag != 0x4E:  # 'N'
            raise Refused
        after, unchanged, pos = read(buf, pos)
        if pos != len(buf):
            raise Refused
        if old is None and unchanged is None:  # the common case, inline
            self._rows += 1
            meta = rel.marked or rel.meta
            return _row_change(
                self._txn.final_lsn, meta, Op.UPDATE, tuple([after[k] for k in meta.key]), None, after, None
            )
        before = self._old_image(rel, old_kind, old, old_unchanged) if old is not None and old_kind else None
        change = self._update(rel, after, unchanged or [], before)  # may raise: count the row after it
        self._rows += 1
        return change

    def _read_delete(self, rel: _Rel, buf: bytes) -> RowChange:
        """The DELETE ``buf`` read by ``rel``'s compiled tuple reader, or raises (see _read_update)."""
        read = rel.read_tuple
        assert read is not None
        tag = buf[5]
        if tag != 0x4B and tag != 0x4F:
            raise Refused
        old, old_unchanged, pos = read(buf, 6)
        if pos != len(buf):
            raise Refused
        before = self._old_image(rel, "K" if tag == 0x4B else "O", old, old_unchanged)
        self._rows += 1
        return self._delete(rel, before)

    def _old(self, rel: _Rel, kind: str, tup: tuple[TupleValue, ...]) -> dict[str, Any]:
        """The old row: whole (``'O'``), or only the identity columns it carries (``'K'``)."""
        old, unchanged = self._values(rel, tup)
        return self._old_image(rel, kind, old, unchanged)

    @staticmethod
    def _old_image(rel: _Rel, kind: str, old: dict[str, Any], unchanged: list[str] | None) -> dict[str, Any]:
        """The old row from its tuple's values and the names of its unchanged-TOAST columns."""
        if unchanged:  # the server sends old tuples detoasted; never claim a value it did not send
            for name in unchanged:
                del old[name]
        return old if kind == "O" else {n: old[n] for n in rel.identity_names if n in old}

    def _update(
        self, rel: _Rel, after: dict[str, Any], unchanged: list[str], before: dict[str, Any] | None
    ) -> RowChange:
        """An UPDATE's change from its new row, the names of its unchanged-TOAST columns and its old row
        (both paths share this: the same fill-in, marking and errors)."""
        assert self._txn is not None
        meta = rel.marked or rel.meta
        key_cols = meta.key
        if unchanged and before:  # the old row or old key has it: fill it in
            still = []
            for name in unchanged:
                if name in before:
                    after[name] = before[name]
                else:
                    still.append(name)
            unchanged = still
        if unchanged:
            missing = [k for k in key_cols if k in unchanged]
            if missing:
                raise ValueError(
                    f"{rel.meta.name}: an UPDATE left the TOASTed key column(s) {missing} unchanged and the server "
                    "sent no old key (PostgreSQL minor releases since February 2022 send it)"
                )
            meta = self._marked(rel)
            after[rel.marker] = unchanged
        return _row_change(
            self._txn.final_lsn, meta, Op.UPDATE, tuple([after[k] for k in key_cols]), before, after, None
        )

    def _delete(self, rel: _Rel, before: dict[str, Any]) -> RowChange:
        assert self._txn is not None
        meta = rel.marked or rel.meta
        return _row_change(
            self._txn.final_lsn, meta, Op.DELETE, tuple([before.get(k) for k in meta.key]), before, None, None
        )

    def _change(self, msg: Insert | Update | Delete) -> RowChange:
        rel = self._rels.get(msg.relid)  # inline: the hot path
        if rel is None:
            rel = self._rel(msg.relid)  # raises
        assert self._txn is not None
        self._rows += 1
        if type(msg) is Insert:
            after, _ = self._values(rel, msg.new)
            meta = rel.marked or rel.meta
            return _row_change(
                self._txn.final_lsn, meta, Op.INSERT, tuple([after[k] for k in meta.key]), None, after, None
            )
        if isinstance(msg, Update):
            after, unchanged = self._values(rel, msg.new)
            before = self._old(rel, msg.old_kind, msg.old) if msg.old is not None and msg.old_kind else None
            return self._update(rel, after, unchanged, before)
        assert isinstance(msg, Delete)
        return self._delete(rel, self._old(rel, msg.old_kind, msg.old))
