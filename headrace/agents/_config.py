"""The ``agent:`` config section."""

from __future__ import annotations

import re
import socket
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from .._access import TokenSpec, check_token_specs, insecure_listen_problem
from .._config import Listen, Section
from .._limits import HttpLimits
from .._supervise import SupervisorConfig
from .._tls import ClientTLS, ServerTLS


def _agent_tokens(value: list[TokenSpec]) -> list[TokenSpec]:
    check_token_specs(value, scopes=("read", "write", "control"))
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _plain_text(what: str, v: str, max_len: int) -> str:
    """``v`` if it is 1..max_len characters, UTF-8 encodable (no lone surrogate) and without NUL."""
    if not v:
        raise ValueError(f"{what} is empty")
    if len(v) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters")
    if "\x00" in v:
        raise ValueError(f"{what} holds a NUL character")
    try:
        v.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8 (a lone surrogate?)") from None
    return v


class SourceConfig(Section):
    """One glob of files to tail."""

    path: str = Field(description="glob; files that match later are picked up too")
    data_type: str
    name: str | None = Field(default=None, description="id for the control API; default: the path glob")
    start: Literal["beginning", "end"] = "beginning"
    multiline_start: str | None = Field(
        default=None, description="regex that starts a record (stack traces); default: one record per line"
    )
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _plain_path(cls, v: str) -> str:
        _plain_text("path", v, 4096)
        if _CONTROL.search(v):  # a glob with a newline would be an id no URL route could name
            raise ValueError("path holds a control character (use a wildcard to match such file names)")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None:
            _plain_text("name", v, 256)
            if _CONTROL.search(v):
                raise ValueError("name holds a control character")
        return v

    @field_validator("multiline_start")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            _plain_text("multiline_start", v, 4096)
            try:
                re.compile(v.encode())
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v

    @field_validator("data_type")
    @classmethod
    def _safe_data_type(cls, v: str) -> str:
        from .._names import check_component
        from ..errors import InvalidInput

        try:
            check_component("data_type", v)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from exc
        return v

    @property
    def id(self) -> str:
        return self.name or self.path


class AgentConfig(Section):
    """Settings of ``headrace agent``."""

    name: str = Field(default_factory=socket.gethostname)
    collectors: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:7070"], min_length=1)
    token: str | None = Field(default=None, description="bearer token sent to the collectors")
    tokens: Annotated[list[TokenSpec], AfterValidator(_agent_tokens)] = Field(
        default_factory=list,
        description="bearer tokens this agent accepts (strings: full access; or {token|token_file|token_env, "
        "scopes: [read, write, control]}); empty: Log API and status open, control API off",
    )
    allowed_paths: list[str] | None = Field(
        default=None,
        description="folders the control API may add sources under (symlinks resolved); "
        "default: the folders of the configured sources",
    )
    metrics_open_on_localhost: bool = Field(
        default=False, description="with tokens set, /metrics still answers loopback clients without one"
    )
    allow_insecure: bool = Field(
        default=False, description="start on a non-loopback listen address although tokens is empty"
    )
    state_dir: str = "./headrace-data/agent"
    listen: Listen = "127.0.0.1:7071"
    sources: list[SourceConfig] = Field(default_factory=list)
    spool_cap_bytes: int = Field(default=256 << 20, gt=0, description="on-disk spool cap; reading stops there")
    spool_segment_bytes: int = Field(default=16 << 20, gt=0)
    read_block_bytes: int = Field(default=1 << 20, gt=0, description="bytes per read; at most one chunk each")
    batch_bytes: int = Field(default=4 << 20, gt=0, description="bytes per request to a collector")
    max_record_bytes: int = Field(default=4 << 20, gt=0, description="a longer held record is released split")
    fingerprint_bytes: int = Field(default=1024, gt=0, description="file identity: bytes hashed from the start")
    rescan_seconds: float = Field(
        default=5.0, gt=0, description="glob and stat of every file while file events cannot be trusted"
    )
    verify_seconds: float = Field(
        default=300.0,
        gt=0,
        description="safety-net glob and stat of every file while file events work (short for NFS-like filesystems)",
    )
    rotate_wait_seconds: float = Field(default=1.0, ge=0, description="idle time before a rotated file is done")
    partial_line_seconds: float = Field(default=5.0, ge=0, description="hold an unterminated last line this long")
    deleted_release_seconds: float = Field(
        default=300.0, ge=0, description="a deleted file not read to its end (spool full) is released after this"
    )
    ship_timeout_seconds: float = Field(default=30.0, gt=0)
    unreachable_after_seconds: float = Field(
        default=60.0, gt=0, description="/healthz turns 503 when no collector has acked for this long (data waiting)"
    )
    compression: Literal["zstd", "none"] = Field(
        default="zstd",
        description="compress batches (Content-Encoding: zstd); a collector that refuses it gets identity",
    )
    compression_level: int = Field(
        default=1, ge=1, le=19, description="zstd level of batches sent to collectors (docs/collector.md: why 1)"
    )
    max_backoff_seconds: float = Field(default=5.0, gt=0)
    log_api_max_bytes: int = Field(default=4 << 20, gt=0, description="largest POST /v1/log body")
    tls: ServerTLS | None = Field(default=None, description="serve the Log and control API over HTTPS")
    client_tls: ClientTLS | None = Field(
        default=None, description="how https:// collectors are verified, and the client certificate sent (mTLS)"
    )
    limits: HttpLimits = Field(default_factory=HttpLimits, description="request-level limits (docs/configuration.md)")
    supervise: SupervisorConfig = Field(
        default_factory=SupervisorConfig, description="restarting the reader, shipper and watcher threads"
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        from .._names import check_component
        from ..errors import InvalidInput

        try:
            check_component("source", v)
        except InvalidInput as exc:
            raise ValueError(exc.detail) from exc
        return v

    def _mtls(self) -> bool:
        return bool(self.tls is not None and self.tls.require_client_cert)

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> AgentConfig:
        problem = insecure_listen_problem(
            "agent", self.listen, bool(self.tokens), self.allow_insecure, mtls=self._mtls()
        )
        if problem:
            raise ValueError(problem)
        return self
