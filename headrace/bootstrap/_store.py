"""The bootstrap server's two stores in one SQL database (any SQLAlchemy URL; SQLite by default).

Tables (created if missing):

* ``headrace_boot_log(scn PK, first_scn, ts_ms, events, tables, data)`` — the log store: one row per
  window as the relay served it (``data`` is its frames back to back).
* ``headrace_boot_rows(source, sort_key, scn, frame, PK(source, sort_key))`` — the snapshot store:
  the newest row per key as a ready ``r`` frame (:mod:`._apply`).
* ``headrace_boot_state(k PK, v)`` — ``log_scn`` (newest window logged), ``applied_scn`` (newest
  window merged into the snapshot), ``log_floor`` (the log holds every window after it),
  ``seed`` (JSON progress of seeding).
* ``headrace_boot_schemas(fingerprint PK, tbl, version, body)`` — every writer schema an event in
  either store uses, so subscribers can decode them when the relay is gone.

Resume-state contract: everything is in the database and every change is one transaction — a
fetched batch of whole windows together with ``log_scn``; a merge of windows into rows together
with ``applied_scn``; a seeding page together with its progress; a compaction together with
``log_floor``. A restart reads the state row and goes on; nothing is half-applied after kill -9.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from .._db import create_engine
from ..relay import SchemaVersion
from ._apply import RowOp

__all__ = ["LogWindow", "Store"]

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
    "headrace_boot_rows",
    _md,
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


class Store:
    """The log store, the snapshot store and their state (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.writer = self.engine.execution_options(hr_write=True)
        _md.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- state -------------------------------------------------------------------------------

    @staticmethod
    def _get(conn: sa.Connection, k: str) -> str | None:
        row = conn.execute(sa.select(STATE.c.v).where(STATE.c.k == k)).first()
        return None if row is None else str(row[0])

    @staticmethod
    def _put(conn: sa.Connection, k: str, v: str) -> None:
        if conn.execute(STATE.update().where(STATE.c.k == k).values(v=v)).rowcount == 0:
            conn.execute(STATE.insert().values(k=k, v=v))

    def state(self) -> dict[str, Any]:
        """``log_scn``, ``applied_scn``, ``log_floor`` (ints or None) and ``seed`` (dict or None)."""
        with self.engine.connect() as conn:
            return self._state(conn)

    def _state(self, conn: sa.Connection) -> dict[str, Any]:
        raw = dict(conn.execute(sa.select(STATE.c.k, STATE.c.v)).all())
        out: dict[str, Any] = {k: int(raw[k]) if k in raw else None for k in ("log_scn", "applied_scn", "log_floor")}
        out["seed"] = json.loads(raw["seed"]) if "seed" in raw else None
        return out

    def set_seed(self, seed: dict[str, Any] | None, conn: sa.Connection | None = None) -> None:
        if conn is None:
            with self.writer.begin() as c:
                self.set_seed(seed, c)
            return
        if seed is None:
            conn.execute(STATE.delete().where(STATE.c.k == "seed"))
        else:
            self._put(conn, "seed", json.dumps(seed, sort_keys=True))

    def init_positions(self, scn: int) -> None:
        """Start an empty store at ``scn``: the log follows from it, the snapshot is at it."""
        with self.writer.begin() as conn:
            for k in ("log_scn", "applied_scn", "log_floor"):
                self._put(conn, k, str(scn))

    def reset(self) -> None:
        """Forget everything (before seeding again)."""
        with self.writer.begin() as conn:
            for t in (LOG, ROWS, STATE):
                conn.execute(t.delete())

    # -- log store ---------------------------------------------------------------------------

    def append(self, windows: Sequence[LogWindow], scanned_scn: int) -> None:
        """Add whole windows (SCN order, above ``log_scn``) and move ``log_scn``, in one transaction."""
        with self.writer.begin() as conn:
            head = self._get(conn, "log_scn")
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
                self._put(conn, "log_scn", str(scanned_scn))

    def log_windows(self, after: int, max_windows: int, max_bytes: int | None = None) -> list[LogWindow]:
        """Windows with SCN > ``after`` in order (at most ``max_windows``; stop past ``max_bytes``)."""
        out: list[LogWindow] = []
        size = 0
        with self.engine.connect() as conn:
            q = sa.select(LOG).where(LOG.c.scn > after).order_by(LOG.c.scn).limit(max_windows)
            for r in conn.execute(q):
                out.append(LogWindow(r.scn, r.first_scn, r.ts_ms, r.events, frozenset(r.tables.split(",")), r.data))
                size += len(r.data)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out

    def compact(self, below_scn: int, older_than_ms: int) -> int:
        """Delete log windows ≤ ``below_scn`` committed before ``older_than_ms``; returns how many."""
        with self.writer.begin() as conn:
            upto = conn.execute(
                sa.select(sa.func.max(LOG.c.scn)).where(LOG.c.scn <= below_scn, LOG.c.ts_ms < older_than_ms)
            ).scalar()
            if upto is None:
                return 0
            n = conn.execute(LOG.delete().where(LOG.c.scn <= upto)).rowcount
            floor = self._get(conn, "log_floor")
            if floor is None or int(floor) < upto:
                self._put(conn, "log_floor", str(upto))
            return int(n)

    # -- snapshot store ----------------------------------------------------------------------

    def apply(
        self,
        ops: Iterable[RowOp],
        applied_scn: int,
        seed: dict[str, Any] | None = None,
        expect: int | None = None,
    ) -> bool:
        """Write row operations and move ``applied_scn`` (and the seed progress), in one transaction.

        With ``expect``, nothing is written (and False returned) unless ``applied_scn`` is still
        ``expect`` — two appliers (the server's and a DAG's) never write a stale merge over a newer one.
        """
        ops = list(ops)
        truncated = [o.source for o in ops if o.truncate]
        dels = [{"s": o.source, "k": o.sort_key} for o in ops if o.frame is None and not o.truncate]
        ups = [{"source": o.source, "sort_key": o.sort_key, "scn": o.scn, "frame": o.frame} for o in ops if o.frame]
        with self.writer.begin() as conn:
            if expect is not None:
                q = sa.select(STATE.c.v).where(STATE.c.k == "applied_scn")
                if conn.dialect.name != "sqlite":  # SQLite's BEGIN IMMEDIATE already holds the write lock
                    q = q.with_for_update()
                cur_v = conn.execute(q).scalar()
                if cur_v is None or int(cur_v) != expect:
                    return False
            if truncated:  # merge() kept only the operations after each table's truncate
                conn.execute(ROWS.delete().where(ROWS.c.source.in_(truncated)))
            upsert = self._upsert(conn)
            if dels or (ups and upsert is None):
                keys = dels if upsert is not None else dels + [{"s": u["source"], "k": u["sort_key"]} for u in ups]
                conn.execute(
                    ROWS.delete().where(ROWS.c.source == sa.bindparam("s"), ROWS.c.sort_key == sa.bindparam("k")),
                    keys,
                )
            if ups:
                conn.execute(upsert if upsert is not None else ROWS.insert(), ups)
            if seed is not None:
                self.set_seed(seed, conn)
            cur = self._get(conn, "applied_scn")
            if cur is None or int(cur) < applied_scn:
                self._put(conn, "applied_scn", str(applied_scn))
        return True

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
            index_elements=[ROWS.c.source, ROWS.c.sort_key],
            set_={"scn": stmt.excluded.scn, "frame": stmt.excluded.frame},
        )

    def snapshot_page(
        self, sources: Sequence[str], after: tuple[str, bytes] | None, limit: int
    ) -> tuple[list[tuple[str, bytes, bytes]], dict[str, Any]]:
        """Up to ``limit`` rows of ``sources`` after the cursor, in (source, key) order, read in one
        transaction together with the state; rows are ``(source, sort_key, frame)``."""
        srcs = sorted(sources)
        out: list[tuple[str, bytes, bytes]] = []
        with self.engine.connect() as conn, conn.begin():
            state = self._state(conn)
            for s in srcs:
                if after is not None and s < after[0]:
                    continue
                q = sa.select(ROWS.c.sort_key, ROWS.c.frame).where(ROWS.c.source == s)
                if after is not None and s == after[0]:
                    q = q.where(ROWS.c.sort_key > after[1])
                q = q.order_by(ROWS.c.sort_key).limit(limit - len(out))
                out.extend((s, r[0], r[1]) for r in conn.execute(q))
                if len(out) >= limit:
                    break
        return out, state

    def row_count(self, source: str | None = None) -> int:
        with self.engine.connect() as conn:
            q = sa.select(sa.func.count()).select_from(ROWS)
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
