"""Demux: archive parts → typed Parquet tables (``data_type=…/date=…``) and ``_errors`` tables.

Resume-state contract
---------------------
For every archive part, the output is one Parquet file named after the part without its generation
(``output/data_type=T/date=D/part-00000.parquet``), and one in ``output/_errors/data_type=T/date=D/``
when some records did not parse. Both are written atomically and replace what a previous run wrote,
so demuxing a part again (after a crash, or because the archive builder grew it) never doubles rows.
``output/_state/data_type=T/date=D.json`` maps each part to the generation last demuxed; it is written
after the Parquet files, and a run skips parts whose generation is unchanged. A run killed at any
point redoes at most the parts it had not yet recorded.

Per part: the chunks are cut into batches (``batch_bytes``), each batch is split into records with
their origin (``_demux_lines``), the data type's processor parses the whole batch on Arrow arrays,
rows that parsed get ``_source``, ``_stream``, ``_offset`` and go to the table, the others go to
``_errors`` with the raw text and the reason. Batches run on ``threads`` threads (Arrow releases the GIL).
"""

from __future__ import annotations

import datetime as dt
import io
import posixpath
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from .._container import Block, decode_block, iter_blocks
from .._logging import get_logger
from .._statefile import StateFile
from .._storage import Store, resolve
from ..errors import ConfigError, FatalError
from ._archive import read_manifest
from ._config import DemuxConfig, DemuxType
from ._layout import data_types, dates, day_dir, type_dir
from ._lines import LineBatch, split_records
from ._manifest import Part
from ._processors import Processor, load_processor
from ._runreport import Summary, progress
from ._unify import unify_tables

__all__ = ["ERRORS_DIR", "demux_batch", "run_demux"]

log = get_logger("demux")
ERRORS_DIR = "_errors"
STATE_DIR = "_state"
ORIGIN = ("_source", "_stream", "_offset")


def demux_batch(processor: Processor, batch: LineBatch, name: str = "processor") -> tuple[pa.Table, pa.Table]:
    """Parse one batch: (parsed rows with origin columns, error rows: origin, raw, reason)."""
    parsed = processor.parse(batch)
    n = len(batch)
    if len(parsed.reason) != n or (parsed.table.num_columns and parsed.table.num_rows != n):
        raise FatalError(
            f"processor {name} returned {parsed.table.num_rows} rows for {n} records; it must return one per record"
        )
    ok = pc.is_null(parsed.reason)
    bad = pc.invert(ok)
    if parsed.reason.null_count == n:  # every record parsed: no copy through filter
        good = parsed.table if parsed.table.num_columns else pa.table({})
        origin = {"_source": batch.source, "_stream": batch.stream, "_offset": batch.offset}
    else:
        good = parsed.table.filter(ok) if parsed.table.num_columns else pa.table({})
        origin = {
            "_source": batch.source.filter(ok),
            "_stream": batch.stream.filter(ok),
            "_offset": batch.offset.filter(ok),
        }
    if not good.num_columns:  # records with no fields (`{}`): rows of origin columns only
        good = pa.table(origin)
    for col, values in origin.items():
        if col in good.column_names:
            good = good.drop_columns([col])
        good = good.append_column(col, values)
    errors = pa.table(
        {
            "_source": batch.source.filter(bad),
            "_stream": batch.stream.filter(bad),
            "_offset": batch.offset.filter(bad),
            "raw": batch.lines.filter(bad),
            "reason": parsed.reason.filter(bad).cast(pa.string()),
        }
    )
    if batch.bad_utf8 is not None and batch.bad_utf8.num_rows:
        errors = pa.concat_tables([errors, batch.bad_utf8.cast(errors.schema)])
    return good, errors


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Columns worth Parquet dictionary encoding: few distinct values in a sample (trying it on every
    column costs a third of the write time for little gain on high-cardinality text)."""
    out = []
    sample = table.slice(0, 20_000)
    for f in sample.schema:
        if pa.types.is_dictionary(f.type):
            out.append(f.name)
        elif pa.types.is_nested(f.type):
            continue
        elif sample.num_rows and pc.count_distinct(sample[f.name]).as_py() <= sample.num_rows // 4:
            out.append(f.name)
    return out


def _statistics_columns(schema: pa.Schema) -> list[str]:
    """Columns that get min/max statistics: numbers, times, booleans (what queries filter on); string
    min/max cost much of the write time and rarely prune anything in log text."""
    out = []
    for f in schema:
        t = f.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t) or pa.types.is_boolean(t):
            out.append(f.name)
    return out


def _parquet(table: pa.Table, compression: str) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression=None if compression == "none" else compression,
        row_group_size=1 << 20,
        use_dictionary=_dictionary_columns(table),
        write_statistics=_statistics_columns(table.schema),
    )
    return buf.getvalue()


class DemuxDayState(BaseModel):
    """``_state/data_type=T/date=D.json``: the archive part generation each part was demuxed at."""

    parts: dict[str, int] = {}


#: version 0 (before versions): the part → generation mapping itself
DEMUX_STATE_FILE = StateFile("demux day", DemuxDayState, 1, {0: lambda legacy: {"parts": legacy}})


def _in_order_of(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` with its columns in ``schema``'s order when it has the same columns of the same types
    (JSON batches list fields in the order each first met them), else None."""
    if sorted(table.column_names) != sorted(schema.names) or len(set(schema.names)) != len(schema.names):
        return None
    ordered = table.select(schema.names)
    return ordered if ordered.schema.equals(schema, check_metadata=False) else None


class _PartWriter:
    """Writes batches as row groups as they come (overlapping with parsing) while their schemas agree;
    when a batch brings a different schema (JSON inference), falls back to one write of all batches
    with the schemas unified."""

    def __init__(self, compression: str) -> None:
        self.compression = None if compression == "none" else compression
        self.tables: list[pa.Table] = []
        self.buf = io.BytesIO()
        self.writer: pq.ParquetWriter | None = None
        self.mixed = False
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if not table.num_columns:
            return
        self.tables.append(table)
        self.rows += table.num_rows
        if self.mixed:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                self.buf,
                table.schema,
                compression=self.compression,
                use_dictionary=_dictionary_columns(table),
                write_statistics=_statistics_columns(table.schema),
            )
        if table.schema.equals(self.writer.schema, check_metadata=False):
            same: pa.Table | None = table
        else:
            same = _in_order_of(table, self.writer.schema)
        if same is not None:
            self.writer.write_table(same)
        else:
            self.mixed = True

    def finish(self) -> bytes | None:
        if not self.tables:
            return None
        assert self.writer is not None
        self.writer.close()
        if not self.mixed:
            return self.buf.getvalue()
        return _parquet(unify_tables(self.tables).unify_dictionaries(), self.compression or "none")


class _Demuxer:
    def __init__(self, cfg: DemuxConfig, summary: Summary) -> None:
        self.cfg = cfg
        self.summary = summary
        self.archive = resolve(cfg.archive_dir)
        self.out = resolve(cfg.output)
        self.pool = ThreadPoolExecutor(cfg.threads)

    def spec(self, data_type: str) -> DemuxType | None:
        return self.cfg.types.get(data_type, self.cfg.default)

    def data_types(self, only: list[str] | None) -> list[str]:
        return [t for t in data_types(self.archive) if only is None or t in only]

    def run(self, only: list[str] | None) -> None:
        todo: list[tuple[str, str, Processor]] = []
        for data_type in self.data_types(only):
            spec = self.spec(data_type)
            if spec is None:
                log.info("data_type_skipped", data_type=data_type, why="not in demux.types and demux.default is null")
                continue
            where = f"demux.types.{data_type}" if data_type in self.cfg.types else "demux.default"
            proc = load_processor(spec.processor, dict(spec.model_extra or {}), where)
            todo += [(data_type, date, proc) for date in dates(self.archive, data_type)]
        with progress("demux", len(todo)) as bar:
            for data_type, date, proc in todo:
                self.run_day(data_type, date, proc)
                bar.advance()

    def state_path(self, data_type: str, date: str) -> str:
        return self.out.path(STATE_DIR, type_dir(data_type), f"date={date}.json")

    def multiline(self, data_type: str) -> str | None:
        spec = self.spec(data_type)
        return spec.multiline if spec else None

    def run_day(self, data_type: str, date: str, proc: Processor) -> None:
        where = self.state_path(data_type, date)
        try:
            state = DEMUX_STATE_FILE.decode(self.out.read_bytes(where), where).parts
        except FileNotFoundError:
            state = {}
        for attempt in range(3):
            manifest = read_manifest(self.archive, data_type, date)
            if manifest is None:
                return
            try:
                for part in manifest.parts:
                    if state.get(part.stem) == part.gen:
                        continue
                    try:
                        self.run_part(data_type, date, part, proc)
                    except (FileNotFoundError, ConfigError):
                        raise
                    except Exception as exc:  # a corrupt part or a failing (user) processor: report, go on
                        log.error("part_failed", data_type=data_type, date=date, part=part.name, error=repr(exc))
                        self.summary.failures.append(f"{data_type}/{date}/{part.name}: {exc!r}")
                        continue
                    state[part.stem] = part.gen
                    self.out.write_atomic(where, DEMUX_STATE_FILE.encode(DemuxDayState(parts=state)))
                return
            except FileNotFoundError:
                # the archive builder replaced the part while we read the manifest: read it again
                log.info("part_replaced_retry", data_type=data_type, date=date, attempt=attempt)
        self.summary.failures.append(f"{data_type}/{date}: archive parts kept changing while demux read them")

    def run_part(self, data_type: str, date: str, part: Part, proc: Processor) -> None:
        """Demux one part: batches are parsed on the pool while this thread reads Avro and writes Parquet."""
        folder = self.archive.path(day_dir(data_type, date))
        raw = self.archive.read_bytes(posixpath.join(folder, part.name))
        day = dt.date.fromisoformat(date)
        multiline = self.multiline(data_type)
        chunks = data_bytes = 0

        def work(blocks: list[Block]) -> tuple[pa.Table, pa.Table, int, int]:
            batch = [c for b in blocks for c in decode_block(b)]  # inflating here runs in parallel
            good, errors = demux_batch(proc, split_records(data_type, day, batch, multiline), data_type)
            return good, errors, len(batch), sum(len(c["data"]) for c in batch)

        def batches() -> Iterator[list[Block]]:
            # archive blocks hold ~1 MiB of chunk data each (see _archive.encode_part)
            per_batch = max(1, self.cfg.batch_bytes >> 20)
            batch: list[Block] = []
            for block in iter_blocks(raw):
                batch.append(block)
                if len(batch) >= per_batch:
                    yield batch
                    batch = []
            if batch:
                yield batch

        out = _PartWriter(self.cfg.compression)
        errors: list[pa.Table] = []
        pending: deque[Future[tuple[pa.Table, pa.Table, int, int]]] = deque()

        def collect() -> None:
            nonlocal chunks, data_bytes
            good_b, err_b, n_chunks, n_bytes = pending.popleft().result()
            out.add(good_b)
            errors.append(err_b)
            chunks += n_chunks
            data_bytes += n_bytes

        for batch in batches():
            pending.append(self.pool.submit(work, batch))
            while len(pending) > self.cfg.threads:
                collect()
        while pending:
            collect()
        name = f"{part.stem}.parquet"
        path = self.out.path(day_dir(data_type, date), name)
        good_rows = out.rows
        data = out.finish()
        if data is None:
            self.out.delete(path)
        else:
            self.out.write_atomic(path, data)
        err_table = pa.concat_tables(errors).unify_dictionaries() if errors else None
        err_path = self.out.path(ERRORS_DIR, day_dir(data_type, date), name)
        if err_table is not None and err_table.num_rows:
            self.out.write_atomic(err_path, _parquet(err_table, self.cfg.compression))
        elif self.out.exists(err_path):
            self.out.delete(err_path)
        n_errors = err_table.num_rows if err_table is not None else 0
        reasons: dict[str, int] = {}
        if n_errors and err_table is not None:
            counts = pc.value_counts(err_table["reason"].combine_chunks().cast(pa.string()))
            reasons = {c["values"].as_py(): c["counts"].as_py() for c in counts}
        self.summary.add_errors(data_type, good_rows, n_errors, reasons)
        self.summary.files += 1
        self.summary.chunks += chunks
        self.summary.records += good_rows
        self.summary.errors += n_errors
        self.summary.bytes += data_bytes
        log.info("demuxed", data_type=data_type, date=date, part=part.name, rows=good_rows, errors=n_errors)


def run_demux(cfg: DemuxConfig, data_types: list[str] | None = None) -> Summary:
    """Demux every archive part that changed since the last run (or only ``data_types``).

    A bad processor configuration raises :class:`~headrace.errors.ConfigError` before anything is written.
    """
    summary = Summary("demux")
    demuxer = _Demuxer(cfg, summary)
    for data_type, spec in cfg.types.items():  # fail fast on every configured type, even without archives
        load_processor(spec.processor, dict(spec.model_extra or {}), f"demux.types.{data_type}")
    try:
        demuxer.run(data_types)
    except ConfigError:
        raise
    finally:
        demuxer.pool.shutdown()
    summary.check_error_rate(cfg.max_error_rate, "demux.max_error_rate")
    return summary


def list_partitions(store: Store, data_type: str) -> list[str]:
    """The ``date=…`` partitions of one data type in a demux output."""
    return dates(store, data_type)
