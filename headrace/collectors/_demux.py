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
import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._logging import get_logger
from .._storage import Store, resolve
from ..errors import ConfigError, FatalError
from ._archive import day_dir, read_chunks, read_manifest
from ._archive_manifest import Part
from ._config import DemuxConfig, DemuxType
from ._demux_lines import LineBatch, split_records
from ._processors import Processor, load_processor
from ._processors_builtin import _concat
from ._runreport import Summary, progress

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
    good = parsed.table.filter(ok) if parsed.table.num_columns else pa.table({})
    origin = {
        "_source": batch.source.filter(ok),
        "_stream": batch.stream.filter(ok),
        "_offset": batch.offset.filter(ok),
    }
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


def _batches(chunks: list[dict[str, Any]], limit: int) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[]]
    size = 0
    for c in chunks:
        if out[-1] and size + len(c["data"]) > limit:
            out.append([])
            size = 0
        out[-1].append(c)
        size += len(c["data"])
    return out


def _parquet(table: pa.Table, compression: str) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=None if compression == "none" else compression, row_group_size=1 << 20)
    return buf.getvalue()


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
        found = [
            d.removeprefix("data_type=")
            for d in self.archive.list_dirs(self.archive.base)
            if d.startswith("data_type=")
        ]
        return [t for t in found if only is None or t in only]

    def run(self, only: list[str] | None) -> None:
        todo: list[tuple[str, str, Processor]] = []
        for data_type in self.data_types(only):
            spec = self.spec(data_type)
            if spec is None:
                log.info("data_type_skipped", data_type=data_type, why="not in demux.types and demux.default is null")
                continue
            where = f"demux.types.{data_type}" if data_type in self.cfg.types else "demux.default"
            proc = load_processor(spec.processor, dict(spec.model_extra or {}), where)
            for d in self.archive.list_dirs(self.archive.path(f"data_type={data_type}")):
                if d.startswith("date="):
                    todo.append((data_type, d.removeprefix("date="), proc))
        with progress("demux", len(todo)) as bar:
            for data_type, date, proc in todo:
                self.run_day(data_type, date, proc)
                bar.advance()

    def state_path(self, data_type: str, date: str) -> str:
        return self.out.path(STATE_DIR, f"data_type={data_type}", f"date={date}.json")

    def run_day(self, data_type: str, date: str, proc: Processor) -> None:
        try:
            state: dict[str, int] = json.loads(self.out.read_bytes(self.state_path(data_type, date)))
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
                    self.run_part(data_type, date, part, proc)
                    state[part.stem] = part.gen
                    self.out.write_atomic(self.state_path(data_type, date), json.dumps(state).encode())
                return
            except FileNotFoundError:
                # the archive builder replaced the part while we read the manifest: read it again
                log.info("part_replaced_retry", data_type=data_type, date=date, attempt=attempt)
        self.summary.failures.append(f"{data_type}/{date}: archive parts kept changing while demux read them")

    def run_part(self, data_type: str, date: str, part: Part, proc: Processor) -> None:
        folder = self.archive.path(day_dir(data_type, date))
        raw = self.archive.read_bytes(posixpath.join(folder, part.name))
        chunks = list(read_chunks(raw))
        day = dt.date.fromisoformat(date)

        def work(batch: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table]:
            return demux_batch(proc, split_records(data_type, day, batch), data_type)

        results = list(self.pool.map(work, _batches(chunks, self.cfg.batch_bytes)))
        good = _concat([g for g, _ in results if g.num_columns]).unify_dictionaries()
        errors = pa.concat_tables([e for _, e in results]).unify_dictionaries()
        name = f"{part.stem}.parquet"
        self.out.write_atomic(
            self.out.path(f"data_type={data_type}", f"date={date}", name), _parquet(good, self.cfg.compression)
        )
        err_path = self.out.path(ERRORS_DIR, f"data_type={data_type}", f"date={date}", name)
        if errors.num_rows:
            self.out.write_atomic(err_path, _parquet(errors, self.cfg.compression))
        elif self.out.exists(err_path):
            self.out.delete(err_path)
        self.summary.files += 1
        self.summary.chunks += len(chunks)
        self.summary.records += good.num_rows
        self.summary.errors += errors.num_rows
        self.summary.bytes += sum(len(c["data"]) for c in chunks)
        log.info("demuxed", data_type=data_type, date=date, part=part.name, rows=good.num_rows, errors=errors.num_rows)


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
    return summary


def list_partitions(store: Store, data_type: str) -> list[str]:
    """The ``date=…`` partitions of one data type in a demux output."""
    return [
        d.removeprefix("date=") for d in store.list_dirs(store.path(f"data_type={data_type}")) if d.startswith("date=")
    ]
