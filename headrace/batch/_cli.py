"""The batch jobs' commands: ``headrace archive``, ``demux``, ``load`` (the log path) and ``export``."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError
from ._config import ArchiveConfig, DemuxConfig, ExportConfig, LoadConfig
from ._runreport import EXIT_IDLE, Summary


def _finish(summary: Summary) -> None:
    click.echo(summary.line())
    if summary.exit_code == EXIT_IDLE:
        raise SystemExit(EXIT_IDLE)
    if not summary.ok:
        raise FatalError("; ".join(summary.failures[:5]))


@click.command()
@common_options
def archive(config_path: str | None) -> None:
    """Merge closed sink files into sorted, de-duplicated per-day Avro archives."""
    cfg = load_section(config_path, "archive", ArchiveConfig, require=True)
    from ._archive import run_archive

    _finish(run_archive(cfg))


@click.command()
@common_options
@click.option("--data-type", "data_types", multiple=True, help="Only these data types (repeatable).")
def demux(config_path: str | None, data_types: tuple[str, ...]) -> None:
    """Parse archived records into typed Parquet tables (data_type=…/date=… partitions)."""
    cfg = load_section(config_path, "demux", DemuxConfig, require=True)
    from ._demux import run_demux

    _finish(run_demux(cfg, data_types=list(data_types) or None))


@click.command()
@common_options
@click.option("--data-type", "data_types", multiple=True, help="Only these data types (repeatable).")
def load(config_path: str | None, data_types: tuple[str, ...]) -> None:
    """Load demux partitions into database tables (replacing each partition in one transaction)."""
    cfg = load_section(config_path, "load", LoadConfig, require=True)
    from ._load import run_load

    _finish(run_load(cfg, data_types=list(data_types) or None))


@click.command()
@common_options
def export(config_path: str | None) -> None:
    """Export database tables to Parquet: full snapshots, or increments past a watermark column."""
    cfg = load_section(config_path, "export", ExportConfig, require=True)
    from ._export import run_export

    _finish(run_export(cfg))
