"""headrace collectors."""

__all__: list[str] = []

# The log path's batch jobs (archive → demux → load). Loaded lazily: they import pyarrow, which the
# collector daemon does not need.
_BATCH_API = {
    "ArchiveBusy": "._archive",
    "run_archive": "._archive",
    "run_demux": "._demux",
    "run_load": "._load",
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
__all__ += list(_BATCH_API)


def __getattr__(name: str) -> object:
    if name in _BATCH_API:
        import importlib

        return getattr(importlib.import_module(_BATCH_API[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
