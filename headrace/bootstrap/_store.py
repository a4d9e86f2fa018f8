"""The bootstrap server's two stores in one SQL database (any SQLAlchemy URL; SQLite by default).

Tables (created if missing):

* ``headrace_boot_log(scn PK, first_scn, ts_ms, events, tables, data)`` — the log store: one row per
  window as the relay served it (``data`` is its frames back to back).
* ``headrace_boot_snapshot(gen, source, sort_key, scn, frame, PK(gen, source, sort_key))`` — the
  snapshot store: per *generation*, the newest row per key as a ready ``r`` frame (:mod:`._apply`).
* ``headrace_boot_state(k PK, v)`` — ``version`` (of these rows, see :mod:`._store_state`),
  ``serving`` (the generation served), ``building`` (a generation
  being seeded, if any), ``last_gen``, ``reseeds`` (JSON: count, last reason and time) and, per
  generation ``g``: ``g<g>.log_scn`` (newest window logged for it), ``g<g>.applied_scn`` (newest window
  merged into its rows), ``g<g>.log_floor`` (the log holds every window after it), ``g<g>.seed`` (JSON
  progress of its seeding).
* ``headrace_boot_schemas(fingerprint PK, tbl, version, body)`` — every writer schema an event in
  either store uses, so subscribers can decode them when the relay is gone.

Generations. A seed (the first one, or a re-seed after the relay no longer had the log's position)
fills a *new* generation while the serving one keeps being served. Its log windows go into the same
log table — they all have SCNs above the serving generation's ``log_scn``, which stops moving once
the follower switched to the new generation — and every reader is bounded by its generation's
``log_scn``. When the new generation's seed is done and its log applied up to the seed's
``high_scn``, :meth:`Store.promote` makes it the served one in one transaction; rows of older
generations are deleted afterwards in batches (:meth:`Store.collect_garbage`).

Resume-state contract: everything is in the database and every change is one transaction — a
fetched batch of whole windows together with its generation's ``log_scn``; a merge of windows into
rows together with ``applied_scn``; a seeding page together with its progress; the start of a
generation; a promotion; a compaction together with ``log_floor``. A write for a generation that is
no longer the one it was meant for is refused (returns False), so a thread still working for an
abandoned generation cannot touch the current ones. A restart reads the state rows and goes on;
nothing is half-applied after kill -9.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event

from .._db import create_engine
from .._logging import get_logger
from ..relay import SchemaVersion
from ._apply import RowOp
from ._store_state import (
    STATE_VERSION,
    VERSION_KEY,
    GenState,
    Reseeds,
    SeedProgress,
    StoreState,
    check_version,
    dump_value,
    load_value,
)

__all__ = ["LogWindow", "Store"]

log = get_logger("bootstrap.store")

_md = sa.MetaData()
LOG = sa.Table(
    "headrace_boot_log",
    _md,
    sa.Column("scn", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_scn", sa.BigInteger, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("tables", sa.Text, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
ROWS = sa.Table(
    "headrace_boot_snapshot",
    _md,
    sa.Column("gen", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(255), primary_key=True),
    sa.Column("sort_key", sa.LargeBinary(767), primary_key=True),
    sa.Column("scn", sa.BigInteger, nullable=False),
    sa.Column("frame", sa.LargeBinary, nullable=False),
)
STATE = sa.Table(
    "headrace_boot_state",
    _md,
    sa.Column("k", sa.String(64), primary_key=True),
    sa.Column("v", sa.Text, nullable=False),
)
SCHEMAS = sa.Table(
    "headrace_boot_schemas",
    _md,
    sa.Column("fingerprint", sa.String(16), primary_key=True),
    sa.Column("tbl", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)
_SQLITE_UPSERT = (
    f"INSERT INTO {ROWS.name} (gen, source, sort_key, scn, frame) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (gen, source, sort_key) DO UPDATE SET scn = excluded.scn, frame = excluded.frame"
)
_SQLITE_PAGE = f"SELECT sort_key, frame FROM {ROWS.name} WHERE gen = ? AND source = ? ORDER BY sort_key LIMIT ?"
_SQLITE_PAGE_AFTER = (
    f"SELECT sort_key, frame FROM {ROWS.name} WHERE gen = ? AND source = ? AND sort_key > ? ORDER BY sort_key LIMIT ?"
)
_SQLITE_DELETE = f"DELETE FROM {ROWS.name} WHERE gen = ? AND source = ? AND sort_key = ?"
#: the snapshot table of stores written before generations (migrated into generation 1 on start)
_OLD_ROWS = "headrace_boot_rows"
_POSITIONS = ("log_scn", "applied_scn", "log_floor")


@dataclass(frozen=True, slots=True)
class LogWindow:
    """One window of the log store."""

    scn: int
    first_scn: int
    ts_ms: int
    events: int
    tables: frozenset[str]
    data: bytes


def make_engine(url: str) -> sa.Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, full sync and ``BEGIN IMMEDIATE`` for writes."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60.0, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("hr_write") else "BEGIN")

    return engine


def _sqlite_rows(
    conn: sa.Connection, gen: int, source: str, after: tuple[str, bytes] | None, limit: int
) -> list[tuple[bytes, bytes]]:
    """``(sort_key, frame)`` of up to ``limit`` rows of ``source`` in key order after the cursor,
    read with the SQLite driver's own cursor (inside ``conn``'s transaction)."""
    k = after[1] if after is not None and source == after[0] else None
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if k is not None:
            cur.execute(_SQLITE_PAGE_AFTER, (gen, source, k, limit))
        else:
            cur.execute(_SQLITE_PAGE, (gen, source, limit))
        rows = cur.fetchall()
    finally:
        cur.close()
    return cast("list[tuple[bytes, bytes]]", rows)


def _k(gen: int, name: str) -> str:
    return f"g{gen}.{name}"


#: re-seed times kept in ``reseeds.recent_ms`` (health counts those of the last minute)
RECENT_RESEEDS = 10


class Store:
    """The log store, the snapshot store and their state (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.writer = self.engine.execution_options(hr_write=True)
        _md.create_all(self.engine)
        self._migrate()

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        """Check the state rows' version (a newer one is refused) and bring an older store up to date."""
        with self.writer.begin() as conn:
            raw = dict(conn.execute(sa.select(STATE.c.k, STATE.c.v)).all())
            version = check_version(raw, self.engine.url.render_as_string(hide_password=True))
            if version == 0:
                self._migrate_to_generations(conn, raw)
            if raw.get(VERSION_KEY) != str(STATE_VERSION):
                self._put(conn, VERSION_KEY, str(STATE_VERSION))

    def _migrate_to_generations(self, conn: sa.Connection, raw: dict[str, str]) -> None:
        """A store from before generations (version 0): its rows and positions become generation 1, served."""
        log.warning("store_migrated_to_generations", detail="the existing rows and log become generation 1")
        for k in (*_POSITIONS, "seed"):
            if k in raw:
                self._put(conn, _k(1, k), raw[k])
                conn.execute(STATE.delete().where(STATE.c.k == k))
        self._put(conn, "serving", "1")
        self._put(conn, "last_gen", "1")
        if sa.inspect(conn).has_table(_OLD_ROWS):
            conn.exec_driver_sql(
                f"INSERT INTO {ROWS.name} (gen, source, sort_key, scn, frame) "
                f"SELECT 1, source, sort_key, scn, frame FROM {_OLD_ROWS}"
            )
            conn.exec_driver_sql(f"DROP TABLE {_OLD_ROWS}")

    # -- state -------------------------------------------------------------------------------

    @staticmethod
    def _get(conn: sa.Connection, k: str) -> str | None:
        row = conn.execute(sa.select(STATE.c.v).where(STATE.c.k == k)).first()
        return None if row is None else str(row[0])

    @staticmethod
    def _put(conn: sa.Connection, k: str, v: str) -> None:
        if conn.execute(STATE.update().where(STATE.c.k == k).values(v=v)).rowcount == 0:
            conn.execute(STATE.insert().values(k=k, v=v))

    def state(self) -> StoreState:
        """The served generation's ``log_scn``, ``applied_scn``, ``log_floor`` (ints or None) and
        ``seed`` (dict or None); ``gen`` (the served generation or None); ``building`` (the generation
        being seeded: a dict with ``gen`` and the same four keys, or None); ``reseeds`` (dict)."""
        with self.engine.connect() as conn:
            return self._state(conn)

    def _state(self, conn: sa.Connection) -> StoreState:
        raw = dict(conn.execute(sa.select(STATE.c.k, STATE.c.v)).all())

        def gen_state(g: int) -> GenState:
            def pos(k: str) -> int | None:
                v = raw.get(_k(g, k))
                return int(v) if v is not None else None

            seed = raw.get(_k(g, "seed"))
            return GenState(
                gen=g,
                log_scn=pos("log_scn"),
                applied_scn=pos("applied_scn"),
                log_floor=pos("log_floor"),
                seed=load_value(SeedProgress, seed, _k(g, "seed")) if seed is not None else None,
            )

        served = gen_state(int(raw["serving"])) if "serving" in raw else None
        return StoreState(
            gen=served["gen"] if served else None,
            log_scn=served["log_scn"] if served else None,
            applied_scn=served["applied_scn"] if served else None,
            log_floor=served["log_floor"] if served else None,
            seed=served["seed"] if served else None,
            building=gen_state(int(raw["building"])) if "building" in raw else None,
            reseeds=load_value(Reseeds, raw["reseeds"], "reseeds") if "reseeds" in raw else {"count": 0},
        )

    def target(self) -> GenState | None:
        """The generation the log is followed for: the one being built if any, else the served one."""
        st = self.state()
        if st["building"] is not None:
            return st["building"]
        if st["gen"] is None:
            return None
        return GenState(
            gen=st["gen"],
            log_scn=st["log_scn"],
            applied_scn=st["applied_scn"],
            log_floor=st["log_floor"],
            seed=st["seed"],
        )

    def _target_gen(self, conn: sa.Connection) -> int | None:
        b = self._get(conn, "building")
        if b is not None:
            return int(b)
        s = self._get(conn, "serving")
        return int(s) if s is not None else None

    def _live(self, conn: sa.Connection, gen: int) -> bool:
        return gen in (self._int(conn, "serving"), self._int(conn, "building"))

    def _int(self, conn: sa.Connection, k: str) -> int | None:
        v = self._get(conn, k)
        return int(v) if v is not None else None

    def _serving(self, conn: sa.Connection) -> int:
        g = self._int(conn, "serving")
        if g is None:
            raise LookupError("no generation is served yet")
        return g

    def set_seed(self, seed: dict[str, Any] | None, conn: sa.Connection | None = None, gen: int | None = None) -> bool:
        """Save a generation's seeding progress (default: the served one); False if it is not live."""
        if conn is None:
            with self.writer.begin() as c:
                return self.set_seed(seed, c, gen)
        g = gen if gen is not None else self._serving(conn)
        if not self._live(conn, g):
            return False
        if seed is None:
            conn.execute(STATE.delete().where(STATE.c.k == _k(g, "seed")))
        else:
            self._put(conn, _k(g, "seed"), dump_value(SeedProgress, seed, "seed"))
        return True

    def init_positions(self, scn: int) -> int:
        """Start a store with no generation at ``scn`` (no seeding): a new generation, served at once,
        whose log follows from ``scn`` and whose (empty) snapshot is at ``scn``. Returns it."""
        with self.writer.begin() as conn:
            g = int(self._get(conn, "last_gen") or 0) + 1
            self._put(conn, "last_gen", str(g))
            for k in _POSITIONS:
                self._put(conn, _k(g, k), str(scn))
            self._put(conn, "serving", str(g))
            return g

    def begin_generation(self, start_scn: int, seed: dict[str, Any], reason: str) -> int:
        """Start seeding a new generation at ``start_scn`` (replacing one being built); returns it.

        In one transaction: the new generation's positions and seed state; log windows above the
        served generation's ``log_scn`` (an abandoned build's) are deleted; a re-seed (``reason``
        other than ``initial``) is counted in ``reseeds``.
        """
        with self.writer.begin() as conn:
            g = int(self._get(conn, "last_gen") or 0) + 1
            self._put(conn, "last_gen", str(g))
            old = self._int(conn, "building")
            if old is not None:
                for k in (*_POSITIONS, "seed"):
                    conn.execute(STATE.delete().where(STATE.c.k == _k(old, k)))
            serving = self._int(conn, "serving")
            head = self._int(conn, _k(serving, "log_scn")) if serving is not None else None
            conn.execute(LOG.delete().where(LOG.c.scn > (head if head is not None else -(1 << 63))))
            for k in _POSITIONS:
                self._put(conn, _k(g, k), str(start_scn))
            self._put(conn, _k(g, "seed"), dump_value(SeedProgress, seed, "seed"))
            self._put(conn, "building", str(g))
            if reason != "initial":
                prev = load_value(Reseeds, self._get(conn, "reseeds") or '{"count": 0}', "reseeds")
                now_ms = int(time.time() * 1000)
                info = {
                    "count": int(prev.get("count", 0)) + 1,
                    "last_reason": reason,
                    "last_time_ms": now_ms,
                    "last_gen": g,
                    "recent_ms": [*prev.get("recent_ms", []), now_ms][-RECENT_RESEEDS:],  # for health
                }
                self._put(conn, "reseeds", dump_value(Reseeds, info, "reseeds"))
            return g

    def promote(self, gen: int) -> bool:
        """Serve the generation being built (its seed is done and applied); False if it is not the one."""
        with self.writer.begin() as conn:
            if self._int(conn, "building") != gen:
                return False
            old = self._int(conn, "serving")
            if old is not None:
                for k in (*_POSITIONS, "seed"):
                    conn.execute(STATE.delete().where(STATE.c.k == _k(old, k)))
            self._put(conn, "serving", str(gen))
            conn.execute(STATE.delete().where(STATE.c.k == "building"))
            floor = self._int(conn, _k(gen, "log_floor"))
            if floor is not None:  # the replaced generation's log: nothing can catch up through it now
                conn.execute(LOG.delete().where(LOG.c.scn <= floor))
            return True

    def collect_garbage(self, batch: int = 20_000) -> int:
        """Delete up to ``batch`` rows of generations neither served nor being built; returns how many."""
        with self.writer.begin() as conn:
            live = [g for g in (self._int(conn, "serving"), self._int(conn, "building")) if g is not None]
            q = sa.select(ROWS.c.gen, ROWS.c.source, ROWS.c.sort_key).limit(batch)
            if live:
                q = q.where(ROWS.c.gen.not_in(live))
            dead = [{"g": r[0], "s": r[1], "k": r[2]} for r in conn.execute(q)]
            if dead:
                conn.execute(
                    ROWS.delete().where(
                        ROWS.c.gen == sa.bindparam("g"),
                        ROWS.c.source == sa.bindparam("s"),
                        ROWS.c.sort_key == sa.bindparam("k"),
                    ),
                    dead,
                )
            return len(dead)

    def reset(self) -> None:
        """Forget everything."""
        with self.writer.begin() as conn:
            for t in (LOG, ROWS, STATE):
                conn.execute(t.delete())
            self._put(conn, VERSION_KEY, str(STATE_VERSION))

    # -- log store ---------------------------------------------------------------------------

    def append(self, windows: Sequence[LogWindow], scanned_scn: int, gen: int | None = None) -> bool:
        """Add whole windows (SCN order, above ``log_scn``) and move ``log_scn`` of ``gen`` (default:
        the generation followed), in one transaction. False (nothing written) when ``gen`` is not the
        generation the log is followed for any more."""
        with self.writer.begin() as conn:
            target = self._target_gen(conn)
            if target is None or (gen is not None and gen != target):
                return False
            head = self._get(conn, _k(target, "log_scn"))
            head_i = int(head) if head is not None else -1
            rows = [
                {
                    "scn": w.scn,
                    "first_scn": w.first_scn,
                    "ts_ms": w.ts_ms,
                    "events": w.events,
                    "tables": ",".join(sorted(w.tables)),
                    "data": w.data,
                }
                for w in windows
                if w.scn > head_i
            ]
            if rows:
                conn.execute(LOG.insert(), rows)
            if scanned_scn > head_i:
                self._put(conn, _k(target, "log_scn"), str(scanned_scn))
            return True

    def log_windows(
        self, after: int, max_windows: int, max_bytes: int | None = None, upto: int | None = None
    ) -> list[LogWindow]:
        """Windows with ``after`` < SCN (≤ ``upto``) in order (at most ``max_windows``; stop past ``max_bytes``)."""
        out: list[LogWindow] = []
        size = 0
        with self.engine.connect() as conn:
            q = sa.select(LOG).where(LOG.c.scn > after)
            if upto is not None:
                q = q.where(LOG.c.scn <= upto)
            for r in conn.execute(q.order_by(LOG.c.scn).limit(max_windows)):
                out.append(LogWindow(r.scn, r.first_scn, r.ts_ms, r.events, frozenset(r.tables.split(",")), r.data))
                size += len(r.data)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out

    def compact(self, below_scn: int, older_than_ms: int) -> int:
        """Delete log windows ≤ ``below_scn`` committed before ``older_than_ms`` and raise the served
        generation's ``log_floor``; returns how many."""
        with self.writer.begin() as conn:
            g = self._int(conn, "serving")
            if g is None:
                return 0
            upto = conn.execute(
                sa.select(sa.func.max(LOG.c.scn)).where(LOG.c.scn <= below_scn, LOG.c.ts_ms < older_than_ms)
            ).scalar()
            if upto is None:
                return 0
            n = conn.execute(LOG.delete().where(LOG.c.scn <= upto)).rowcount
            floor = self._get(conn, _k(g, "log_floor"))
            if floor is None or int(floor) < upto:
                self._put(conn, _k(g, "log_floor"), str(upto))
            return int(n)

    # -- snapshot store ----------------------------------------------------------------------

    def apply(
        self,
        ops: Iterable[RowOp],
        applied_scn: int,
        seed: dict[str, Any] | None = None,
        expect: int | None = None,
        gen: int | None = None,
    ) -> bool:
        """Write row operations into ``gen`` (default: the served generation) and move its
        ``applied_scn`` (and seed progress), in one transaction.

        With ``expect``, nothing is written (and False returned) unless ``applied_scn`` is still
        ``expect`` — two appliers (the server's and a DAG's) never write a stale merge over a newer one.
        False too when ``gen`` is neither served nor being built (abandoned).
        """
        ops = list(ops)
        truncated = [o.source for o in ops if o.truncate]
        with self.writer.begin() as conn:
            g = gen if gen is not None else self._serving(conn)
            if not self._live(conn, g):
                return False
            if expect is not None:
                q = sa.select(STATE.c.v).where(STATE.c.k == _k(g, "applied_scn"))
                if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already holds the write lock
                    q = q.with_for_update()
                cur_v = conn.execute(q).scalar()
                if cur_v is None or int(cur_v) != expect:
                    return False
            if truncated:  # merge() kept only the operations after each table's truncate
                conn.execute(ROWS.delete().where(ROWS.c.gen == g, ROWS.c.source.in_(truncated)))
            if conn.dialect.name == "sqlite":
                self._apply_sqlite(conn, g, ops)
            else:
                self._apply_core(conn, g, ops)
            if seed is not None:
                self._put(conn, _k(g, "seed"), dump_value(SeedProgress, seed, "seed"))
            cur = self._get(conn, _k(g, "applied_scn"))
            if cur is None or int(cur) < applied_scn:
                self._put(conn, _k(g, "applied_scn"), str(applied_scn))
        return True

    def _apply_core(self, conn: sa.Connection, g: int, ops: list[RowOp]) -> None:
        """Deletes and upserts of ``ops`` through SQLAlchemy Core (any dialect; an upsert where it has one)."""
        dels = [{"g": g, "s": o.source, "k": o.sort_key} for o in ops if o.frame is None and not o.truncate]
        ups = [
            {"gen": g, "source": o.source, "sort_key": o.sort_key, "scn": o.scn, "frame": o.frame}
            for o in ops
            if o.frame
        ]
        upsert = self._upsert(conn)
        if dels or (ups and upsert is None):
            keys = dels if upsert is not None else dels + [{"g": g, "s": u["source"], "k": u["sort_key"]} for u in ups]
            conn.execute(
                ROWS.delete().where(
                    ROWS.c.gen == sa.bindparam("g"),
                    ROWS.c.source == sa.bindparam("s"),
                    ROWS.c.sort_key == sa.bindparam("k"),
                ),
                keys,
            )
        if ups:
            conn.execute(upsert if upsert is not None else ROWS.insert(), ups)

    @staticmethod
    def _apply_sqlite(conn: sa.Connection, g: int, ops: list[RowOp]) -> None:
        """Deletes and upserts of ``ops`` through the driver's ``executemany`` (SQLite: no per-row
        SQLAlchemy parameter processing; a seeding page is one call)."""
        dels = [(g, o.source, o.sort_key) for o in ops if o.frame is None and not o.truncate]
        ups = [(g, o.source, o.sort_key, o.scn, o.frame) for o in ops if o.frame]
        if dels:
            conn.exec_driver_sql(_SQLITE_DELETE, dels)
        if ups:
            conn.exec_driver_sql(_SQLITE_UPSERT, ups)

    @staticmethod
    def _upsert(conn: sa.Connection) -> Any:
        """INSERT … ON CONFLICT DO UPDATE where the dialect has it (SQLite, PostgreSQL), else None."""
        name = conn.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        else:
            return None
        stmt = insert(ROWS)
        return stmt.on_conflict_do_update(
            index_elements=[ROWS.c.gen, ROWS.c.source, ROWS.c.sort_key],
            set_={"scn": stmt.excluded.scn, "frame": stmt.excluded.frame},
        )

    def frames(self, gen: int, keys: Iterable[tuple[str, bytes]]) -> dict[tuple[str, bytes], bytes]:
        """The stored frames of ``keys`` ((source, sort key) pairs) in generation ``gen``."""
        out: dict[tuple[str, bytes], bytes] = {}
        by_source: dict[str, list[bytes]] = {}
        for s, k in keys:
            by_source.setdefault(s, []).append(k)
        with self.engine.connect() as conn:
            for s, ks in by_source.items():
                for i in range(0, len(ks), 500):
                    q = sa.select(ROWS.c.sort_key, ROWS.c.frame).where(
                        ROWS.c.gen == gen, ROWS.c.source == s, ROWS.c.sort_key.in_(ks[i : i + 500])
                    )
                    out.update(((s, r[0]), r[1]) for r in conn.execute(q))
        return out

    def snapshot_page(
        self, sources: Sequence[str], after: tuple[str, bytes] | None, limit: int
    ) -> tuple[list[tuple[str, bytes, bytes]], StoreState]:
        """Up to ``limit`` rows of the served generation's ``sources`` after the cursor, in (source,
        key) order, read in one transaction together with the state; rows are ``(source, sort_key, frame)``."""
        srcs = sorted(sources)
        out: list[tuple[str, bytes, bytes]] = []
        with self.engine.connect() as conn, conn.begin():
            state = self._state(conn)
            if state["gen"] is None:
                return out, state
            sqlite = conn.dialect.name == "sqlite"
            for s in srcs:
                if after is not None and s < after[0]:
                    continue
                if sqlite:  # the driver's rows as they are (no per-row result processing)
                    out.extend((s, k, f) for k, f in _sqlite_rows(conn, state["gen"], s, after, limit - len(out)))
                    if len(out) >= limit:
                        break
                    continue
                q = sa.select(ROWS.c.sort_key, ROWS.c.frame).where(ROWS.c.gen == state["gen"], ROWS.c.source == s)
                if after is not None and s == after[0]:
                    q = q.where(ROWS.c.sort_key > after[1])
                q = q.order_by(ROWS.c.sort_key).limit(limit - len(out))
                out.extend((s, r[0], r[1]) for r in conn.execute(q))
                if len(out) >= limit:
                    break
        return out, state

    def snapshot_frames(
        self, sources: Sequence[str], after: tuple[str, bytes] | None, limit: int
    ) -> tuple[list[bytes], tuple[str, bytes] | None, StoreState]:
        """:meth:`snapshot_page` as serving needs it: the frames only (in the same order), the
        ``(source, sort_key)`` of the last one (None when there is none) and the state. On SQLite
        the frames come straight from the driver's ``fetchall`` (no per-row Python beyond a list)."""
        srcs = sorted(sources)
        frames: list[bytes] = []
        last: tuple[str, bytes] | None = None
        with self.engine.connect() as conn, conn.begin():
            state = self._state(conn)
            gen = state["gen"]
            if gen is None:
                return frames, last, state
            if conn.dialect.name != "sqlite":
                page, state = self.snapshot_page(srcs, after, limit)
                return [r[2] for r in page], (page[-1][0], page[-1][1]) if page else None, state
            for s in srcs:
                if after is not None and s < after[0]:
                    continue
                rows = _sqlite_rows(conn, gen, s, after, limit - len(frames))
                if rows:
                    frames += [r[1] for r in rows]
                    last = (s, rows[-1][0])
                if len(frames) >= limit:
                    break
        return frames, last, state

    def row_count(self, source: str | None = None, gen: int | None = None) -> int:
        """Rows of ``gen`` (default: the served generation)."""
        with self.engine.connect() as conn:
            g = gen if gen is not None else self._int(conn, "serving")
            q = sa.select(sa.func.count()).select_from(ROWS).where(ROWS.c.gen == g)
            if source is not None:
                q = q.where(ROWS.c.source == source)
            return int(conn.execute(q).scalar() or 0)

    # -- schemas -----------------------------------------------------------------------------

    def put_schemas(self, versions: Iterable[SchemaVersion]) -> None:
        with self.writer.begin() as conn:
            for sv in versions:
                exists = conn.execute(
                    sa.select(SCHEMAS.c.fingerprint).where(SCHEMAS.c.fingerprint == sv.fingerprint)
                ).first()
                if not exists:
                    conn.execute(
                        SCHEMAS.insert().values(
                            fingerprint=sv.fingerprint, tbl=sv.table, version=sv.version, body=json.dumps(sv.schema)
                        )
                    )

    def schemas(self) -> dict[str, SchemaVersion]:
        with self.engine.connect() as conn:
            return {
                r.fingerprint: SchemaVersion(r.tbl, r.version, r.fingerprint, json.loads(r.body))
                for r in conn.execute(sa.select(SCHEMAS))
            }
