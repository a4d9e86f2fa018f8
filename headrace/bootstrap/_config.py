"""The ``bootstrap:`` config section."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from .._access import TokenSpec, check_token_specs, insecure_listen_problem
from .._config import Listen, Section
from .._limits import HttpLimits
from .._supervise import SupervisorConfig
from .._tls import ClientTLS, ServerTLS


def _read_tokens(value: list[TokenSpec]) -> list[TokenSpec]:
    check_token_specs(value, scopes=("read",))
    return value


class BootstrapConfig(Section):
    """Settings of ``headrace bootstrap``."""

    listen: Listen = "127.0.0.1:7090"
    relays: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:7080"], min_length=1)
    #: SQLAlchemy URL of the database holding the log store and the snapshot store
    store: str = "sqlite:///./headrace-data/bootstrap.db"
    #: tables to keep (default: every table the relay serves)
    sources: list[str] | None = None
    #: bearer tokens (strings, or {token|token_file|token_env, scopes: [read], name?}); empty: no auth
    tokens: Annotated[list[TokenSpec], AfterValidator(_read_tokens)] = Field(default_factory=list)
    #: with tokens set, /metrics still answers loopback clients without a token
    metrics_open_on_localhost: bool = False
    #: start on a non-loopback listen address although tokens is empty
    allow_insecure: bool = False
    limits: HttpLimits = Field(default_factory=HttpLimits, description="request-level limits (docs/configuration.md)")
    #: bearer token sent to the relays
    relay_token: str | None = None
    #: serve HTTPS with this certificate (optionally demanding client certificates: mTLS)
    tls: ServerTLS | None = None
    #: how https:// relays are verified, and the client certificate sent to them (mTLS)
    client_tls: ClientTLS | None = None
    #: name under which the applied SCN is acknowledged to the relays (list it in relay.durable_consumers)
    consumer: str = "bootstrap"
    #: the source database to seed the snapshot from (SQLAlchemy URL; usually the relay's ``source``).
    #: None: no seeding — the change log must reach back to the tables' creation.
    seed: str | None = None
    #: rows per seeding page (one read transaction and one store transaction each)
    seed_page_rows: int = Field(default=5_000, ge=1)
    #: PostgreSQL seeding: the relay's replication slot (``relay.postgres.slot``); seeding waits for it and
    #: takes its snapshot from a temporary slot named ``<seed_slot>_seed``, dropped when done
    seed_slot: str = Field(default="headrace", pattern=r"^[a-z0-9_]{1,63}$")
    #: PostgreSQL seeding: the relay's publication (``relay.postgres.publication``): the tables it publishes
    seed_publication: str = Field(default="headrace", pattern=r"^[A-Za-z0-9_]{1,63}$")
    #: windows merged per apply transaction
    apply_batch_windows: int = Field(default=2_000, ge=1)
    #: run the applier inside the server (turn off when an Airflow DAG applies instead)
    apply_in_server: bool = True
    #: seconds between applier passes when idle
    apply_interval_seconds: float = Field(default=0.2, gt=0)
    #: log windows applied to the snapshot are kept this long (by commit time) for catch-up, then compacted
    retention_seconds: float = Field(default=3_600.0, ge=0)
    #: a bootstrap session not seen for this long no longer holds back compaction
    session_timeout_seconds: float = Field(default=600.0, gt=0)
    #: seconds between compactions
    compact_interval_seconds: float = Field(default=30.0, gt=0)
    #: largest fetch from the relay, and largest catch-up response served
    max_bytes: int = Field(default=4 << 20, gt=0)
    #: rows per snapshot response at most
    max_snapshot_rows: int = Field(default=10_000, ge=1)
    #: restarting the seeder, follower and applier threads when one dies (see ``headrace._supervise``)
    supervise: SupervisorConfig = Field(default_factory=SupervisorConfig)

    def _mtls(self) -> bool:
        return bool(self.tls is not None and self.tls.require_client_cert)

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> BootstrapConfig:
        problem = insecure_listen_problem(
            "bootstrap", self.listen, bool(self.tokens), self.allow_insecure, mtls=self._mtls()
        )
        if problem:
            raise ValueError(problem)
        return self
