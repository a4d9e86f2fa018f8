"""Seeding the snapshot store from PostgreSQL: one exported snapshot from a temporary seeding slot.

Theory of operation. The relay's slot (``bootstrap.seed_slot``) and publication
(``bootstrap.seed_publication``) must exist first — the relay creates them on start; seeding waits
for them. Then:

1. ``CREATE_REPLICATION_SLOT <seed_slot>_seed LOGICAL pgoutput EXPORT_SNAPSHOT`` (the relay source's
   :meth:`~headrace.relay.sources.postgres.PostgresSource.export_snapshot`) gives the slot's
   consistent point ``C`` and a snapshot name. By construction of logical decoding's snapshot, the
   snapshot sees exactly the transactions whose commit record starts before ``C``; every later one
   would be decoded from that slot. A relay SCN is a transaction's commit LSN (the start of its
   commit record), a global WAL position, so the same split holds for the relay's own slot: the
   snapshot holds every window with SCN < ``C`` and none with SCN ≥ ``C``. ``start_scn = high_scn =
   C - 1``; a new store generation starts there and the follower asks the relay for ``since = C - 1``
   (windows with SCN ≥ ``C``) while the tables are read.
2. One ``REPEATABLE READ READ ONLY`` transaction imports the snapshot (``SET TRANSACTION SNAPSHOT``);
   the seeding slot is dropped right after (the transaction keeps the snapshot, the slot is no longer
   needed and would only retain WAL). Every published table kept by the bootstrap server is read in
   primary-key order through a server-side cursor, ``seed_page_rows`` rows per store transaction. A
   snapshot read takes only ``ACCESS SHARE`` locks: writers are never blocked (only DDL such as
   ``ALTER TABLE``/``TRUNCATE`` waits).
3. Values arrive as PostgreSQL's text output (every type is read as raw text under the relay's
   session settings) and go through the relay's own parsers (:func:`resolve_type`); the schema of each
   table is the relay's (:meth:`PostgresSource.tables`, the same reflection the stream's Relation
   messages go through), so an ``r`` frame carries the relay's fingerprint and values.

Why the relay still has every change after ``C``: the relay's slot existed before the seeding slot
(seeding waits for it), and the relay confirms its slot only up to the SCN the bootstrap server
acknowledged (``relay.durable_consumers``), which is ≤ ``C - 1`` until this seed's log is applied.

Resume-state contract. The ``seed`` state row ``{method, start_scn, high_scn, snapshot_lsn, tables,
table, rows, done}`` is saved with each page, for status. An exported snapshot dies with the session
that read it, so a seeding interrupted by a crash cannot continue inside it, and pages from another
snapshot taken later would show rows newer than ``C - 1`` that the log would have to catch up past
before the snapshot could be served (with no writes, it never would). So a restart finds ``done =
false`` and **seeds a new generation from scratch** (:mod:`._seeder`, reason ``seed_interrupted``):
it drops a leftover seeding slot (and ends its session if it is still open), takes a new snapshot
``C' ≥ C``, starts a new store generation at ``C' - 1`` (a generation already served stays served
until this one is ready) and the follower follows it from there. The daemon holds the follower back
until the new generation exists. Correctness first: the cost of a crash is one more full read of
the tables. Pages for a generation that was replaced meanwhile are refused by the store and the
seed stops.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from .._logging import get_logger
from ..errors import UsageError
from ..relay import (
    Codecs,
    Event,
    Op,
    PostgresSourceConfig,
    RelayConfig,
    RowChange,
    SchemaRegistry,
    TableMeta,
    encode_event,
    encode_key,
)
from ._apply import ReadFrame, merge
from ._seed import StopFlag
from ._store import Store

__all__ = ["seed_postgres", "seeding_slot_name"]

log = get_logger("bootstrap.seed.postgres")


def seeding_slot_name(relay_slot: str) -> str:
    """The temporary seeding slot's name: the relay's slot name + ``_seed`` (≤ 63 characters)."""
    return f"{relay_slot[:58]}_seed"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    schema, dot, name = table.rpartition(".")
    return f"{_q(schema)}.{_q(name)}" if dot else _q(name)


def _drop_slot(source: Any, slot: str, clock: Callable[[], float] = time.monotonic) -> None:
    """Drop ``slot`` if it exists; a session still holding it (a crashed server's) is ended first."""
    deadline = clock() + 30.0
    while True:
        rows = source._query("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not rows:
            return
        (pid,) = rows[0]
        if pid is not None:
            log.warning("seeding_slot_in_use_terminating", slot=slot, pid=pid)
            source._query("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            with contextlib.suppress(Exception):
                source._query("SELECT pg_drop_replication_slot(%s)", (slot,))
                log.info("seeding_slot_dropped", slot=slot)
        if clock() > deadline:
            raise UsageError(f"cannot drop the leftover seeding slot {slot!r}; drop it by hand")
        time.sleep(0.2)


def _wait_for_relay(source: Any, relay_slot: str, publication: str, stop: StopFlag | None) -> bool:
    """Wait until the relay's slot and publication exist; False when stopped first."""
    warned = False
    while stop is None or not stop.is_set():
        slot = source._query("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (relay_slot,))
        pub = source._query("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,))
        if slot and pub:
            return True
        if not warned:
            log.warning(
                "seed_waiting_for_relay",
                slot=relay_slot,
                publication=publication,
                detail="start the relay first (it creates both); set bootstrap.seed_slot/seed_publication to its names",
            )
            warned = True
        if stop is not None:
            stop.wait(1.0)
        else:
            time.sleep(1.0)
    return False


def _parsers(source: Any, meta: TableMeta) -> list[Callable[[str], Any]]:
    """The relay's text parser of each column of ``meta`` (same resolution as the stream's)."""
    from ..relay.sources.postgres import resolve_type

    cols = source._query(
        "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        (_qualified(meta.name),),
    )
    if [c[0] for c in cols] != [c.name for c in meta.columns]:
        raise UsageError(f"table {meta.name!r} changed while seeding started; restart the bootstrap server")
    return [resolve_type(int(typ), int(mod), source._type_catalog).parse for _n, typ, mod in cols]


def _raw_text(conn: Any) -> None:
    """Make the connection return every column as PostgreSQL's text output (what pgoutput sends)."""
    import psycopg2.extensions

    with conn.cursor() as cur:
        cur.execute("SELECT oid FROM pg_type")
        oids = tuple(int(r[0]) for r in cur.fetchall())
    conn.rollback()
    raw = psycopg2.extensions.new_type(oids, "HEADRACE_RAW_TEXT", lambda v, _cur: v)
    psycopg2.extensions.register_type(raw, conn)


def seed_postgres(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    *,
    relay_slot: str = "headrace",
    publication: str = "headrace",
    positions: threading.Event | None = None,
    reason: str = "initial",
) -> dict[str, Any]:
    """Seed a new store generation from the PostgreSQL database at ``url`` (see the module docstring).

    ``positions`` is set once the new generation exists (the follower follows it from its start).
    """
    from ..relay.sources.postgres import PostgresSource, connect, format_lsn

    slot = seeding_slot_name(relay_slot)
    source = PostgresSource(RelayConfig(source=url, postgres=PostgresSourceConfig(slot=slot, publication=publication)))
    state: dict[str, Any] = {}
    try:
        _drop_slot(source, slot)  # a leftover of a crashed run
        if not _wait_for_relay(source, relay_slot, publication, stop):
            return state
        metas = {m.name: m for m in source.tables() if tables is None or m.name in tables}
        missing = sorted(set(tables or ()) - set(metas))
        if missing:
            raise UsageError(f"bootstrap.sources {missing} are not in the publication {publication!r}")
        for m in metas.values():
            if not m.key:
                raise UsageError(f"table {m.name!r} has no primary key; give it one to seed it")
        parsers = {name: _parsers(source, m) for name, m in metas.items()}
        registry = SchemaRegistry()
        codecs = Codecs(registry)
        for m in metas.values():
            registry.register(m)

        if reason == "seed_interrupted":
            log.warning(
                "seed_restarting",
                previous=store.state()["building"],
                why="an exported snapshot does not survive a crash",
            )
        store.put_schemas(v for t in registry.tables() for v in registry.versions(t))

        conn = connect(source.dsn)
        try:
            conn.autocommit = False
            _raw_text(conn)
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with source.export_snapshot() as snap:
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snap.snapshot_name,))
                    cur.execute("SELECT 1")
                start = snap.after_scn
            _drop_slot(source, slot)  # the transaction holds the snapshot now
            state = {
                "method": "postgresql_exported_snapshot",
                "start_scn": start,
                "high_scn": start,
                "snapshot_lsn": format_lsn(snap.consistent_lsn),
                "tables": sorted(metas),
                "table": None,
                "rows": 0,
                "done": False,
            }
            gen = store.begin_generation(start, state, reason)
            if positions is not None:
                positions.set()
            log.info(
                "seed_started",
                gen=gen,
                reason=reason,
                start_scn=start,
                snapshot_lsn=state["snapshot_lsn"],
                tables=state["tables"],
            )
            for name in sorted(metas):
                state = _read_table(store, gen, conn, metas[name], parsers[name], codecs, state, page_rows, stop)
                if (stop is not None and stop.is_set()) or state.get("abandoned"):
                    return state
            conn.rollback()
        finally:
            conn.close()
        state = {**state, "done": True, "table": None, "tables": []}
        store.set_seed(state, gen=gen)
        log.info("seed_done", gen=gen, start_scn=state["start_scn"], rows=state["rows"])
        return state
    finally:
        if positions is not None:
            positions.set()
        with contextlib.suppress(Exception):
            _drop_slot(source, slot)
        source.close()


def _read_table(
    store: Store,
    gen: int,
    conn: Any,
    meta: TableMeta,
    parsers: list[Callable[[str], Any]],
    codecs: Codecs,
    state: dict[str, Any],
    page_rows: int,
    stop: StopFlag | None,
) -> dict[str, Any]:
    scn = int(state["start_scn"])
    codec = codecs.for_change(RowChange(scn, meta, Op.READ, (), None, {}))
    names = [c.name for c in meta.columns]
    cols = ", ".join(_q(n) for n in names)
    order = ", ".join(_q(k) for k in meta.key)
    state = {**state, "table": meta.name}
    with conn.cursor(name="headrace_seed") as cur:
        cur.itersize = page_rows
        cur.execute(f"SELECT {cols} FROM {_qualified(meta.name)} ORDER BY {order}")
        while True:
            if stop is not None and stop.is_set():
                return state
            rows = cur.fetchmany(page_rows)
            if not rows:
                break
            frames = []
            for raw in rows:
                values = {n: None if v is None else parse(v) for n, parse, v in zip(names, parsers, raw, strict=True)}
                key = encode_key([values[k] for k in meta.key])
                ev = Event(scn, meta.name, Op.READ, key, 0, codec.version.fingerprint, None, codec.encode(values))
                frames.append(ReadFrame(scn, meta.name, key, encode_event(ev)))
            state = {**state, "rows": state["rows"] + len(rows)}
            if not store.apply(merge([frames]).values(), scn, seed=state, gen=gen):
                log.warning("seed_abandoned", gen=gen, detail="a newer generation replaced this one")
                return {**state, "abandoned": True}
    tables_left = [t for t in state["tables"] if t != meta.name]
    state = {**state, "tables": tables_left, "table": None}
    if not store.set_seed(state, gen=gen):
        return {**state, "abandoned": True}
    return state
