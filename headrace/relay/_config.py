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
