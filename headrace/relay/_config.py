"""The ``relay:`` and ``subscriber:`` config sections."""

from __future__ import annotations

from pydantic import Field

from .._config import Listen, Section


class SqliteOptions(Section):
    """``relay.sqlite``: the SQLite source's polling and pruning."""

    poll_ms: int = Field(default=20, ge=1, le=60_000)
    #: changes younger than this are kept even when acknowledged; None: prune only on acknowledgement
    retention_seconds: float | None = Field(default=86_400.0, ge=0)
    prune_interval_seconds: float = Field(default=10.0, gt=0)


class RelayConfig(Section):
    """Settings of ``headrace relay``."""

    listen: Listen = "127.0.0.1:7080"
    source: str = "sqlite:///./headrace-data/app.db"
    tables: list[str] | None = None
    buffer_bytes: int = Field(default=256 << 20, gt=0)
    tokens: list[str] = Field(default_factory=list)
    #: schemas and consumer acknowledgements live here
    state_dir: str = "./headrace-data/relay"
    #: consumers (e.g. the bootstrap server) whose acknowledged SCN bounds pruning of the source's log
    durable_consumers: list[str] = Field(default_factory=list)
    #: longest long-poll a subscriber may ask for
    max_wait_ms: int = Field(default=60_000, ge=0)
    #: largest response a subscriber may ask for (a single larger window is still sent whole)
    max_response_bytes: int = Field(default=64 << 20, gt=0)
    sqlite: SqliteOptions = Field(default_factory=SqliteOptions)
