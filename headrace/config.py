"""Reading a headrace config file from your own code (the shipped Airflow DAGs use this).

``load(path, "demux", DemuxConfig)`` reads one top-level section of the YAML file into the part's
config model, with the same ``HEADRACE_<SECTION>__<KEY>`` environment overrides and the same
errors (:class:`~headrace.errors.ConfigError`, naming each bad key) as the ``headrace`` command.
The models are exported by the parts (``headrace.batch.DemuxConfig``, ``headrace.bootstrap.BootstrapConfig`` …).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from ._config import Section, load_section

__all__ = ["Section", "load"]

S = TypeVar("S", bound=Section)


def load(
    path: str | os.PathLike[str] | None, section: str, model: type[S], environ: Mapping[str, str] | None = None
) -> S:
    """``section`` of the YAML file at ``path`` (defaults and environment only when ``path`` is None),
    validated by ``model``; ``environ`` defaults to ``os.environ``."""
    return load_section(path, section, model, environ)
