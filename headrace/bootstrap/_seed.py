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
A seed fills a new store generation (:mod:`._store`); the served one (if any) stays served until
the new one is ready — the applier then promotes it.

Resume-state contract: the generation's ``seed`` state row ``{start_scn, high_scn, tables, table,
after, done}`` is saved with each page; a restart (``seed_interrupted``) continues after ``after``
in ``table`` of the same generation. A page cut by kill -9 is read again. A page for a generation
that was replaced meanwhile is refused by the store and the seed stops. PostgreSQL seeding (an
exported snapshot from a temporary seeding slot) is in :mod:`._seed_pg`, MariaDB/MySQL seeding (a
consistent-snapshot transaction and its binlog position) in :mod:`._seed_mysql`.
"""

from __future__ import annotations

import sqlite3
import ssl
import threading
from typing import Any, Protocol

from .._logging import get_logger
from ..errors import ConfigError, UsageError
from ..relay import Codecs, Op, RelayConfig, RowChange, SchemaRegistry, TableMeta, encode_key
from ._apply import RowOp, read_frames, sort_key
from ._seed_progress import SeedProgress
from ._store import Store
from ._store_state import StoreState

__all__ = ["StopFlag", "seed", "seed_needed", "seed_sqlite"]

log = get_logger("bootstrap.seed")

ROWID_COLUMN = "__rowid__"


class StopFlag(Protocol):
    """What a seed checks between pages (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


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


def seed_needed(state: StoreState) -> str | None:
    """Why the store needs a seed now (``initial``, ``seed_interrupted``), or None."""
    b = state.get("building")
    seed = b["seed"] if b is not None else None
    if seed is not None and not seed.get("done"):
        return "seed_interrupted"
    if state.get("gen") is None and b is None:
        return "initial"
    return None


def seed_sqlite(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    positions: threading.Event | None = None,
    reason: str = "initial",
    progress: SeedProgress | None = None,
) -> dict[str, Any]:
    """Seed a new store generation from the SQLite file at ``url`` — or, for ``seed_interrupted``,
    resume the one being built; returns the seed state. ``progress`` counts the rows seeded."""
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

    building = store.state()["building"]
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None, timeout=60.0)
    conn.execute("PRAGMA busy_timeout=60000")
    conn.text_factory = text_or_bytes  # TEXT that is not UTF-8 (SQLite does not check) as its bytes
    try:
        if reason == "seed_interrupted" and building is not None and building["seed"] is not None:
            gen, state = building["gen"], dict(building["seed"])
            log.info("seed_resumed", gen=gen, table=state.get("table"), after=state.get("after"))
        else:
            start = _read_scn(conn)
            state = {"start_scn": start, "high_scn": start, "tables": sorted(metas), "table": None, "done": False}
            gen = store.begin_generation(start, state, reason)
            log.info("seed_started", gen=gen, reason=reason, start_scn=start, tables=state["tables"])
        if positions is not None:
            positions.set()  # the follower follows this generation from its start SCN while we read
        if progress is not None:
            progress.begin(gen, reason, {t: _estimate_rows(conn, t) for t in state["tables"] if t in metas})
        while not state["done"]:
            if stop is not None and stop.is_set():
                if progress is not None:
                    progress.end(False)
                return state
            pending = [t for t in state["tables"] if t in metas]
            if state["table"] is None:
                if not pending:
                    state = {**state, "done": True, "table": None, "after": None}
                    if not store.set_seed(state, gen=gen):
                        if progress is not None:
                            progress.end(False)
                        return state
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
            keys: list[bytes] = []
            afters: list[bytes | None] = []
            codec = codecs.for_change(RowChange(scn, meta, Op.READ, (), None, {})) if rows else None
            for raw in rows:
                assert codec is not None
                # the stream's own conversion, so a seeded row and its logged change are the same bytes
                values = source.convert_row(meta, dict(zip(names, raw, strict=True)))
                keys.append(encode_key([values[k] for k in meta.key]))
                afters.append(codec.encode(values))
            fps = [codec.version.fingerprint] * len(rows) if codec is not None else []
            ops = {}  # by sort key: a page's frames, packed a page at a time
            for key, frame in zip(keys, read_frames(scn, meta.name, fps, keys, afters), strict=True):
                sk = sort_key(key)
                ops[sk] = RowOp(meta.name, sk, scn, frame)
            nxt = dict(state, high_scn=max(state["high_scn"], scn))
            if len(rows) < page_rows:
                nxt["tables"] = [t for t in state["tables"] if t != meta.name]
                nxt["table"] = None
                nxt["after"] = None
            else:
                nxt["after"] = _jsonable([rows[-1][i] for i in key_idx])
            if not store.apply(ops.values(), state["start_scn"], seed=nxt, gen=gen):
                log.warning("seed_abandoned", gen=gen, detail="a newer generation replaced this one")
                if progress is not None:
                    progress.end(False)
                return state
            if progress is not None:
                progress.add(meta.name, len(rows))
            state = nxt
        if progress is not None:
            progress.end(True)
        log.info("seed_done", gen=gen, start_scn=state["start_scn"], high_scn=state["high_scn"])
        return state
    finally:
        conn.close()


def _estimate_rows(conn: sqlite3.Connection, table: str) -> int | None:
    """About how many rows ``table`` has, cheaply: its largest rowid (None for a WITHOUT ROWID table)."""
    try:
        row = conn.execute(f"SELECT max(rowid) FROM {_q(table)}").fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and row[0] is not None else 0


def _read_scn(conn: sqlite3.Connection) -> int:
    from ..relay.sources.sqlite import CHANGES_TABLE

    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (CHANGES_TABLE,)).fetchone()
    return int(row[0]) if row else 0


def seed(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    *,
    relay_slot: str = "headrace",
    publication: str = "headrace",
    positions: threading.Event | None = None,
    reason: str | None = None,
    relays: list[str] | None = None,
    relay_token: str | None = None,
    relay_tls: ssl.SSLContext | None = None,
    progress: SeedProgress | None = None,
) -> dict[str, Any]:
    """Seed from the database at ``url`` by its kind; ``positions`` is set once the generation the
    follower must follow is settled. ``relays``/``relay_token``/``relay_tls``: MySQL/MariaDB seeding waits for one
    of these relays to read the binlog and seeds the tables it serves (:mod:`._seed_mysql`).

    ``reason`` None: seed only when the store needs it (:func:`seed_needed`; otherwise return the
    served seed state); else seed a new generation for that reason (``seed_interrupted`` resumes an
    interrupted SQLite seed instead)."""
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if reason is None:
            st = store.state()
            reason = seed_needed(st)
            if reason is None:
                return dict(st["seed"] or {})
        if scheme == "sqlite":
            return seed_sqlite(store, url, tables, page_rows, stop, positions, reason, progress)
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
                reason=reason,
                progress=progress,
            )
        if scheme in ("mysql", "mariadb"):
            from ._seed_mysql import seed_mysql

            return seed_mysql(
                store,
                url,
                tables,
                page_rows,
                stop,
                relays=relays,
                relay_token=relay_token,
                relay_tls=relay_tls,
                positions=positions,
                reason=reason,
                progress=progress,
            )
    finally:
        if positions is not None:
            positions.set()
    raise ConfigError(
        [f"bootstrap.seed: seeding from {scheme!r} is not supported; use sqlite:///…, postgresql://… or mysql://…"]
    )
