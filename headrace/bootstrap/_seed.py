"""Seeding the snapshot store with the rows that existed before capture began.

Theory of operation (SQLite): the relay's triggers are installed first (idempotently), so every
change from then on reaches the change log. Each *page* is one short read transaction on the source
that reads ``sqlite_sequence``'s counter for the change log — the SCN of the newest change that
transaction can see — together with up to ``seed_page_rows`` rows of one table after the last key
seeded (keyset pagination in key order). In WAL mode such a reader never blocks writers; in rollback
mode it blocks them only for one page. Each page's rows are written to the snapshot store as ``r``
frames in one store transaction together with the seeding progress.

Consistency: the first page's SCN is ``start_scn``; the log store follows the relay from it. A page
read at SCN ``p`` holds every row as of ``p`` ≥ ``start_scn``. The applier starts only when seeding
is done and replays every window after ``start_scn`` in order; re-applying a change a page already
reflected rewrites the same final image, so once ``applied_scn`` ≥ the highest page SCN
(``high_scn``) every key holds its newest image — the snapshot equals the source at ``applied_scn``.
The server refuses snapshot reads (503 ``not_ready``) before that.

Resume-state contract: the ``seed`` state row ``{start_scn, high_scn, tables, table, after, done}``
is saved with each page; a restart continues after ``after`` in ``table``. A page cut by kill -9 is
read again. PostgreSQL seeding (an exported snapshot from a temporary seeding slot) is in
:mod:`._seed_pg`.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from .._logging import get_logger
from ..errors import ConfigError, UsageError
from ..relay import Codecs, Event, Op, RelayConfig, RowChange, SchemaRegistry, TableMeta, encode_event, encode_key
from ._apply import ReadFrame, merge
from ._store import Store

__all__ = ["seed", "seed_sqlite"]

log = get_logger("bootstrap.seed")

ROWID_COLUMN = "__rowid__"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _page_sql(meta: TableMeta, with_after: bool, limit: int) -> str:
    cols = ", ".join("rowid" if c.name == ROWID_COLUMN else _q(c.name) for c in meta.columns)
    keys = ["rowid" if k == ROWID_COLUMN else _q(k) for k in meta.key]
    where = f" WHERE ({', '.join(keys)}) > ({', '.join('?' for _ in keys)})" if with_after else ""
    return f"SELECT {cols} FROM {_q(meta.name)}{where} ORDER BY {', '.join(keys)} LIMIT {int(limit)}"


def _jsonable(values: list[Any]) -> list[Any]:
    return [{"hex": v.hex()} if isinstance(v, bytes) else v for v in values]


def _unjson(values: list[Any]) -> list[Any]:
    return [bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for v in values]


def seed_sqlite(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: threading.Event | None = None,
    positions: threading.Event | None = None,
) -> dict[str, Any]:
    """Seed (or resume seeding) the snapshot store from the SQLite file at ``url``; returns the seed state."""
    from ..relay.sources.sqlite import SqliteSource, sqlite_path, text_or_bytes

    source = SqliteSource(RelayConfig(source=url, tables=tables))
    source.open()  # installs capture (idempotent): every change after the first page is logged
    metas = {m.name: m for m in source.tables()}
    source.close()
    for m in metas.values():
        if not m.key:
            raise UsageError(f"table {m.name!r} has no key; give it a primary key to seed it")
    registry = SchemaRegistry()
    codecs = Codecs(registry)
    for m in metas.values():
        registry.register(m)
    store.put_schemas(v for t in registry.tables() for v in registry.versions(t))

    state: dict[str, Any] | None = store.state()["seed"]
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=60.0)
    conn.execute("PRAGMA busy_timeout=60000")
    conn.text_factory = text_or_bytes  # TEXT that is not UTF-8 (SQLite does not check) as its bytes
    try:
        if state is None:
            start = _read_scn(conn)
            state = {"start_scn": start, "high_scn": start, "tables": sorted(metas), "table": None, "done": False}
            store.reset()
            store.init_positions(start)
            store.set_seed(state)
            log.info("seed_started", start_scn=start, tables=state["tables"])
        if positions is not None:
            positions.set()  # the store's positions are this seed's (a resumed one keeps them)
        while not state["done"]:
            if stop is not None and stop.is_set():
                return state
            pending = [t for t in state["tables"] if t in metas]
            if state["table"] is None:
                if not pending:
                    state = {**state, "done": True, "table": None, "after": None}
                    store.set_seed(state)
                    break
                state = {**state, "table": pending[0], "after": None}
            meta = metas[state["table"]]
            after = _unjson(state["after"]) if state.get("after") is not None else None
            conn.execute("BEGIN")
            try:
                scn = _read_scn(conn)
                rows = conn.execute(_page_sql(meta, after is not None, page_rows), after or ()).fetchall()
            finally:
                conn.execute("COMMIT")
            names = [c.name for c in meta.columns]
            key_idx = [i for i, c in enumerate(meta.columns) if c.name in meta.key]
            frames = []
            codec = codecs.for_change(RowChange(scn, meta, Op.READ, (), None, {})) if rows else None
            for raw in rows:
                assert codec is not None
                # the stream's own conversion, so a seeded row and its logged change are the same bytes
                values = source.convert_row(meta, dict(zip(names, raw, strict=True)))
                key = encode_key([values[k] for k in meta.key])
                ev = Event(scn, meta.name, Op.READ, key, 0, codec.version.fingerprint, None, codec.encode(values))
                frames.append(ReadFrame(scn, meta.name, key, encode_event(ev)))
            nxt = dict(state, high_scn=max(state["high_scn"], scn))
            if len(rows) < page_rows:
                nxt["tables"] = [t for t in state["tables"] if t != meta.name]
                nxt["table"] = None
                nxt["after"] = None
            else:
                nxt["after"] = _jsonable([rows[-1][i] for i in key_idx])
            store.apply(merge([frames]).values(), state["start_scn"], seed=nxt)
            state = nxt
        log.info("seed_done", start_scn=state["start_scn"], high_scn=state["high_scn"])
        return state
    finally:
        conn.close()


def _read_scn(conn: sqlite3.Connection) -> int:
    from ..relay.sources.sqlite import CHANGES_TABLE

    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (CHANGES_TABLE,)).fetchone()
    return int(row[0]) if row else 0


def seed(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: threading.Event | None = None,
    *,
    relay_slot: str = "headrace",
    publication: str = "headrace",
    positions: threading.Event | None = None,
) -> dict[str, Any]:
    """Seed from the database at ``url`` by its kind; ``positions`` is set once the store's positions
    (``log_scn`` to follow from) are this seed's."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if scheme == "sqlite":
            return seed_sqlite(store, url, tables, page_rows, stop, positions)
        if scheme in ("postgresql", "postgres"):
            from ._seed_pg import seed_postgres

            return seed_postgres(
                store,
                url,
                tables,
                page_rows,
                stop,
                relay_slot=relay_slot,
                publication=publication,
                positions=positions,
            )
    finally:
        if positions is not None:
            positions.set()
    raise ConfigError([f"bootstrap.seed: seeding from {scheme!r} is not supported; use sqlite:///… or postgresql://…"])
