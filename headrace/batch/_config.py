"""The batch jobs' config sections: ``archive:``, ``demux:``, ``load:`` (the log path) and ``export:``."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import ConfigDict, Field

from .._block_codecs import Codec
from .._config import Section

__all__ = ["ArchiveConfig", "DemuxConfig", "DemuxType", "ExportConfig", "LoadConfig"]


class ArchiveConfig(Section):
    """Settings of ``headrace archive``: closed sink files in, per-day Avro archives out."""

    sink_dir: str = "./headrace-data/sink"  # reads sink_dir/done/
    archive_dir: str = "./headrace-data/archive"  # local path, s3://…, hdfs://…
    part_bytes: int = Field(default=256 << 20, gt=0)  # an archive part grows up to this, then a new one starts
    run_bytes: int = Field(default=1 << 30, gt=0)  # sink bytes merged per batch (bounds memory)
    codec: Codec = "zstandard"  # Avro block codec of new parts; every codec stays readable
    delete_sinks: bool = True  # remove a sink file once every chunk of it is durable in an archive
    lock_file: str | None = None  # default: sink_dir/.archive.lock (sink_dir must then be local)
    # where the run record (<job>.json: the last run's counts and outcome) goes; default <archive_dir>/_runs
    runs_dir: str | None = None


class DemuxType(Section):
    """How one data type is parsed: ``processor`` plus that processor's own options."""

    model_config = ConfigDict(extra="allow")

    processor: str = "raw"
    multiline: str | None = None  # RE2 pattern of a record's first line; other lines continue the record


class DemuxConfig(Section):
    """Settings of ``headrace demux``: archives in, Parquet tables out."""

    archive_dir: str = "./headrace-data/archive"
    output: str = "./headrace-data/tables"
    types: dict[str, DemuxType] = Field(default_factory=dict)
    default: DemuxType | None = Field(default_factory=DemuxType)  # for types not listed; null: skip them
    batch_bytes: int = Field(default=8 << 20, gt=0, le=1 << 30)  # smaller: more parallel; larger: fewer row groups
    compression: Literal["none", "snappy", "zstd", "gzip", "lz4"] = "zstd"
    threads: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)  # batches parsed at once
    # a data type whose share of records that failed to parse is above this fails the run (exit 1)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    # where the run record (<job>.json: the last run's counts and outcome) goes; default <output>/_runs
    runs_dir: str | None = None


class LoadConfig(Section):
    """Settings of ``headrace load``: Parquet partitions in, database tables out."""

    input: str = "./headrace-data/tables"  # demux output
    url: str = "sqlite:///headrace-data/logs.db"  # any SQLAlchemy URL (sqlite, postgresql+psycopg2, …)
    table_prefix: str = "logs_"
    tables: dict[str, str] = Field(default_factory=dict)  # data type → table name (default: prefix + type)
    data_types: list[str] | None = None  # default: every data type found under input
    batch_rows: int = Field(default=20_000, gt=0)
    # where the run record (<job>.json: the last run's counts and outcome) goes; default <input>/_runs
    runs_dir: str | None = None


class ExportConfig(Section):
    """Settings of ``headrace export``: database tables in, Parquet snapshots (or increments) out."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = "sqlite:///headrace-data/app.db"  # any SQLAlchemy URL the installed drivers reach
    output: str = "./headrace-data/exports"  # local path, s3://…, hdfs://…
    tables: list[str] | None = None  # default: every table of the database (schema)
    db_schema: str | None = Field(default=None, alias="schema")  # PostgreSQL/MySQL schema; default: the default
    incremental: dict[str, str] = Field(default_factory=dict)  # table → column: export only rows past its watermark
    batch_rows: int = Field(default=50_000, gt=0)  # rows fetched and written per row group
    part_rows: int = Field(default=2_000_000, gt=0)  # rows per Parquet file
    compression: Literal["none", "snappy", "zstd", "gzip", "lz4"] = "zstd"
    # where the run record (export.json: the last run's counts and outcome) goes; default <output>/_runs
    runs_dir: str | None = None
    # auto: a full export of a PostgreSQL table reads through ADBC's PostgreSQL driver when it is installed
    # (headrace[fastexport]) and every column has a type it reads exactly; sqlalchemy: always the reference path
    reader: Literal["auto", "sqlalchemy"] = "auto"
