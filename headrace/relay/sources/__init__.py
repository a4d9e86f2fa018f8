"""Change sources: SQLite (triggers), PostgreSQL (logical decoding), MySQL/MariaDB (row binlog).

:func:`make_source` picks the source by the URL scheme of ``relay.source``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ...errors import ConfigError
from ._base import ChangeSource, ChangeWindow, RowChange

if TYPE_CHECKING:
    from .._config import RelayConfig

__all__ = ["SOURCE_CLASSES", "ChangeSource", "ChangeWindow", "RowChange", "make_source"]

#: URL scheme (before any ``+driver``) → ``module:Class`` implementing :class:`ChangeSource`.
#: Each class is constructed as ``Class(config)`` with the whole ``RelayConfig``.
SOURCE_CLASSES: dict[str, str] = {
    "sqlite": "headrace.relay.sources.sqlite:SqliteSource",
    "postgresql": "headrace.relay.sources.postgres:PostgresSource",
    "postgres": "headrace.relay.sources.postgres:PostgresSource",
    "mysql": "headrace.relay.sources.mysql:MysqlSource",
    "mariadb": "headrace.relay.sources.mysql:MysqlSource",
}


def make_source(config: RelayConfig) -> ChangeSource:
    """The source for ``config.source`` (a SQLAlchemy URL)."""
    scheme = str(config.source).split(":", 1)[0].split("+", 1)[0].lower()
    target = SOURCE_CLASSES.get(scheme)
    if target is None:
        raise ConfigError(
            [f"relay.source: unsupported database {scheme!r} (use sqlite:///…, postgresql://… or mysql://…)"]
        )
    module, _, cls = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError([f"relay.source: the {scheme} source is not available: {exc}"]) from exc
    source: ChangeSource = getattr(mod, cls)(config)
    return source
