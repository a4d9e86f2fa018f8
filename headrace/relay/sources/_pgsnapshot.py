"""PostgreSQL's snapshot (:meth:`~headrace.relay.sources.postgres.PostgresSource.snapshot`): the
current rows of published tables, aligned with the relay's stream, byte-identical to it.

Theory of operation. The snapshot waits until the relay's slot and publication exist (the relay
creates them), so the relay's stream reaches back to the snapshot's position. A temporary slot
``<slot>_seed`` is then created with ``EXPORT_SNAPSHOT``; its consistent point ``C`` splits the
WAL: the exported snapshot shows exactly the transactions whose commit record starts before ``C``,
and a slot created there would decode exactly the others. A relay SCN is a transaction's commit LSN,
a position in the one WAL every slot reads, so the split holds for the relay's slot too:
``start_scn = C - 1`` (the relay's ``read(C - 1)`` delivers every change the snapshot does not
show). One ``REPEATABLE READ READ ONLY`` transaction imports the snapshot (``SET TRANSACTION
SNAPSHOT``) and the temporary slot is dropped at once — the transaction keeps the snapshot, the slot
would only hold WAL. Reading takes only ``ACCESS SHARE`` locks: the application's writes are never
blocked (DDL such as ``ALTER TABLE``/``TRUNCATE`` waits for the read).

Same events as the stream. The tables' metadata is read *inside* the snapshot transaction (the
catalog as of the snapshot) and built exactly like the stream's Relation messages: pgoutput's
columns (not dropped, not generated, in ``attnum`` order) with their type OID and typmod resolved by
:func:`~._pgtypes.resolve_type`, the replica identity's columns as pgoutput flags them (``FULL``:
all; ``USING INDEX``: the index's; ``DEFAULT``: the primary key's), the primary key and NOT NULL
columns, through :func:`~._pgstream.build_meta`. Values are read as PostgreSQL's *text output* —
every type is fetched as raw text under the relay's session settings (:data:`SESSION_OPTIONS`:
``DateStyle``, ``IntervalStyle``, ``TimeZone``, ``bytea_output``, ``extra_float_digits``), which is
what pgoutput sends — and parsed by the same ``PgType.parse`` functions. So a row read here and the
stream's insert of the same row encode to the same Avro bytes under the same fingerprint (tested).

Resume-state contract: none. An exported snapshot lives only as long as the transaction that
imported it, so a snapshot cut short (a crash) cannot be continued: the next snapshot is a new one
with a newer ``start_scn`` (``resumable = False``), and it first drops the temporary slot a crashed
one may have left (ending the session that still holds it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..._logging import get_logger
from ...errors import TransientError, UsageError
from .._event import Op
from .._schema import TableMeta
from ._base import RowChange, SnapshotPage, SourceSnapshot, StopFlag
from ._pgoutput import parse_lsn
from ._pgstream import RelationCatalog, build_meta, split_table_name, table_name
from ._pgtypes import CatalogType, PgType, resolve_type
from ._pgtypes import _str as _pgtypes_str

__all__ = ["PgSnapshot", "snapshot_slot_name", "take_snapshot"]

log = get_logger("relay.source.postgres.snapshot")

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def snapshot_slot_name(relay_slot: str) -> str:
    """The temporary slot a snapshot is exported from: the relay's slot name + ``_seed`` (≤ 63 characters)."""
    return f"{relay_slot[:58]}_seed"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    schema, name = split_table_name(table)
    return f"{_q(schema)}.{_q(name)}" if schema is not None else _q(name)


class PgSnapshot(SourceSnapshot):
    """One ``REPEATABLE READ`` transaction holding the exported snapshot; every page is at ``start_scn``."""

    resumable = False

    def __init__(
        self,
        conn: Any,
        start_scn: int,
        metas: list[TableMeta],
        parsers: dict[str, list[Any]],
        types: dict[str, list[PgType]] | None = None,
    ) -> None:
        self._conn = conn
        self._types = types or {}
        self.start_scn = start_scn
        self.tables = metas
        self._metas = {m.name: m for m in metas}
        self._parsers = parsers

    def pages(self, table: str, page_rows: int, after: Sequence[Any] | None = None) -> Iterator[SnapshotPage]:
        if after is not None:
            raise UsageError("a PostgreSQL snapshot cannot be continued after a key (it is not resumable)")
        meta = self._meta(table)
        parsers = self._parsers[table]
        for scn, raw_rows, done in self.raw_pages(table, page_rows):
            rows = parse_rows(meta, scn, parsers, raw_rows)
            yield SnapshotPage(meta, scn, rows, rows[-1].key if rows else None, done)

    def _meta(self, table: str) -> TableMeta:
        meta = self._metas.get(table)
        if meta is None:
            raise UsageError(f"table {table!r} is not in this snapshot ({', '.join(sorted(self._metas))})")
        return meta

    def parsers(self, table: str) -> list[Any]:
        """The text parser (``PgType.parse``) of each of ``table``'s columns, in ``meta.columns`` order."""
        self._meta(table)
        return list(self._parsers[table])

    def types(self, table: str) -> list[PgType] | None:
        """The resolved type of each of ``table``'s columns (None when the snapshot was made without them)."""
        self._meta(table)
        got = self._types.get(table)
        return list(got) if got is not None else None

    def raw_pages(self, table: str, page_rows: int) -> Iterator[tuple[int, list[tuple[Any, ...]], bool]]:
        """:meth:`pages` before parsing: ``(scn, rows of PostgreSQL's text values in meta.columns
        order, done)`` — for a caller that parses and encodes a page a column at a time
        (:mod:`~._pgcolumns`)."""
        meta = self._meta(table)
        cols = ", ".join(_q(c.name) for c in meta.columns)
        scn = self.start_scn
        # no ORDER BY: one cursor over one snapshot needs none, and a sequential scan reads cheapest
        with self._conn.cursor(name="headrace_snapshot") as cur:
            cur.itersize = page_rows
            cur.execute(f"SELECT {cols} FROM {_qualified(table)}")
            while True:
                raw_rows = cur.fetchmany(page_rows)
                done = len(raw_rows) < page_rows
                yield scn, raw_rows, done
                if done:
                    return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        with contextlib.suppress(Exception):
            self._conn.close()


def parse_rows(meta: TableMeta, scn: int, parsers: list[Any], raw_rows: list[tuple[Any, ...]]) -> list[RowChange]:
    """The ``r`` changes of rows of raw text values (in ``meta.columns`` order), parsed a column at a
    time by the stream's own parsers (``PgType.parse``; text columns need none) — the same values,
    with one Python call per value instead of a dict comprehension per row."""
    if not raw_rows:
        return []
    names = [c.name for c in meta.columns]
    cols: list[Any] = []
    for p, col in zip(parsers, zip(*raw_rows, strict=True), strict=True):
        cols.append(col if p is _pgtypes_str else [None if v is None else p(v) for v in col])
    pos = {n: i for i, n in enumerate(names)}
    key_idx = [pos[k] for k in meta.key]
    out = []
    read = Op.READ
    if len(key_idx) == 1:
        k0 = key_idx[0]
        for vals in zip(*cols, strict=True):
            out.append(RowChange(scn, meta, read, (vals[k0],), None, dict(zip(names, vals, strict=True))))
    else:
        for vals in zip(*cols, strict=True):
            key = tuple(vals[i] for i in key_idx)
            out.append(RowChange(scn, meta, read, key, None, dict(zip(names, vals, strict=True))))
    return out


def _raw_text(conn: Any) -> None:
    """Make ``conn`` return every column as PostgreSQL's text output — what pgoutput sends."""
    import psycopg2.extensions

    with conn.cursor() as cur:
        cur.execute("SELECT oid FROM pg_type")
        oids = tuple(int(r[0]) for r in cur.fetchall())
    conn.rollback()
    raw = psycopg2.extensions.new_type(oids, "HEADRACE_RAW_TEXT", lambda v, _cur: v)
    psycopg2.extensions.register_type(raw, conn)


def take_snapshot(
    dsn: str,
    slot: str,
    publication: str,
    tables: Sequence[str] | None,
    query: Query,
    type_catalog: Callable[[int], CatalogType | None],
    stop: StopFlag | None,
) -> PgSnapshot:
    """A snapshot of ``publication``'s ``tables`` (default: all) aligned with the stream of ``slot``
    (see the module docstring); ``query`` runs catalog queries on an autocommit connection."""
    from .postgres import connect

    temp = snapshot_slot_name(slot)
    drop_slot(query, temp)  # a leftover of a crashed snapshot
    _wait_for(query, slot, publication, stop)
    conn = connect(dsn)
    try:
        conn.autocommit = False
        _raw_text(conn)
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        rconn = connect(dsn, replication=True)
        try:
            cur = rconn.cursor()
            try:
                cur.execute(f"CREATE_REPLICATION_SLOT {_q(temp)} LOGICAL pgoutput EXPORT_SNAPSHOT")
            except Exception as exc:
                raise UsageError(f"cannot create the snapshot slot {temp!r}: {str(exc).strip()}") from exc
            _name, lsn, snapshot_name, _plugin = cur.fetchone()
            with conn.cursor() as c:
                c.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_name,))
        finally:
            rconn.close()
        drop_slot(query, temp)  # the transaction holds the snapshot now
        start = parse_lsn(lsn) - 1
        metas, parsers, types = _tables(conn, publication, tables, type_catalog)
        log.info("snapshot_taken", start_scn=start, consistent_lsn=lsn, tables=[m.name for m in metas])
        return PgSnapshot(conn, start, metas, parsers, types)
    except BaseException:
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(Exception):
            drop_slot(query, temp)
        raise


_KEY_COLUMNS = (
    "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, pos) ON true "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = %s AND {which} ORDER BY k.pos"
)


def _tables(
    conn: Any, publication: str, wanted: Sequence[str] | None, type_catalog: Callable[[int], CatalogType | None]
) -> tuple[list[TableMeta], dict[str, list[Any]], dict[str, list[PgType]]]:
    """The published tables as the stream's Relation messages describe them, read in ``conn``'s snapshot."""

    def q(sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    rows = q(
        "SELECT c.oid::int, n.nspname, c.relname, c.relreplident FROM pg_publication_tables p "
        "JOIN pg_namespace n ON n.nspname = p.schemaname "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
        "WHERE p.pubname = %s ORDER BY n.nspname, c.relname",
        (publication,),
    )
    metas: list[TableMeta] = []
    parsers: dict[str, list[Any]] = {}
    types: dict[str, list[PgType]] = {}
    for relid, nsp, rel, ident in rows:
        name = table_name(nsp, rel)
        if wanted is not None and name not in wanted:
            continue
        # pgoutput's columns: not dropped, not generated, in attnum order
        cols = q(
            "SELECT attname, atttypid::int, atttypmod, attnotnull FROM pg_attribute WHERE attrelid = %s "
            "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (int(relid),),
        )
        pk = tuple(str(r[0]) for r in q(_KEY_COLUMNS.format(which="i.indisprimary"), (int(relid),)))
        # the replica identity's columns, as pgoutput flags them (in column order)
        index_cols: tuple[str, ...] = ()
        if ident == "f":
            identity = tuple(str(c[0]) for c in cols)
        elif ident == "i":
            index_cols = tuple(str(r[0]) for r in q(_KEY_COLUMNS.format(which="i.indisreplident"), (int(relid),)))
            identity = tuple(str(c[0]) for c in cols if c[0] in index_cols)
        elif ident == "d":
            identity = tuple(str(c[0]) for c in cols if c[0] in pk)
        else:
            identity = ()
        resolved = [(str(n), resolve_type(int(t), int(m), type_catalog)) for n, t, m, _nn in cols]
        catalog = RelationCatalog(pk, frozenset(str(n) for n, _t, _m, nn in cols if nn), index_cols)
        metas.append(build_meta(name, resolved, identity, ident, catalog))
        parsers[name] = [t.parse for _n, t in resolved]
        types[name] = [t for _n, t in resolved]
    missing = sorted(set(wanted or ()) - {m.name for m in metas})
    if missing:
        raise UsageError(f"tables {missing} are not in the publication {publication!r}")
    return metas, parsers, types


def _wait_for(query: Query, slot: str, publication: str, stop: StopFlag | None) -> None:
    """Wait until ``slot`` and ``publication`` exist (the relay creates both)."""
    warned = False
    while True:
        if query("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)) and query(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)
        ):
            return
        if not warned:
            log.warning(
                "snapshot_waiting_for_relay",
                slot=slot,
                publication=publication,
                detail="start the relay first (it creates both); the snapshot is aligned with its slot",
            )
            warned = True
        if stop is None:
            time.sleep(1.0)
        elif stop.wait(1.0):
            raise TransientError("stopped while waiting for the relay's slot and publication")


def drop_slot(query: Query, slot: str, clock: Callable[[], float] = time.monotonic) -> None:
    """Drop ``slot`` if it exists; a session still holding it (a crashed snapshot's) is ended first."""
    deadline = clock() + 30.0
    while True:
        rows = query("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not rows:
            return
        (pid,) = rows[0]
        if pid is not None:
            log.warning("snapshot_slot_in_use_terminating", slot=slot, pid=pid)
            query("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            with contextlib.suppress(Exception):
                query("SELECT pg_drop_replication_slot(%s)", (slot,))
                log.info("snapshot_slot_dropped", slot=slot)
        if clock() > deadline:
            raise UsageError(f"cannot drop the leftover snapshot slot {slot!r}; drop it by hand")
        time.sleep(0.2)
