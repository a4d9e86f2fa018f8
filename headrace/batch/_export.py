"""Export: database tables → Parquet, through SQLAlchemy (what Sqoop's import does for Hadoop).

Resume-state contract
---------------------
Per table, ``output/table=T/MANIFEST.json`` (:class:`ExportManifest`) is the commit point: it names
the export folders and files that make up the table's exported data, and in incremental mode the
watermark. A run:

1. deletes export folders the manifest does not name (leftovers of a killed run);
2. reads the rows (a full table, or those past the watermark) and writes them to a new folder
   ``table=T/export=<run id>/part-NNNNN.parquet``, each file atomically;
3. replaces the manifest atomically: a full export names only the new folder; an incremental one
   appends it and moves the watermark to the largest value exported;
4. deletes the folder a full export superseded.

A run killed anywhere leaves the old manifest (the next run deletes the orphan folder and exports
again) or the new one (and possibly the superseded folder, which the next run deletes). Rows are
never in the committed files twice and never missing from them. Readers read the files the manifest
names (``read_export`` does); folders whose names start with ``export=`` and are not named are not
data yet (or any more). Local output is locked (``output/.lock``): a second run refuses to start.

Consistency: every table of one run is read inside one read-only transaction at REPEATABLE READ
(PostgreSQL, MySQL/MariaDB) or one SQLite read transaction, so the tables of one run are one
consistent snapshot of the database. Incremental mode reads rows with ``column > watermark`` in
``column`` order: rows whose column value is below the watermark when they commit (a sequence value
taken by a transaction that commits late) are not exported; use the relay for exact change capture.
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from .._db import create_engine
from .._dirlock import lock_dir, unlock_dir
from .._logging import get_logger
from .._storage import Store, resolve
from .._typemap import TableMeta, table_meta_from_sqlalchemy
from ..errors import Unavailable, UsageError
from ._config import ExportConfig
from ._export_adbc import AdbcReader, adbc_available, fast_columns
from ._export_arrow import (
    WATERMARK_KINDS,
    ExportManifest,
    arrow_schema,
    from_watermark,
    rows_to_batch,
    to_watermark,
)
from ._runreport import Summary, progress

__all__ = ["read_export", "run_export"]

log = get_logger("export")
MANIFEST = "MANIFEST.json"
HEADRACE_TABLE_PREFIXES = ("headrace_", "_headrace_")  # tables headrace itself keeps in a database
EXPORT_PREFIX = "export="

# A column keeps Parquet dictionary encoding while its dictionary stays under 64 KiB per row group
# (pyarrow's default is 1 MiB) and falls back to plain encoding past it. Low-cardinality columns (codes,
# statuses, a few thousand names) stay dictionary-encoded for readers; unique ones (ids, amounts,
# timestamps) stop paying for hashing every value into a dictionary that zstd then compresses worse
# than the plain values. bench/export_postgres.py's 1M-row table: 21.6 MB → 11.6 MB with zstd, and
# Parquet encoding ≈ 0.30 → 0.17 s of CPU (docs/export.md, "Parquet settings").
DICTIONARY_PAGE_LIMIT = 64 * 1024


def _parquet_writer(sink: io.BytesIO, schema: pa.Schema, compression: str | None) -> pq.ParquetWriter:
    return pq.ParquetWriter(sink, schema, compression=compression, dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT)


def _engine(url: str) -> sa.engine.Engine:
    try:
        u = sa.engine.make_url(url)
        if u.get_backend_name() == "sqlite":
            # pysqlite issues no BEGIN before a SELECT: take the read transaction ourselves, so
            # every page and every table of a run reads one snapshot (SQLAlchemy's documented recipe)
            engine = create_engine(u, connect_args={"isolation_level": None})
            sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
            return engine
        return create_engine(u, isolation_level="REPEATABLE READ")
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise UsageError(f"export.url: cannot use {url!r}: {exc}") from exc


class _Exporter:
    def __init__(self, cfg: ExportConfig, summary: Summary, run_id: str) -> None:
        self.cfg = cfg
        self.summary = summary
        self.run_id = run_id
        self.out = resolve(cfg.output)
        self.engine = _engine(cfg.url)
        self.fast: AdbcReader | None = None

    def reflect(self) -> dict[str, tuple[sa.Table, TableMeta]]:
        md = sa.MetaData()
        try:
            names = sa.inspect(self.engine).get_table_names(schema=self.cfg.db_schema)
        except sa.exc.OperationalError as exc:
            raise Unavailable(f"export.url: cannot reach the database: {exc.orig}") from exc
        # by default headrace's own tables (the relay's change log, load's state) are left out
        wanted = self.cfg.tables
        if wanted is None:
            wanted = sorted(n for n in names if not n.startswith(HEADRACE_TABLE_PREFIXES))
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise UsageError(f"export.tables: {missing} not in the database (it has {sorted(names)})")
        out: dict[str, tuple[sa.Table, TableMeta]] = {}
        for name in wanted:
            table = sa.Table(name, md, autoload_with=self.engine, schema=self.cfg.db_schema)
            out[name] = (table, table_meta_from_sqlalchemy(table))
        for name, column in self.cfg.incremental.items():
            if name not in out:
                raise UsageError(f"export.incremental: table {name!r} is not exported (export.tables)")
            meta = out[name][1]
            col = next((c for c in meta.columns if c.name == column), None)
            if col is None:
                raise UsageError(f"export.incremental.{name}: no column {column!r} in {name}")
            if col.type.kind not in WATERMARK_KINDS:
                raise UsageError(
                    f"export.incremental.{name}: column {column!r} is {col.type.kind}; an incremental column "
                    f"must be one of {', '.join(WATERMARK_KINDS)} (a value that grows as rows are added)"
                )
        return out

    def manifest(self, name: str) -> ExportManifest | None:
        try:
            return ExportManifest.from_bytes(self.out.read_bytes(self.out.path(f"table={name}", MANIFEST)))
        except FileNotFoundError:
            return None

    def clean(self, name: str, keep: ExportManifest | None) -> None:
        """Delete export folders the manifest does not name (a killed run's, or superseded ones)."""
        named = {e["name"] for e in keep.exports} if keep else set()
        folder = self.out.path(f"table={name}")
        for d in self.out.list_dirs(folder):
            if d.startswith(EXPORT_PREFIX) and d not in named:
                self.out.delete_dir(posixpath.join(folder, d))

    def run(self) -> None:
        pending = self.connect_fast_path()  # connecting overlaps reflecting the tables
        try:
            tables = self.reflect()
            # one read transaction: the tables of a run are one snapshot
            with self.engine.connect() as conn, conn.begin(), progress("export", len(tables)) as bar:
                self.fast, pending = self.open_fast_path(conn, pending), None
                try:
                    for name, (table, meta) in tables.items():
                        self.export_table(conn, name, table, meta)
                        bar.advance()
                finally:
                    if self.fast is not None:
                        self.fast.close()
                        self.fast = None
        finally:
            if pending is not None and pending.exception() is None:  # reflecting failed: the run stops
                pending.result().close()

    def connect_fast_path(self) -> Future[AdbcReader] | None:
        """ADBC's PostgreSQL driver connecting in a thread, when it can be used (``export.reader: auto``, a
        PostgreSQL URL, the driver installed); see headrace/batch/_export_adbc.py."""
        if self.cfg.reader != "auto" or self.engine.dialect.name != "postgresql" or not adbc_available():
            return None
        pool = ThreadPoolExecutor(1, thread_name_prefix="headrace-export-connect")
        try:
            return pool.submit(AdbcReader, self.cfg.url)
        finally:
            pool.shutdown(wait=False)

    def open_fast_path(self, conn: sa.Connection, pending: Future[AdbcReader] | None) -> AdbcReader | None:
        """The connection of :meth:`connect_fast_path` reading in this transaction's snapshot, or None."""
        if pending is None:
            return None
        try:
            reader = pending.result()
        except Exception as exc:  # the driver's errors have no common base class worth naming here
            log.warning("export_fast_path_unavailable", error=str(exc), using="sqlalchemy")
            return None
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        try:
            reader.begin(str(snapshot))
        except Exception as exc:
            reader.close()
            log.warning("export_fast_path_unavailable", error=str(exc), using="sqlalchemy")
            return None
        return reader

    def columns(self, table: sa.Table, meta: TableMeta, incremental: str | None) -> list[Any]:
        """The selected columns. SQLite's unconstrained NUMERIC is read as the stored INTEGER or REAL
        (SQLAlchemy would quantize it to 10 places: ``0`` → ``0E-10``) and exported as its exact text."""
        if self.engine.dialect.name != "sqlite":
            return list(table.columns)
        out: list[Any] = []
        for c, m in zip(table.columns, meta.columns, strict=True):
            raw = m.type.kind == "decimal" and m.type.precision is None and c.name != incremental
            out.append(sa.type_coerce(c, sa.types.NullType()).label(c.name) if raw else c)
        return out

    def export_table(self, conn: sa.Connection, name: str, table: sa.Table, meta: TableMeta) -> None:
        old = self.manifest(name)
        self.clean(name, old)
        column = self.cfg.incremental.get(name)
        mode = "incremental" if column else "full"
        if old is not None and (old.mode != mode or (column and old.incremental_column != column)):
            log.warning("export_mode_changed", table=name, was=old.mode, now=mode, why="starting over")
            old = None
        q = sa.select(*self.columns(table, meta, column))
        watermark = old.watermark if old is not None else None
        if column:
            kind = next(c.type.kind for c in meta.columns if c.name == column)
            if watermark is not None:
                q = q.where(table.c[column] > from_watermark(kind, watermark))
            q = q.order_by(table.c[column])
        elif meta.key:
            q = q.order_by(*(table.c[k] for k in meta.key))
        folder = f"{EXPORT_PREFIX}{self.run_id}"
        files, rows, size, last = self.write_parts(conn, q, table, meta, name, folder, column)
        if column and rows == 0 and old is not None:
            log.info("export_nothing_new", table=name, watermark=watermark)
            return
        exports = list(old.exports) if (old is not None and column) else []
        if files:
            exports.append({"name": folder, "files": files, "rows": rows, "exported_at": self.run_id})
        new = ExportManifest(
            table=name,
            mode=mode,
            columns=[c.name for c in meta.columns],
            exports=exports,
            watermark=to_watermark(last) if column and last is not None else watermark,
            incremental_column=column,
        )
        self.out.write_atomic(self.out.path(f"table={name}", MANIFEST), new.to_bytes())  # the commit point
        self.clean(name, new)
        self.summary.files += len(files)
        self.summary.records += rows
        self.summary.bytes += size
        log.info("exported", table=name, mode=mode, rows=rows, files=len(files), watermark=new.watermark)

    def write_parts(
        self,
        conn: sa.Connection,
        q: sa.Select[Any],
        table: sa.Table,
        meta: TableMeta,
        name: str,
        folder: str,
        column: str | None,
    ) -> tuple[list[str], int, int, Any]:
        batches: Iterator[pa.RecordBatch] | None = None
        if self.fast is not None and column is None:  # full exports only: no watermark to bind or track
            fq = q.with_only_columns(*fast_columns(table, meta))
            batches = self.fast.batches(str(fq.compile(dialect=self.engine.dialect)), meta, self.cfg.batch_rows)
        last: list[Any] = [None]
        if batches is None:
            batches = self.reference_batches(conn, q, meta, name, column, last)
            log.debug("export_reader", table=name, reader="sqlalchemy")
        else:
            log.debug("export_reader", table=name, reader="adbc")
        try:
            files, rows, size = self.write_batches(batches, arrow_schema(meta), name, folder, column)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # a reader thread must be done with the connection before it is used again
                close()
        return files, rows, size, last[0]

    def reference_batches(
        self, conn: sa.Connection, q: sa.Select[Any], meta: TableMeta, name: str, column: str | None, last: list[Any]
    ) -> Iterator[pa.RecordBatch]:
        """Rows through SQLAlchemy, converted by :func:`rows_to_batch`; ``last[0]``: the incremental column's
        value in the last row so far."""
        col_index = [c.name for c in meta.columns].index(column) if column else -1
        result = conn.execution_options(stream_results=True, yield_per=self.cfg.batch_rows).execute(q)
        for page in result.partitions(self.cfg.batch_rows):
            try:
                batch = rows_to_batch(meta, page)
            except ValueError as exc:
                raise UsageError(f"table {name!r}: {exc}") from exc
            if column:
                last[0] = page[-1][col_index]
            yield batch

    def write_batches(
        self, batches: Iterable[pa.RecordBatch], schema: pa.Schema, name: str, folder: str, column: str | None
    ) -> tuple[list[str], int, int]:
        compression = None if self.cfg.compression == "none" else self.cfg.compression
        files: list[str] = []
        rows = size = 0
        buf: io.BytesIO | None = None
        writer: pq.ParquetWriter | None = None
        in_part = 0

        def finish() -> None:
            nonlocal buf, writer, size, in_part
            assert buf is not None and writer is not None
            writer.close()
            fname = f"part-{len(files):05d}.parquet"
            data = buf.getvalue()
            self.out.write_atomic(self.out.path(f"table={name}", folder, fname), data)
            files.append(fname)
            size += len(data)
            buf, writer, in_part = None, None, 0

        for batch in batches:
            if writer is None:
                buf = io.BytesIO()
                writer = _parquet_writer(buf, schema, compression)
            writer.write_batch(batch)
            rows += batch.num_rows
            in_part += batch.num_rows
            if in_part >= self.cfg.part_rows:
                finish()
        if writer is not None:
            finish()
        if not files and not column:  # an empty table still gets a file with its schema
            buf = io.BytesIO()
            writer = _parquet_writer(buf, schema, compression)
            finish()
        return files, rows, size


@contextmanager
def _locked(store: Store) -> Iterator[None]:
    fd = lock_dir(store.base, "export output", "headrace export") if store.is_local else None
    try:
        yield
    finally:
        unlock_dir(fd)


def run_export(cfg: ExportConfig, run_id: str | None = None) -> Summary:
    """Export the configured tables (see the module docstring); ``run_id`` names the new export folders.

    Bad configuration (an unknown table or incremental column) raises :class:`~headrace.errors.UsageError`
    before anything is written.
    """
    summary = Summary("export", counts_chunks=False)
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    exporter = _Exporter(cfg, summary, run_id)
    with _locked(exporter.out):
        exporter.run()
    return summary


def read_export(output: str, table: str, columns: list[str] | None = None) -> pa.Table:
    """The committed rows of ``table`` in an export ``output`` (the files its manifest names)."""
    store = resolve(output)
    man = ExportManifest.from_bytes(store.read_bytes(store.path(f"table={table}", MANIFEST)))
    paths = [store.path(f"table={table}", f) for f in man.files]
    tables = [pq.read_table(p, filesystem=store.fs, columns=columns) for p in paths]
    return pa.concat_tables(tables) if tables else pa.table({})
