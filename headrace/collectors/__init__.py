"""headrace collectors: receive chunk batches over HTTP and write them into rolling Avro sink files
(or forward them to upstream collectors).

The folder reads as the data flow: ``_receive`` → ``_commit`` → ``_sinkstore`` (``_dedupe``, ``_sink``,
``_roll``) or ``_forward``. Public API: :class:`CollectorConfig` (the ``collector:`` section) and
:func:`build_app` (the Starlette app that ``headrace collector`` serves), see ``docs/collector.md``.
The batch jobs that read sink files (archive → demux → load, export) are :mod:`headrace.batch`.
"""

import importlib

from ._config import CollectorConfig

# Loaded lazily: build_app pulls in starlette and fastavro; keep ``import headrace.collectors`` light
# for the CLI and the daemons. The batch jobs moved to :mod:`headrace.batch`; their names still
# resolve here so code written against earlier releases keeps working.
_LAZY = {"build_app": "._app"}
_MOVED = (
    "ArchiveBusy", "run_archive", "run_demux", "run_load", "run_export", "read_export", "ExportConfig",
    "ArchiveConfig", "DemuxConfig", "LoadConfig", "LineBatch", "Options", "Parsed", "Processor", "convert", "Summary",
)  # fmt: skip

__all__ = ["CollectorConfig", "build_app"]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    if name in _MOVED:
        return getattr(importlib.import_module("headrace.batch"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
