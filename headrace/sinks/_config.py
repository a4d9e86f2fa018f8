"""The ``sink:`` config section (``headrace sink --config FILE``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .._config import Listen, Section
from .._tls import ClientTLS

__all__ = ["LakeTarget", "NatsTarget", "SinkConfig", "SqlTarget"]


class SqlTarget(Section):
    """``sink.target`` with ``type: sql``: a replica of the captured tables in a SQLAlchemy database."""

    type: Literal["sql"]
    #: SQLAlchemy URL of the replica database (postgresql://…, mysql://…, mariadb://…, sqlite:///…)
    url: str
    #: prefix of every replica table's name (the source table ``public.t`` becomes ``<prefix>public_t``)
    table_prefix: str = ""
    #: replica table names by source table (overrides the default name)
    tables: dict[str, str] = Field(default_factory=dict)
    #: most windows applied in one transaction (1: a transaction per window)
    batch_windows: int = Field(default=1_000, ge=1)
    #: most rows staged before the transaction is committed
    batch_rows: int = Field(default=50_000, ge=1)
    #: staged windows are committed at the latest after this many seconds
    batch_seconds: float = Field(default=1.0, ge=0)


class NatsTarget(Section):
    """``sink.target`` with ``type: nats``: every event published to NATS JetStream."""

    type: Literal["nats"]
    #: NATS server URLs
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    #: the JetStream stream (created on start when missing, with subjects ``<subject_prefix>.>``)
    stream: str = Field(default="HEADRACE", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: subject of a table's events: ``<subject_prefix>.<table>`` (characters but ``A-Za-z0-9_-`` become ``_``)
    subject_prefix: str = Field(default="headrace", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    #: JetStream's duplicate window, seconds (set when the sink creates the stream)
    duplicate_window_seconds: float = Field(default=600.0, gt=0)
    #: publishes in flight before the sink waits for their acks
    max_pending: int = Field(default=2_000, ge=1)
    #: seconds to wait for a publish ack
    ack_timeout: float = Field(default=10.0, gt=0)
    #: user credentials file (.creds) for NATS, if the server needs one
    credentials: str | None = None


class LakeTarget(Section):
    """``sink.target`` with ``type: lake``: Delta Lake tables (a current-state and a change table per source table)."""

    type: Literal["lake"]
    #: root of the lake: a local folder or ``s3://bucket/prefix`` (tables ``current/<name>``,
    #: ``changes/<name>`` and the sink's commit log ``_headrace_sink/<sink name>`` below it)
    uri: str = Field(min_length=1)
    #: deltalake (object_store) storage options: ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``,
    #: credentials, ``AWS_S3_ALLOW_UNSAFE_RENAME`` (one writer per table) or a locking provider
    storage_options: dict[str, str] = Field(default_factory=dict)
    #: prefix of every table's name (the source table ``main.t`` becomes ``<prefix>main_t``)
    table_prefix: str = ""
    #: lake table names by source table (overrides the default name)
    tables: dict[str, str] = Field(default_factory=dict)
    #: most windows per commit (every commit is a Delta version of each table it touches: keep them big)
    batch_windows: int = Field(default=10_000, ge=1)
    #: most events staged before a commit
    batch_rows: int = Field(default=100_000, ge=1)
    #: staged windows are committed at the latest after this many seconds
    batch_seconds: float = Field(default=5.0, ge=0)
    #: ``headrace sink --compact``: files removed by compaction are deleted when older than this (hours)
    vacuum_retention_hours: int = Field(default=168, ge=0)


class SinkConfig(Section):
    """Settings of ``headrace sink``."""

    #: this sink's name: the key of its checkpoint in the target (two sinks into one target need two names)
    name: str = Field(default="sink", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    #: host:port of GET /healthz and GET /metrics (no access control: keep it on loopback); needed by ``headrace up``
    listen: Listen | None = None
    #: relay URLs (failover in order)
    relays: list[str] = Field(min_length=1)
    #: bootstrap server URLs: used for the initial copy (``from_snapshot``) and when the relay says scn_too_old
    bootstrap: list[str] = Field(default_factory=list)
    #: without a checkpoint in the target, start with a full snapshot from the bootstrap server
    from_snapshot: bool = True
    #: tables to deliver (default: all)
    sources: list[str] | None = None
    #: server-side filter (mod:N:i or range:LO:HI)
    filter: str | None = None
    #: bearer token sent to relays and bootstrap servers
    token: str | None = None
    #: how https:// relays and bootstrap servers are verified, and the client certificate sent (mTLS)
    client_tls: ClientTLS | None = None
    #: rows per snapshot page
    snapshot_rows: int = Field(default=5_000, ge=1)
    #: seconds between restarts of the subscriber after a failure (doubled up to ``backoff_max_seconds``)
    backoff_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=30.0, gt=0)
    target: Annotated[SqlTarget | NatsTarget | LakeTarget, Field(discriminator="type")]
