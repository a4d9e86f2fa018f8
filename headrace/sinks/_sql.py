"""The ``sql`` target: a replica of the captured tables in any SQLAlchemy database.

Resume contract: the checkpoint is the row ``sink_name`` of ``_headrace_sink_checkpoint(sink_name,
scn, phase, position, updated_ms)`` *in the replica database*. Every transaction that changes replica
rows also writes that row, with the checkpoint of the last window it covers, and nothing else writes
either: the rows and the checkpoint are committed together or not at all. On start the sink reads
the row and the subscriber resumes after it (a bootstrap resumes inside its phase at the saved
position). A window is applied at most once because it is applied only in a transaction that moves
the checkpoint past it, and at least once because the checkpoint never moves past a window that was
not applied in that same transaction.

DDL (creating a replica table, adding a column) runs in its own transaction before the data
transaction that needs it (MySQL/MariaDB commit DDL implicitly) and is idempotent: a replica table or
column that exists already is left alone, so a replay after a crash between DDL and data is harmless.
Truncates are applied as ``DELETE`` outside PostgreSQL (MySQL's ``TRUNCATE`` would commit).

Every replica table has the primary key :data:`~headrace.sinks._plan.KEY_COLUMN` (the event key as
canonical JSON text): the relay's row identity, which needs no knowledge of the source's key columns.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .._db import create_engine
from .._logging import get_logger
from ..errors import ConfigError
from ..relay.client import Checkpoint, SnapshotRestarted, Window
from ._config import SqlTarget
from ._copytext import copy_formatter
from ._plan import KEY_COLUMN, BatchPlan, ClearAll, Delete, Step, Truncate, Upsert
from ._sqltypes import ReplicaColumn, replica_columns
from ._target import SchemaOf

__all__ = ["CHECKPOINT_TABLE", "TABLES_TABLE", "SqlSinkTarget", "replica_name"]

log = get_logger("sink.sql")

CHECKPOINT_TABLE = "_headrace_sink_checkpoint"
#: which replica table holds which source table, per sink (for a snapshot restart's "empty everything")
TABLES_TABLE = "_headrace_sink_tables"
#: longest event key kept (characters of canonical JSON); MySQL/MariaDB index at most 3072 bytes
KEY_LENGTH = 512
_IN_CHUNK = 1_000
#: dialects with an upsert statement; any other database gets delete-then-insert
_UPSERT_DIALECTS = frozenset({"postgresql", "sqlite", "mysql", "mariadb"})
#: PostgreSQL (psycopg2, psycopg 3): upserts of at least this many rows go through COPY into a staging table
COPY_MIN_ROWS = 100


def replica_name(source: str, cfg: SqlTarget) -> str:
    """The replica table of ``source``: ``cfg.tables[source]``, else the prefix plus the name with dots as ``_``."""
    return cfg.tables.get(source) or cfg.table_prefix + source.replace(".", "_")


class SqlSinkTarget:
    """Applies planned steps and the checkpoint in one transaction; creates and grows replica tables."""

    def __init__(self, cfg: SqlTarget, sink_name: str) -> None:
        self.cfg = cfg
        self.name = sink_name
        try:
            self.engine = create_engine(cfg.url, pool_pre_ping=True)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise ConfigError([f"sink.target.url: {exc}"]) from exc
        self.dialect = self.engine.dialect.name
        md = sa.MetaData()
        self.checkpoints = sa.Table(
            CHECKPOINT_TABLE,
            md,
            sa.Column("sink_name", sa.String(200), primary_key=True),
            sa.Column("scn", sa.BigInteger, nullable=False),
            sa.Column("phase", sa.String(20), nullable=False),
            sa.Column("position", sa.Text, nullable=False),
            sa.Column("updated_ms", sa.BigInteger, nullable=False),
        )
        self.registry = sa.Table(
            TABLES_TABLE,
            md,
            sa.Column("sink_name", sa.String(200), primary_key=True),
            sa.Column("source_table", sa.String(255), primary_key=True),
            sa.Column("replica_table", sa.String(255), nullable=False),
        )
        md.create_all(self.engine)
        #: source table → its replica table as known now (columns grow with the schema)
        self.tables: dict[str, sa.Table] = {}
        self.converters: dict[str, dict[str, Any]] = {}
        self._ensured: set[tuple[str, str]] = set()
        self._copy_formats: dict[tuple[str, tuple[str, ...], int], Any] = {}

    def close(self) -> None:
        self.engine.dispose()

    # -- checkpoint ------------------------------------------------------------------------------

    def load(self) -> Checkpoint | None:
        """The checkpoint committed with the replica's rows (None: nothing applied yet)."""
        t = self.checkpoints
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.scn, t.c.phase, t.c.position).where(t.c.sink_name == self.name)).first()
        if row is None:
            return None
        return Checkpoint(int(row.scn), str(row.phase), dict(json.loads(row.position or "{}")))

    def _save(self, conn: sa.Connection, cp: Checkpoint) -> None:
        t = self.checkpoints
        values = {
            "scn": cp.scn,
            "phase": cp.phase,
            "position": json.dumps(cp.position, sort_keys=True),
            "updated_ms": int(time.time() * 1000),
        }
        if conn.execute(t.update().where(t.c.sink_name == self.name).values(**values)).rowcount == 0:
            conn.execute(t.insert().values(sink_name=self.name, **values))

    # -- DDL ---------------------------------------------------------------------------------------

    def ensure(self, source: str, fingerprint: str, schema: dict[str, Any]) -> None:
        """Make the replica table of ``source`` hold every column of ``schema`` (idempotent DDL)."""
        if (source, fingerprint) in self._ensured:
            return
        name = replica_name(source, self.cfg)
        cols = [c for c in replica_columns(schema, self.dialect) if c.name != KEY_COLUMN]
        conv = self.converters.setdefault(source, {})
        for c in cols:
            conv[c.name] = c.convert
        insp = sa.inspect(self.engine)
        if not insp.has_table(name):
            table = sa.Table(
                name,
                sa.MetaData(),
                sa.Column(KEY_COLUMN, sa.String(KEY_LENGTH), primary_key=True),
                *(sa.Column(c.name, self._ddl_type(c)) for c in cols),
                mysql_charset="utf8mb4",
            )
            table.create(self.engine, checkfirst=True)
            log.info("replica_table_created", table=name, source=source, columns=len(cols))
        else:
            have = {c["name"] for c in insp.get_columns(name)}
            prep = self.engine.dialect.identifier_preparer
            for c in cols:
                if c.name in have:
                    continue
                coltype = self._ddl_type(c).compile(dialect=self.engine.dialect)
                with self.engine.begin() as conn:
                    conn.execute(sa.text(f"ALTER TABLE {prep.quote(name)} ADD COLUMN {prep.quote(c.name)} {coltype}"))
                log.info("replica_column_added", table=name, column=c.name, type=str(coltype))
        self.tables[source] = sa.Table(
            name,
            sa.MetaData(),
            sa.Column(KEY_COLUMN, sa.String(KEY_LENGTH), primary_key=True),
            *self._known_columns(source, name, cols),
        )
        with self.engine.begin() as conn:
            r = self.registry
            where = (r.c.sink_name == self.name) & (r.c.source_table == source)
            if conn.execute(sa.select(r.c.replica_table).where(where)).first() is None:
                conn.execute(r.insert().values(sink_name=self.name, source_table=source, replica_table=name))
        self._ensured.add((source, fingerprint))

    def _known_columns(self, source: str, name: str, cols: list[ReplicaColumn]) -> list[sa.Column[Any]]:
        """The columns this sink writes: the schema's, plus older ones still in the replica (as reflected)."""
        out = {c.name: sa.Column(c.name, self._ddl_type(c)) for c in cols}
        old = self.tables.get(source)
        if old is not None:
            for c in old.columns:
                if c.name != KEY_COLUMN and c.name not in out:
                    out[c.name] = sa.Column(c.name, c.type)
        return list(out.values())

    def _ddl_type(self, c: ReplicaColumn) -> sa.types.TypeEngine[Any]:
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            if isinstance(c.type, sa.DateTime):
                return mysql.DATETIME(fsp=6)
            if isinstance(c.type, sa.Time):
                return mysql.TIME(fsp=6)
            if isinstance(c.type, sa.Text):
                return mysql.LONGTEXT()
            if isinstance(c.type, sa.LargeBinary):
                return mysql.LONGBLOB()
        return c.type

    # -- the Target protocol ----------------------------------------------------------------------

    def prepare(self, window: Window, schema_of: SchemaOf) -> None:
        """Create or grow the replica tables ``window`` writes to (idempotent DDL, committed on its own)."""
        for e in window.events:
            if (e.table, e.fingerprint) not in self._ensured:
                self.ensure(e.table, e.fingerprint, schema_of(e.fingerprint, e.table))

    def commit(self, items: Sequence[Window | SnapshotRestarted], checkpoint: Checkpoint) -> int:
        """Apply the net effect of ``items`` and save ``checkpoint``, in one transaction."""
        plan = BatchPlan()
        for item in items:
            if isinstance(item, SnapshotRestarted):
                plan.clear()
            else:
                plan.add_window(item.events)
        return self.apply(plan.steps(), checkpoint)

    # -- data ----------------------------------------------------------------------------------------

    def apply(self, steps: list[Step], checkpoint: Checkpoint) -> int:
        """Run ``steps`` and save ``checkpoint`` in one transaction; returns the rows written."""
        rows = 0
        with self.engine.begin() as conn:
            for step in steps:
                rows += self._step(conn, step)
            self._save(conn, checkpoint)
        return rows

    def _step(self, conn: sa.Connection, step: Step) -> int:
        if isinstance(step, ClearAll):
            r = self.registry
            names = [x[0] for x in conn.execute(sa.select(r.c.replica_table).where(r.c.sink_name == self.name))]
            for name in names:
                conn.execute(sa.table(name).delete())
            log.info("replica_cleared_for_new_snapshot", tables=len(names))
            return 0
        table = self.tables[step.table]
        if isinstance(step, Truncate):
            if self.dialect == "postgresql":
                conn.execute(sa.text(f"TRUNCATE TABLE {self.engine.dialect.identifier_preparer.format_table(table)}"))
            else:
                conn.execute(table.delete())
            return 0
        if isinstance(step, Delete):
            key = table.c[KEY_COLUMN]
            for i in range(0, len(step.keys), _IN_CHUNK):
                conn.execute(table.delete().where(key.in_(step.keys[i : i + _IN_CHUNK])))
            return len(step.keys)
        assert isinstance(step, Upsert)
        conv = {c: f for c, f in self.converters.get(step.table, {}).items() if f is not None and c in step.columns}
        rows = step.rows
        if conv:
            rows = [{**r, **{c: f(r[c]) for c, f in conv.items()}} for r in rows]
        if self.dialect in ("mysql", "mariadb"):
            rows = [_naive_utc(r) for r in rows]
        if len(rows) >= COPY_MIN_ROWS and self._copy_upsert(conn, table, step.columns, rows):
            return len(rows)
        if self.dialect not in _UPSERT_DIALECTS:  # no upsert statement: delete the keys, then insert
            keys = [r[KEY_COLUMN] for r in rows]
            for i in range(0, len(keys), _IN_CHUNK):
                conn.execute(table.delete().where(table.c[KEY_COLUMN].in_(keys[i : i + _IN_CHUNK])))
            conn.execute(table.insert(), rows)
            return len(rows)
        conn.execute(self._upsert(table, step.columns), rows)
        return len(rows)

    def _copy_upsert(
        self, conn: sa.Connection, table: sa.Table, columns: tuple[str, ...], rows: list[dict[str, Any]]
    ) -> bool:
        """PostgreSQL: ``COPY`` the rows into a temporary table, then one ``INSERT … SELECT … ON CONFLICT``.

        Runs inside the data transaction (the staging table is dropped before it ends). Returns False,
        having done nothing, when the target is not PostgreSQL through psycopg2 or psycopg 3, or a column's type is one
        :func:`~headrace.sinks._copytext.copy_formatter` does not format (arrays): the caller then
        uses its ``INSERT … ON CONFLICT`` statement.
        """
        driver = self.engine.dialect.driver
        if self.dialect != "postgresql" or driver not in ("psycopg2", "psycopg"):
            return False
        cols = [c for c in columns if c in table.c and c != KEY_COLUMN]
        ck = (table.name, tuple(cols), len(table.c))
        if ck not in self._copy_formats:
            self._copy_formats[ck] = copy_formatter([(c, table.c[c].type) for c in (KEY_COLUMN, *cols)])
        encode = self._copy_formats[ck]
        if encode is None:
            return False
        q = self.engine.dialect.identifier_preparer.quote
        target = self.engine.dialect.identifier_preparer.format_table(table)
        collist = ", ".join(q(c) for c in (KEY_COLUMN, *cols))
        stage = q("_headrace_stage")
        action = "DO UPDATE SET " + ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in cols) if cols else "DO NOTHING"

        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur:
            cur.execute(f"CREATE TEMPORARY TABLE {stage} AS SELECT {collist} FROM {target} WITH NO DATA")
            copy_sql = f"COPY {stage} ({collist}) FROM STDIN"
            if driver == "psycopg2":
                cur.copy_expert(copy_sql, io.BytesIO(encode(rows)))
            else:
                with cur.copy(copy_sql) as cp:
                    cp.write(encode(rows))
            cur.execute(
                f"INSERT INTO {target} ({collist}) SELECT {collist} FROM {stage} ON CONFLICT ({q(KEY_COLUMN)}) {action}"
            )
            cur.execute(f"DROP TABLE {stage}")
        return True

    def _upsert(self, table: sa.Table, columns: tuple[str, ...]) -> Any:
        """The upsert statement for ``executemany``.

        PostgreSQL and SQLite: ``INSERT … ON CONFLICT DO UPDATE … RETURNING key``; the RETURNING makes
        SQLAlchemy send the rows as multi-row VALUES pages ("insertmanyvalues") where the driver's own
        executemany would run one statement per row (psycopg2: about 5 times slower). MySQL/MariaDB:
        ``INSERT … ON DUPLICATE KEY UPDATE``, which the driver's executemany batches itself.
        """
        cols = [c for c in columns if c in table.c]
        key = table.c[KEY_COLUMN]
        if self.dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            ins: Any = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)
            if not cols:
                return ins.on_conflict_do_nothing(index_elements=[key]).returning(key)
            return ins.on_conflict_do_update(index_elements=[key], set_={c: ins.excluded[c] for c in cols}).returning(
                key
            )
        from sqlalchemy.dialects.mysql import insert as my_insert

        mins = my_insert(table)
        col = cols[0] if cols else KEY_COLUMN
        return mins.on_duplicate_key_update({c: mins.inserted[c] for c in cols} or {col: mins.inserted[col]})


def _naive_utc(row: dict[str, Any]) -> dict[str, Any]:
    """MySQL DATETIME takes no offset: aware datetimes become naive UTC."""
    import datetime as dt

    out = row
    for k, v in row.items():
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            if out is row:
                out = dict(row)
            out[k] = v.astimezone(dt.UTC).replace(tzinfo=None)
    return out
