"""The batch jobs' commands: ``headrace archive``, ``demux``, ``load`` (the log path) and ``export``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError, UsageError
from ._config import ArchiveConfig, DemuxConfig, ExportConfig, LoadConfig
from ._runreport import EXIT_IDLE, Summary


def _finish(summary: Summary) -> None:
    click.echo(summary.line())
    if summary.exit_code == EXIT_IDLE:
        raise SystemExit(EXIT_IDLE)
    if not summary.ok:
        raise FatalError("; ".join(summary.failures[:5]))


def _run(job: str, cfg: Any, run: Callable[[], Summary]) -> None:
    """Run ``job``, record the run (:mod:`._runrecord`: also when it raised), then report it."""
    from ._runrecord import record_of, write_record

    started_at = dt.datetime.now(dt.UTC)
    try:
        summary = run()
    except BaseException as exc:
        from ._archive import ArchiveBusy

        if isinstance(exc, ArchiveBusy):  # another run is going on: its record is the one to keep
            raise
        code = 2 if isinstance(exc, UsageError) else 130 if isinstance(exc, KeyboardInterrupt) else 1
        write_record(job, cfg, record_of(None, job, started_at, code, f"{type(exc).__name__}: {exc}"))
        raise
    write_record(job, cfg, record_of(summary, job, started_at, summary.exit_code))
    _finish(summary)


@click.command()
@common_options
def archive(config_path: str | None) -> None:
    """Merge closed sink files into sorted, de-duplicated per-day Avro archives."""
    cfg = load_section(config_path, "archive", ArchiveConfig, require=True)
    from ._archive import run_archive

    _run("archive", cfg, lambda: run_archive(cfg))


@click.command()
@common_options
@click.option("--data-type", "data_types", multiple=True, help="Only these data types (repeatable).")
def demux(config_path: str | None, data_types: tuple[str, ...]) -> None:
    """Parse archived records into typed Parquet tables (data_type=…/date=… partitions)."""
    cfg = load_section(config_path, "demux", DemuxConfig, require=True)
    from ._demux import run_demux

    _run("demux", cfg, lambda: run_demux(cfg, data_types=list(data_types) or None))


@click.command()
@common_options
@click.option("--data-type", "data_types", multiple=True, help="Only these data types (repeatable).")
def load(config_path: str | None, data_types: tuple[str, ...]) -> None:
    """Load demux partitions into database tables (replacing each partition in one transaction)."""
    cfg = load_section(config_path, "load", LoadConfig, require=True)
    from ._load import run_load

    _run("load", cfg, lambda: run_load(cfg, data_types=list(data_types) or None))


@click.command()
@common_options
def export(config_path: str | None) -> None:
    """Export database tables to Parquet: full snapshots, or increments past a watermark column."""
    cfg = load_section(config_path, "export", ExportConfig, require=True)
    from ._export import run_export

    _run("export", cfg, lambda: run_export(cfg))
