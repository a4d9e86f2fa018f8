"""Load: demux partitions (Parquet, ``data_type=…/date=…``) → database tables, through SQLAlchemy.

Resume-state contract
---------------------
One table per data type (``table_prefix`` + data type, or ``tables:``), created from the Arrow schema
of the first partition loaded, with an extra ``_date`` column (the partition's date). Loading a
partition is one transaction: delete the rows of that ``_date``, insert the partition's rows, and
record in ``_headrace_loads`` (table, partition, fingerprint of the Parquet files, rows). A run skips
partitions whose fingerprint is unchanged, so re-running is cheap and never doubles rows; a run
killed mid-partition rolls back and the next run loads that partition again.

Schema growth: a column that appears in a later partition is added (``ALTER TABLE … ADD COLUMN``)
before the insert. Column types are fixed when a column is created; declare types in the demux
processor's options where inference could change its mind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import sqlalchemy as sa

from .._db import create_engine
from .._logging import get_logger
from .._storage import resolve
from ..errors import Unavailable, UsageError
from ._config import LoadConfig
from ._demux import list_partitions
from ._layout import data_types, day_dir
from ._runreport import Summary, progress
from ._unify import unify_tables

__all__ = ["arrow_to_sql_type", "run_load"]

log = get_logger("load")
DATE_COLUMN = "_date"
STATE_TABLE = "_headrace_loads"


def arrow_to_sql_type(t: pa.DataType) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy column type for an Arrow type (nested types are stored as JSON text)."""
    if pa.types.is_dictionary(t):
        return arrow_to_sql_type(t.value_type)
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return sa.Float()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return sa.LargeBinary()
    return sa.Text()


def _nested(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return False
    return bool(pa.types.is_nested(t))


def _python_values(col: pa.Array, sqlite: bool) -> list[Any]:
    """One column as Python values for the driver, converted on the whole array where possible."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.dictionary_decode(), t.value_type
    if _nested(t):
        return [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()]
    if sqlite and pa.types.is_timestamp(t):
        # SQLAlchemy's SQLite DATETIME storage format; %S of a microsecond timestamp includes .ffffff.
        # A zoned timestamp is stored in UTC with its "+00:00" suffix, which SQLite's date functions
        # read (and SQLAlchemy reads back as a zoned datetime)
        if t.tz is None:
            return list(pc.strftime(col.cast(pa.timestamp("us")), "%Y-%m-%d %H:%M:%S").to_pylist())
        utc = col.cast(pa.timestamp("us", "UTC"))
        return list(pc.strftime(utc, "%Y-%m-%d %H:%M:%S+00:00").to_pylist())
    if sqlite and pa.types.is_date(t):
        return list(pc.strftime(col, "%Y-%m-%d").to_pylist())
    return list(col.to_pylist())


class _Loader:
    def __init__(self, cfg: LoadConfig, summary: Summary) -> None:
        self.cfg = cfg
        self.summary = summary
        self.store = resolve(cfg.input)
        try:
            url = sa.engine.make_url(cfg.url)
            if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
            self.engine = create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise UsageError(f"load.url: cannot use {cfg.url!r}: {exc}") from exc
        self.state = sa.Table(
            STATE_TABLE,
            sa.MetaData(),
            sa.Column("table_name", sa.String(255), primary_key=True),
            sa.Column("partition", sa.String(64), primary_key=True),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("rows", sa.BigInteger, nullable=False),
            sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        )

    def table_name(self, data_type: str) -> str:
        return self.cfg.tables.get(data_type, f"{self.cfg.table_prefix}{data_type}")

    def data_types(self, only: list[str] | None) -> list[str]:
        found = data_types(self.store)
        wanted = only or self.cfg.data_types
        return [t for t in found if wanted is None or t in wanted]

    def run(self, only: list[str] | None) -> None:
        try:
            self.state.create(self.engine, checkfirst=True)
        except sa.exc.OperationalError as exc:
            raise Unavailable(f"load.url: cannot reach the database: {exc.orig}") from exc
        todo = [(t, d) for t in self.data_types(only) for d in list_partitions(self.store, t)]
        with progress("load", len(todo)) as bar:
            for data_type, date in todo:
                self.load_partition(data_type, date)
                bar.advance()

    def files(self, data_type: str, date: str) -> list[tuple[str, int, str]]:
        folder = self.store.path(day_dir(data_type, date))
        infos = self.store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(
            (i.path, i.size or 0, str(i.mtime_ns)) for i in infos if i.is_file and i.base_name.endswith(".parquet")
        )

    def load_partition(self, data_type: str, date: str) -> None:
        name = self.table_name(data_type)
        files = self.files(data_type, date)
        fingerprint = hashlib.sha256(json.dumps(files).encode()).hexdigest()
        with self.engine.connect() as conn:
            done = conn.execute(
                sa.select(self.state.c.fingerprint).where(
                    self.state.c.table_name == name, self.state.c.partition == date
                )
            ).scalar()
        if done == fingerprint:
            return
        tables = [pq.read_table(path, filesystem=self.store.fs) for path, _, _ in files]
        data = unify_tables(tables) if tables else pa.table({})
        self.ensure_table(name, data.schema)
        day = dt.date.fromisoformat(date)
        target = sa.table(name, *[sa.column(c) for c in [*data.column_names, DATE_COLUMN]])
        fast = self.engine.dialect.name == "sqlite"
        prep = self.engine.dialect.identifier_preparer
        sql = (
            f"INSERT INTO {prep.quote(name)} ({', '.join(prep.quote(c) for c in [*data.column_names, DATE_COLUMN])}) "
            f"VALUES ({', '.join('?' * (data.num_columns + 1))})"
        )
        with self.engine.begin() as conn:
            conn.execute(sa.delete(target).where(target.c[DATE_COLUMN] == day))
            for batch in data.to_batches(self.cfg.batch_rows):
                if not batch.num_rows:
                    continue
                cols = [_python_values(col, sqlite=fast) for col in batch.columns]
                if fast:  # SQLite: values already in its storage format; skip per-row bind processing
                    conn.exec_driver_sql(sql, list(zip(*cols, itertools.repeat(day.isoformat()), strict=False)))
                else:  # the dialect's bulk insert (insertmanyvalues: multi-row VALUES on PostgreSQL)
                    keys = [*data.column_names, DATE_COLUMN]
                    rows = [dict(zip(keys, values, strict=True)) for values in zip(*cols, itertools.repeat(day))]
                    conn.execute(sa.insert(target), rows)
            conn.execute(sa.delete(self.state).where(self.state.c.table_name == name, self.state.c.partition == date))
            conn.execute(
                sa.insert(self.state).values(
                    table_name=name,
                    partition=date,
                    fingerprint=fingerprint,
                    rows=data.num_rows,
                    loaded_at=dt.datetime.now(dt.UTC),
                )
            )
        self.summary.files += len(files)
        self.summary.records += data.num_rows
        self.summary.bytes += sum(size for _, size, _ in files)
        log.info("loaded", table=name, partition=date, rows=data.num_rows)

    def ensure_table(self, name: str, schema: pa.Schema) -> None:
        insp = sa.inspect(self.engine)
        if not insp.has_table(name):
            cols = [sa.Column(f.name, arrow_to_sql_type(f.type)) for f in schema]
            table = sa.Table(name, sa.MetaData(), *cols, sa.Column(DATE_COLUMN, sa.Date, nullable=False))
            sa.Index(f"ix_{name}_{DATE_COLUMN}", table.c[DATE_COLUMN])
            table.create(self.engine, checkfirst=True)
            log.info("table_created", table=name, columns=len(cols) + 1)
            return
        have = {c["name"] for c in insp.get_columns(name)}
        prep = self.engine.dialect.identifier_preparer
        with self.engine.begin() as conn:
            for f in schema:
                if f.name not in have:
                    coltype = arrow_to_sql_type(f.type).compile(dialect=self.engine.dialect)
                    conn.execute(sa.text(f"ALTER TABLE {prep.quote(name)} ADD COLUMN {prep.quote(f.name)} {coltype}"))
                    log.info("column_added", table=name, column=f.name, type=coltype)


def run_load(cfg: LoadConfig, data_types: list[str] | None = None) -> Summary:
    """Load every changed demux partition (or only ``data_types``) into its table; see the module docstring."""
    summary = Summary("load")
    loader = _Loader(cfg, summary)
    try:
        loader.run(data_types)
    finally:
        loader.engine.dispose()
    return summary
