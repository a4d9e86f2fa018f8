"""SQLite change source: a change-log table filled by triggers, polled by the relay.

Theory of operation
-------------------
``open()`` installs, idempotently, in the source database:

* ``headrace_changes(scn INTEGER PRIMARY KEY AUTOINCREMENT, tbl, op, ts_ms, before, after)`` — one
  row per row change, with the before/after images as JSON objects. ``AUTOINCREMENT`` keeps row ids
  from ever being reused, so the SCN (= the row id) only grows, even after pruning.
* ``headrace_marks(scn)`` — SCNs known to end a transaction (written by the relay, see below).
* ``headrace_state(k, v)`` — ``pruned_scn``: everything ≤ it has been deleted.
* per captured table, triggers ``headrace_<table>_{ai,au,ad}`` (AFTER INSERT/UPDATE/DELETE) that
  insert into ``headrace_changes``. BLOB values are written as ``["HEX"]`` so JSON can carry them.
  A trigger whose SQL differs from what the table's current columns need is dropped and re-created.

SQLite serializes writers: a transaction's change-log rows get consecutive row ids and become
visible all at once, at commit. So every read of the change log sees a *prefix* of the SCN order
that ends on a transaction boundary. SQLite has no transaction id a trigger could record, so the
relay cannot tell consecutive transactions apart inside one such prefix; the window it builds is
"everything newly committed since the previous poll": never part of a transaction, sometimes
several (polls are every ``sqlite.poll_ms``, so under light load a window is one transaction).

Each window end seen by a poll is a transaction boundary forever; the relay records them in
``headrace_marks`` (batched, about once a second), so after a restart the change log is re-read as
the same windows instead of one huge one. Changes committed while no relay ran form one window.

Schema changes: ``PRAGMA schema_version`` is checked on every poll; when it moves, the captured
tables are reflected again, triggers whose column lists changed are re-created, and new
:class:`TableMeta` objects (so new schema versions) are used from then on. A change-log row written
by an older trigger carries only the columns that trigger knew: it is encoded with the schema of
exactly those columns (the older version, when it is the same shape).

Resume-state contract: the change log itself is the state. ``read(after_scn)`` re-reads every
change with SCN > ``after_scn``; nothing is kept in the relay process. Pruning deletes changes
≤ the newest mark that is ≤ min(acknowledged durable SCN, last SCN read) and older than
``sqlite.retention_seconds``; ``pruned_scn`` is updated in the same transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..._logging import get_logger
from ...errors import ConfigError, TransientError, UsageError
from .._event import Op
from .._schema import Column, ColumnType, TableMeta, table_meta_from_sqlalchemy
from ._base import ChangeSource, ChangeWindow, RowChange

__all__ = ["CHANGES_TABLE", "SqliteSource", "sqlite_path"]

log = get_logger("relay.sqlite")

CHANGES_TABLE = "headrace_changes"
MARKS_TABLE = "headrace_marks"
STATE_TABLE = "headrace_state"
ROWID_COLUMN = "__rowid__"
_PREFIX = "headrace_"
_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_OPS = {"c": Op.INSERT, "u": Op.UPDATE, "d": Op.DELETE}


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        raise ConfigError([f"relay.source: {url!r} is not a SQLite file URL (sqlite:////abs/path.db)"])
    return u.database


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _image(meta: TableMeta, ref: str) -> str:
    args = []
    for c in meta.columns:
        if c.name == ROWID_COLUMN:
            args.append(f"{_lit(c.name)}, {ref}.rowid")
            continue
        v = f"{ref}.{_q(c.name)}"
        args.append(f"{_lit(c.name)}, CASE typeof({v}) WHEN 'blob' THEN json_array(hex({v})) ELSE {v} END")
    return f"json_object({', '.join(args)})"


def trigger_sql(meta: TableMeta) -> dict[str, str]:
    """The three trigger statements for ``meta`` by trigger name."""
    t = meta.name
    ins = f"INSERT INTO {CHANGES_TABLE}(tbl, op, ts_ms, before, after) VALUES ({_lit(t)}, "
    new, old = _image(meta, "NEW"), _image(meta, "OLD")
    body = {
        "ai": ("INSERT", f"{ins}'c', {_NOW_MS}, NULL, {new})"),
        "au": ("UPDATE", f"{ins}'u', {_NOW_MS}, {old}, {new})"),
        "ad": ("DELETE", f"{ins}'d', {_NOW_MS}, {old}, NULL)"),
    }
    return {
        f"{_PREFIX}{t}_{suffix}": f"CREATE TRIGGER {_q(f'{_PREFIX}{t}_{suffix}')} AFTER {event} ON {_q(t)} "
        f"FOR EACH ROW BEGIN {stmt}; END"
        for suffix, (event, stmt) in body.items()
    }


def _conv(t: ColumnType) -> Callable[[Any], Any]:
    """Raw JSON image value (as SQLite stored it) → the Python value of the column's kind."""
    k = t.kind

    def unblob(v: Any) -> Any:
        return bytes.fromhex(v[0]) if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str) else v

    if k in ("int", "long"):
        return lambda v: int(unblob(v))
    if k in ("float", "double"):
        return lambda v: float(unblob(v))
    if k == "boolean":
        return lambda v: bool(int(v)) if not isinstance(v, str) else v.strip().lower() in ("1", "true", "t", "yes")
    if k == "decimal":
        return lambda v: decimal.Decimal(repr(v) if isinstance(v, float) else str(v))
    if k == "bytes":
        return lambda v: (lambda b: b if isinstance(b, bytes) else str(b).encode())(unblob(v))
    if k == "date":
        return lambda v: dt.date.fromisoformat(str(v)[:10])
    if k == "time":
        return lambda v: dt.time.fromisoformat(str(v))
    if k == "timestamp":
        return lambda v: dt.datetime.fromisoformat(str(v)).replace(tzinfo=None)
    if k == "timestamptz":

        def tz(v: Any) -> dt.datetime:
            d = dt.datetime.fromisoformat(str(v))
            return d if d.tzinfo else d.replace(tzinfo=dt.UTC)

        return tz
    if k == "uuid":

        def u(v: Any) -> uuid.UUID:
            b = unblob(v)
            return uuid.UUID(bytes=b) if isinstance(b, bytes) else uuid.UUID(str(b))

        return u
    if k == "json":
        return lambda v: json.loads(v) if isinstance(v, str) else v
    if k in ("string", "enum"):
        return lambda v: v if isinstance(v, str) else (unblob(v).decode() if isinstance(unblob(v), bytes) else str(v))
    return unblob


_DECL_OVERRIDES = {"UUID": ColumnType("uuid"), "TIMESTAMPTZ": ColumnType("timestamptz")}


class _Table:
    """A captured table: its current metadata, converters, and projections for older images."""

    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta
        self.convs = {c.name: _conv(c.type) for c in meta.columns}
        self._projections: dict[frozenset[str], TableMeta] = {}

    def meta_for(self, image_keys: frozenset[str]) -> TableMeta:
        if len(image_keys) == len(self.meta.columns) and all(c.name in image_keys for c in self.meta.columns):
            return self.meta
        m = self._projections.get(image_keys)
        if m is None:
            cols = tuple(c for c in self.meta.columns if c.name in image_keys)
            m = self._projections[image_keys] = TableMeta(self.meta.name, cols, self.meta.key, self.meta.namespace)
        return m

    def convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, v in raw.items():
            c = self.convs.get(name)
            if c is None:
                continue  # a column dropped since the row was captured
            out[name] = None if v is None else c(v)
        return out


class SqliteSource(ChangeSource):
    """Capture changes of a SQLite file with triggers (see the module docstring)."""

    kind = "sqlite"

    def __init__(self, config: Any) -> None:
        self.path = sqlite_path(config.source)
        self.wanted: list[str] | None = list(config.tables) if config.tables is not None else None
        opts = config.sqlite
        self.poll_seconds = opts.poll_ms / 1000.0
        self.retention_ms = None if opts.retention_seconds is None else int(opts.retention_seconds * 1000)
        self.prune_interval = opts.prune_interval_seconds
        self.mark_interval = 1.0
        self._conn: sqlite3.Connection | None = None
        self._engine: Any = None
        self._tables: dict[str, _Table] = {}
        self._schema_version = -1
        self._pending_marks: list[int] = []
        self._last_marks_flush = 0.0
        self._last_prune = 0.0
        self._durable: int | None = None
        self._last_read = 0
        self.lock = threading.Lock()

    # -- connection and installation -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if not Path(self.path).exists():
            raise UsageError(f"relay.source: the SQLite file {self.path} does not exist")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA busy_timeout = 30000")
        except sqlite3.Error as exc:
            raise TransientError(f"cannot open {self.path}: {exc}") from exc
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def open(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (scn INTEGER PRIMARY KEY AUTOINCREMENT, "
                "tbl TEXT NOT NULL, op TEXT NOT NULL, ts_ms INTEGER NOT NULL, before TEXT, after TEXT)"
            )
            c.execute(f"CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (scn INTEGER PRIMARY KEY)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (k TEXT PRIMARY KEY, v)")
            self._refresh_locked()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _table_names(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            f"AND name NOT LIKE '{_PREFIX}%' ORDER BY name"
        ).fetchall()
        existing = [r[0] for r in rows]
        if self.wanted is None:
            return existing
        missing = [t for t in self.wanted if t not in existing]
        if missing:
            raise ConfigError([f"relay.tables: no table {t!r} in {self.path}" for t in missing])
        return list(self.wanted)

    def _reflect(self, name: str) -> TableMeta:
        import sqlalchemy as sa

        if self._engine is None:
            # a connection of its own: the pool's reset-on-return would end our write transaction
            path = self.path
            self._engine = sa.create_engine(
                "sqlite://", creator=lambda: sqlite3.connect(path, timeout=30.0), poolclass=sa.pool.NullPool
            )
        table = sa.Table(name, sa.MetaData(), autoload_with=self._engine)
        decl = {r[1]: str(r[2]).upper() for r in self.conn.execute(f"PRAGMA table_info({_q(name)})")}
        overrides = {
            col: _DECL_OVERRIDES[d.split("(")[0].strip()]
            for col, d in decl.items()
            if d.split("(")[0].strip() in _DECL_OVERRIDES
        }
        meta = table_meta_from_sqlalchemy(table, overrides)
        if not meta.key:
            without_rowid = self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (name,)
            ).fetchone()
            if without_rowid and "WITHOUT ROWID" not in str(without_rowid[0]).upper():
                meta = TableMeta(
                    meta.name, (Column(ROWID_COLUMN, ColumnType("long"), False), *meta.columns), (ROWID_COLUMN,)
                )
        return meta

    def _refresh_locked(self) -> None:
        """Reflect captured tables and (re)create triggers that differ; inside a write transaction."""
        c = self.conn
        existing = {r[0]: r[1] for r in c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
        tables: dict[str, _Table] = {}
        for name in self._table_names():
            meta = self._reflect(name)
            old = self._tables.get(name)
            tables[name] = old if old is not None and old.meta == meta else _Table(meta)
            for tname, sql in trigger_sql(meta).items():
                if existing.get(tname) != sql:
                    if tname in existing:
                        c.execute(f"DROP TRIGGER {_q(tname)}")
                    c.execute(sql)
                    log.info("trigger_installed", table=name, trigger=tname)
        self._tables = tables
        self._schema_version = c.execute("PRAGMA schema_version").fetchone()[0]

    def _refresh(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            self._refresh_locked()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def tables(self) -> list[TableMeta]:
        return [t.meta for t in self._tables.values()]

    def start_scn(self) -> int:
        row = self.conn.execute(f"SELECT v FROM {STATE_TABLE} WHERE k = 'pruned_scn'").fetchone()
        return int(row[0]) if row else 0

    # -- reading ---------------------------------------------------------------------------------

    def _poll(self, after: int) -> list[ChangeWindow]:
        """Every change committed after ``after``, grouped into windows at marks and at the end."""
        c = self.conn
        c.execute("BEGIN")
        try:
            sv = c.execute("PRAGMA schema_version").fetchone()[0]
            rows = c.execute(
                f"SELECT scn, tbl, op, ts_ms, before, after FROM {CHANGES_TABLE} WHERE scn > ? ORDER BY scn", (after,)
            ).fetchall()
            marks = (
                [
                    r[0]
                    for r in c.execute(
                        f"SELECT scn FROM {MARKS_TABLE} WHERE scn > ? AND scn < ? ORDER BY scn", (after, rows[-1][0])
                    )
                ]
                if rows
                else []
            )
        finally:
            c.execute("COMMIT")
        if sv != self._schema_version:
            self._refresh()
        windows: list[ChangeWindow] = []
        current: list[RowChange] = []
        mi = 0
        ts = 0
        for scn, tbl, op, ts_ms, before, after_img in rows:
            current.append(self._change(scn, tbl, op, before, after_img))
            ts = ts_ms
            while mi < len(marks) and marks[mi] < scn:
                mi += 1
            if (mi < len(marks) and marks[mi] == scn) or scn == rows[-1][0]:
                windows.append(ChangeWindow(scn, ts, [ch for ch in current if ch is not None]))
                current = []
        if rows:
            self._pending_marks.append(rows[-1][0])
        return windows

    def _change(self, scn: int, tbl: str, op: str, before: str | None, after: str | None) -> RowChange:
        table = self._tables.get(tbl)
        if table is None:  # a table no longer captured (or dropped): reflect what we can
            try:
                self._tables[tbl] = table = _Table(self._reflect(tbl))
            except Exception:
                table = _Table(TableMeta(tbl, (), ()))
        b = json.loads(before) if before is not None else None
        a = json.loads(after) if after is not None else None
        image = a if a is not None else b
        assert image is not None
        meta = table.meta_for(frozenset(image))
        bv = table.convert(b) if b is not None else None
        av = table.convert(a) if a is not None else None
        src = av if av is not None else bv
        assert src is not None
        key = tuple(src.get(k) for k in meta.key)
        return RowChange(scn, meta, _OPS[op], key, bv, av)

    def read(self, after_scn: int | None, stop: threading.Event) -> Iterator[ChangeWindow | None]:
        last = self.start_scn() if after_scn is None else after_scn
        while not stop.is_set():
            try:
                windows = self._poll(last)
            except sqlite3.Error as exc:
                self._drop_conn()
                raise TransientError(f"reading the change log of {self.path} failed: {exc}") from exc
            for w in windows:
                yield w
                last = w.scn
            self._last_read = max(self._last_read, last)
            self._housekeeping()
            yield None
            if not windows:
                stop.wait(self.poll_seconds)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- marks and pruning -----------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._pending_marks and now - self._last_marks_flush >= self.mark_interval:
            self._flush_marks()
            self._last_marks_flush = now
        if now - self._last_prune >= self.prune_interval:
            self._last_prune = now
            self.prune()

    def _flush_marks(self) -> None:
        marks, self._pending_marks = self._pending_marks, []
        try:
            with self.lock:
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(f"INSERT OR IGNORE INTO {MARKS_TABLE}(scn) VALUES (?)", [(m,) for m in marks])
                self.conn.execute("COMMIT")
        except sqlite3.Error as exc:  # marks are a hint for restarts; try again next time
            log.warning("marks_not_saved", error=str(exc))
            self._pending_marks = marks + self._pending_marks
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def acknowledge(self, durable_scn: int | None) -> None:
        self._durable = durable_scn

    def prune(self, now_ms: int | None = None) -> int:
        """Delete changes that no one needs any more (see the module docstring); returns the new pruned SCN."""
        if self._pending_marks:
            self._flush_marks()
        bound = self._last_read
        if self._durable is not None:
            bound = min(bound, self._durable)
        c = self.conn
        with self.lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                if self.retention_ms is not None:
                    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - self.retention_ms
                    row = c.execute(
                        f"SELECT max(scn) FROM {CHANGES_TABLE} WHERE scn <= ? AND ts_ms < ?", (bound, cutoff)
                    ).fetchone()
                    bound = min(bound, row[0] or 0)
                elif self._durable is None:
                    bound = 0  # neither retention nor a durable consumer: keep everything
                mark = c.execute(f"SELECT max(scn) FROM {MARKS_TABLE} WHERE scn <= ?", (bound,)).fetchone()[0]
                pruned = self.start_scn()
                if mark is not None and mark > pruned:
                    n = c.execute(f"DELETE FROM {CHANGES_TABLE} WHERE scn <= ?", (mark,)).rowcount
                    c.execute(f"DELETE FROM {MARKS_TABLE} WHERE scn < ?", (mark,))
                    c.execute(f"INSERT OR REPLACE INTO {STATE_TABLE}(k, v) VALUES ('pruned_scn', ?)", (mark,))
                    log.info("change_log_pruned", upto_scn=mark, rows=n)
                    pruned = mark
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return pruned

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "last_read_scn": self._last_read, "durable_scn": self._durable}

    def close(self) -> None:
        if self._pending_marks:
            with contextlib.suppress(sqlite3.Error):
                self._flush_marks()
        self._drop_conn()

    def uninstall(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for (name,) in c.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '{_PREFIX}%'"
            ).fetchall():
                c.execute(f"DROP TRIGGER {_q(name)}")
            for t in (CHANGES_TABLE, MARKS_TABLE, STATE_TABLE):
                c.execute(f"DROP TABLE IF EXISTS {t}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        log.info("uninstalled", path=self.path)
