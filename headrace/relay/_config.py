"""The ``relay:`` and ``subscriber:`` config sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .._access import TokenSpec, check_token_specs, insecure_listen_problem
from .._config import Listen, Section
from .._limits import HttpLimits
from .._tls import ClientTLS, ServerTLS


def _read_tokens(value: list[TokenSpec]) -> list[TokenSpec]:
    check_token_specs(value, scopes=("read",))
    return value


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
    #: bearer tokens (strings, or {token|token_file|token_env, scopes: [read], name?}); empty: no auth
    tokens: Annotated[list[TokenSpec], AfterValidator(_read_tokens)] = Field(default_factory=list)
    #: with tokens set, /metrics still answers loopback clients without a token
    metrics_open_on_localhost: bool = False
    #: start on a non-loopback listen address although tokens is empty
    allow_insecure: bool = False
    #: schemas and consumer acknowledgements live here
    state_dir: str = "./headrace-data/relay"
    #: consumers (e.g. the bootstrap server) whose acknowledged SCN bounds pruning of the source's log
    durable_consumers: list[str] = Field(default_factory=list)
    #: a captured value the relay cannot encode for its column: ``stop`` capture (and say where in
    #: /healthz), or deliver the row with that column null and named in ``_headrace_unrepresentable``
    on_unrepresentable: Literal["stop", "null_with_marker"] = "stop"
    #: longest long-poll a subscriber may ask for
    max_wait_ms: int = Field(default=60_000, ge=0)
    #: largest response a subscriber may ask for (a single larger window is still sent whole)
    max_response_bytes: int = Field(default=64 << 20, gt=0)
    #: concurrent ``/v1/stream`` requests (long-polls waiting for data count); past it: 503 ``too_many_streams``
    max_stream_requests: int = Field(default=1000, ge=1)
    #: bytes that stream responses being written may hold outside the buffer (each reserves two pieces)
    max_inflight_bytes: int = Field(default=64 << 20, gt=0)
    #: a response body is copied out of the buffer and written in pieces of this size
    stream_batch_bytes: int = Field(default=256 << 10, ge=4096, le=64 << 20)
    limits: HttpLimits = Field(default_factory=HttpLimits, description="request-level limits (docs/configuration.md)")
    sqlite: SqliteOptions = Field(default_factory=SqliteOptions)
    postgres: PostgresSourceConfig = Field(default_factory=lambda: PostgresSourceConfig())
    mysql: MysqlSourceConfig = Field(default_factory=lambda: MysqlSourceConfig())
    #: serve HTTPS with this certificate (optionally demanding client certificates: mTLS)
    tls: ServerTLS | None = None

    def _mtls(self) -> bool:
        return bool(self.tls is not None and self.tls.require_client_cert)

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> RelayConfig:
        problem = insecure_listen_problem(
            "relay", self.listen, bool(self.tokens), self.allow_insecure, mtls=self._mtls()
        )
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _room_for_streams(self) -> RelayConfig:
        if self.limits.max_connections <= self.max_stream_requests:
            raise ValueError(
                f"limits.max_connections ({self.limits.max_connections}) must be larger than max_stream_requests "
                f"({self.max_stream_requests}): each stream request holds a connection, and acks need some too"
            )
        return self


class SubscriberConfig(Section):
    """Settings of ``headrace subscribe`` read from the ``subscriber:`` section (flags override them)."""

    #: how https:// relays and bootstrap servers are verified, and the client certificate sent (mTLS)
    client_tls: ClientTLS | None = None


class PostgresSourceConfig(Section):
    """``relay.postgres``: settings of the PostgreSQL source (``relay.source: postgresql://…``)."""

    slot: str = Field(default="headrace", pattern=r"^[a-z0-9_]{1,63}$")
    publication: str = Field(default="headrace", pattern=r"^[A-Za-z0-9_]{1,63}$")
    #: warn (log + metric) when the slot keeps more WAL than this
    wal_warn_bytes: int = Field(default=1 << 30, gt=0)
    #: without a durable consumer, the slot keeps this much history (seconds of commits) for relay restarts
    retention_seconds: float = Field(default=3600.0, ge=0)
    #: seconds between standby status updates (keepalive and flush position)
    status_interval: float = Field(default=10.0, ge=1)
    #: DDL that changes how existing rows read without writing them (ADD COLUMN … DEFAULT, ALTER TYPE …
    #: RENAME VALUE / ADD ATTRIBUTE): "report" it (copies stay stale until re-seeded), or "rewrite" the
    #: affected rows in the DDL's own transaction so they travel as updates (costs a table rewrite; needs
    #: the event trigger, i.e. a superuser relay). See docs/sources-postgres.md.
    row_changing_ddl: str = Field(default="report", pattern=r"^(report|rewrite)$")


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
    #: the relay's durable binlog position (the MySQL counterpart of a PostgreSQL slot);
    #: default ``<relay.state_dir>/mysql-position.json``
    position_file: str | None = None
    #: without a durable consumer, the saved position trails the read position by this many seconds
    retention_seconds: float = Field(default=3600.0, ge=0)
