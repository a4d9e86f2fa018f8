"""headrace batch jobs: the log path's archive → demux → load, and database tables → Parquet.

Each job is a function that does what is pending and returns a :class:`Summary` (the CLI commands
``headrace archive``, ``demux``, ``load``, ``export`` and ``tap`` wrap them): ``run_archive`` merges
closed sink files into per-day archives, ``run_demux`` parses archives into Parquet with a processor
(the processor API: :class:`Processor`, :class:`LineBatch`, :class:`Parsed`, :class:`Options`,
:func:`convert`), ``run_load`` loads Parquet partitions into database tables, ``run_export`` copies
database tables into Parquet. See ``docs/archive-demux-load.md`` and ``docs/export.md``.

The folder reads as the data flow: ``_archive`` (+ ``_merge``, ``_manifest``) → ``_demux`` (+
``_lines``, ``_processors*``) → ``_load``; ``_export`` (+ ``_export_arrow``); ``_layout`` names the
``data_type=T/date=D`` folders every job shares; ``_runreport`` is what a run reports.
"""

import importlib

# Loaded lazily: the jobs pull in pyarrow and SQLAlchemy; keep ``import headrace.batch`` light.
_LAZY = {
    "ArchiveBusy": "._archive",
    "run_archive": "._archive",
    "run_demux": "._demux",
    "run_load": "._load",
    "run_export": "._export",
    "read_export": "._export",
    "ArchiveConfig": "._config",
    "DemuxConfig": "._config",
    "ExportConfig": "._config",
    "LoadConfig": "._config",
    "LineBatch": "._lines",
    "Options": "._processors",
    "Parsed": "._processors",
    "Processor": "._processors",
    "convert": "._processors",
    "Summary": "._runreport",
    "list_data_types": "._layout",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
