"""headrace collectors: receive chunk batches over HTTP and write them into rolling Avro sink files;
then the log path's batch jobs: archive → demux → load.

Public API: :class:`CollectorConfig` (the ``collector:`` section) and :func:`build_app` (the Starlette
app that ``headrace collector`` serves), see ``docs/collector.md``; ``run_archive``, ``run_demux``,
``run_load`` with their config models and the processor API, see ``docs/archive-demux-load.md``;
``run_export``/``read_export`` (database tables → Parquet), see ``docs/export.md``.
"""

import importlib

from ._config import CollectorConfig

# Loaded lazily: build_app pulls in starlette and fastavro, the batch jobs pyarrow; keep
# ``import headrace.collectors`` light for the CLI and the daemons.
_LAZY = {
    "build_app": "._app",
    "ArchiveBusy": "._archive",
    "run_archive": "._archive",
    "run_demux": "._demux",
    "run_load": "._load",
    "run_export": "._export",
    "read_export": "._export",
    "ExportConfig": "._archive_config",
    "ArchiveConfig": "._archive_config",
    "DemuxConfig": "._archive_config",
    "LoadConfig": "._archive_config",
    "LineBatch": "._demux_lines",
    "Options": "._processors",
    "Parsed": "._processors",
    "Processor": "._processors",
    "convert": "._processors",
    "Summary": "._runreport",
}

__all__ = ["CollectorConfig", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
