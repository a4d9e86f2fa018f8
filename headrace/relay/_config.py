"""The ``relay:`` config section."""

from __future__ import annotations

from pydantic import Field

from .._config import Listen, Section


class RelayConfig(Section):
    """Settings of ``headrace relay``."""

    listen: Listen = "127.0.0.1:7080"
    source: str = "sqlite:///./headrace-data/app.db"
    tables: list[str] | None = None
    buffer_bytes: int = Field(default=256 << 20, gt=0)
    tokens: list[str] = Field(default_factory=list)
    postgres: PostgresSourceConfig = Field(default_factory=lambda: PostgresSourceConfig())
    mysql: MysqlSourceConfig = Field(default_factory=lambda: MysqlSourceConfig())


class PostgresSourceConfig(Section):
    """``relay.postgres``: settings of the PostgreSQL source (``relay.source: postgresql://…``)."""

    slot: str = Field(default="headrace", pattern=r"^[a-z0-9_]{1,63}$")
    publication: str = Field(default="headrace", pattern=r"^[A-Za-z0-9_]{1,63}$")
    #: warn (log + metric) when the slot keeps more WAL than this
    wal_warn_bytes: int = Field(default=1 << 30, gt=0)
    #: without a durable consumer, the slot keeps this much history (seconds of commits) for relay restarts
    retain_seconds: float = Field(default=3600.0, ge=0)
    #: seconds between standby status updates (keepalive and flush position)
    status_interval: float = Field(default=10.0, gt=0)


class MysqlSourceConfig(Section):
    """``relay.mysql``: settings of the MySQL/MariaDB source (``relay.source: mysql://…``)."""

    #: the replica server id the relay uses on the binlog connection (unique among the server's replicas)
    server_id: int = Field(default=48151, ge=1, le=4294967295)
    #: no binlog event (not even a heartbeat) for this long means the stream stalled: reconnect and say so
    stall_seconds: float = Field(default=30.0, gt=0)
    #: rows of one transaction held in memory before the rest spills to a temporary file
    spill_rows: int = Field(default=10000, gt=0)
    #: where a relay without a durable consumer starts on first run: "current" (the server's binlog
    #: position now) or "oldest" (the oldest binlog file the server still has)
    start: str = Field(default="current", pattern=r"^(current|oldest)$")
    #: the relay's durable binlog position (the MySQL counterpart of a PostgreSQL slot)
    position_file: str = "./headrace-data/relay-mysql-position.json"
    #: without a durable consumer, the saved position trails the read position by this many seconds
    retain_seconds: float = Field(default=3600.0, ge=0)
