"""The ``collector:`` config section (``archive:``, ``demux:`` and ``load:`` are added by their parts)."""

from __future__ import annotations

import socket
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from .._access import TokenSpec, check_token_specs, insecure_listen_problem
from .._block_codecs import Codec
from .._config import Listen, Section, parse_listen
from .._limits import HttpLimits
from .._names import check_component
from .._supervise import SupervisorConfig
from .._tls import ClientTLS, ServerTLS
from ..errors import InvalidInput

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _check_name(value: str) -> str:
    try:
        return check_component("name", value)
    except InvalidInput as exc:
        raise ValueError(exc.detail) from None


def _check_urls(value: list[str]) -> list[str]:
    for url in value:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL of a collector")
    return value


def _check_tokens(value: list[TokenSpec]) -> list[TokenSpec]:
    check_token_specs(value, scopes=("read", "write"), sources_allowed=True)
    return value


def _default_name() -> str:
    host = socket.gethostname().split(".")[0]
    try:
        return check_component("name", host)
    except InvalidInput:
        return "collector"


class CollectorConfig(Section):
    """Settings of ``headrace collector``."""

    listen: Listen = "127.0.0.1:7070"
    name: Annotated[str, AfterValidator(_check_name)] = Field(
        default_factory=_default_name, description="part of every sink file name; default: the host name"
    )
    sink_dir: str = "./headrace-data/sink"
    roll_bytes: int = Field(default=64 << 20, gt=0)
    roll_seconds: float = Field(default=300.0, gt=0)
    codec: Annotated[Codec, BeforeValidator(lambda v: "null" if v is None else v)] = Field(
        default="null", description="Avro block codec of sink files (YAML null means the null codec)"
    )
    tokens: Annotated[list[TokenSpec], AfterValidator(_check_tokens)] = Field(
        default_factory=list,
        description="bearer tokens (strings: full access; or {token|token_file|token_env, scopes, sources?}); "
        "empty: no auth",
    )
    metrics_open_on_localhost: bool = Field(
        default=False, description="with tokens set, /metrics still answers loopback clients without one"
    )
    allow_insecure: bool = Field(
        default=False, description="start on a non-loopback listen address although tokens is empty"
    )
    dedupe_forget_days: float = Field(
        default=30.0, gt=0, description="the dedupe index forgets streams that got no new bytes for this long"
    )
    max_body_bytes: int = Field(default=64 << 20, gt=0, description="larger request bodies get 413")
    max_chunk_bytes: int = Field(default=16 << 20, gt=0, description="larger chunks are refused (413)")
    max_inflight_bytes: int = Field(
        default=512 << 20, gt=0, description="request bytes held at once; past it new requests get 503 and retry"
    )
    upstream: Annotated[list[str], AfterValidator(_check_urls)] = Field(
        default_factory=list,
        description="upstream collector URLs; non-empty: forward chunks there instead of writing sink files",
    )
    upstream_token: str | None = Field(default=None, description="bearer token sent upstream")
    upstream_timeout: float = Field(default=30.0, gt=0, description="seconds per upstream request")
    upstream_max_backoff: float = Field(
        default=5.0, gt=0, description="longest wait between rounds of upstream retries (backoff is exponential)"
    )
    upstream_compression: Literal["zstd", "none"] = Field(
        default="zstd",
        description="compress batches sent upstream (Content-Encoding: zstd); one that refuses it gets identity",
    )
    upstream_compression_level: int = Field(
        default=1, ge=1, le=19, description="zstd level of upstream batches (docs/collector.md: why 1)"
    )
    accept_compression: bool = Field(
        default=True,
        description="read zstd request bodies; false: ignore Content-Encoding as collectors before 0.1 did (400)",
    )
    spool_dir: str | None = Field(default=None, description="forwarding spool; default: <sink_dir>/forward-spool")
    spool_cap_bytes: int = Field(default=1 << 30, gt=0, description="forwarding spool cap; past it 503 spool_full")
    tls: ServerTLS | None = Field(default=None, description="serve HTTPS with this certificate (optionally mTLS)")
    client_tls: ClientTLS | None = Field(
        default=None, description="how https:// upstream collectors are verified, and the client certificate sent"
    )
    limits: HttpLimits = Field(default_factory=HttpLimits, description="request-level limits (docs/configuration.md)")
    torn_max_bytes: int = Field(
        default=64 << 20, ge=0, description="torn tails kept in <sink_dir>/torn/ at most; the oldest go first"
    )
    supervise: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="restarting the forwarding pump thread"
    )

    @model_validator(mode="after")
    def _not_forwarding_to_itself(self) -> CollectorConfig:
        host, port = parse_listen(self.listen)
        own = {host} | (_LOOPBACK if host in _LOOPBACK | {"0.0.0.0", "::"} else set())
        for url in self.upstream:
            u = urlsplit(url)
            if u.port == port and u.hostname in own:
                raise ValueError(f"upstream {url} is this collector's own listen address; chunks would loop")
        return self

    def _mtls(self) -> bool:
        return bool(self.tls is not None and self.tls.require_client_cert)

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> CollectorConfig:
        problem = insecure_listen_problem(
            "collector", self.listen, bool(self.tokens), self.allow_insecure, mtls=self._mtls()
        )
        if problem:
            raise ValueError(problem)
        return self
