"""headrace collectors: receive chunk batches over HTTP and write them into rolling Avro sink files.

Public API: :class:`CollectorConfig` (the ``collector:`` section) and :func:`build_app` (the Starlette
app that ``headrace collector`` serves). See ``docs/collector.md``.
"""

from ._config import CollectorConfig

__all__ = ["CollectorConfig", "build_app"]


def __getattr__(name: str) -> object:
    # build_app pulls in starlette and fastavro; keep ``import headrace.collectors`` light for the CLI.
    if name == "build_app":
        from ._app import build_app

        return build_app
    raise AttributeError(name)
