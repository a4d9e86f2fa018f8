"""The ``bootstrap:`` config section."""

from __future__ import annotations

from pydantic import Field

from .._config import Listen, Section


class BootstrapConfig(Section):
    """Settings of ``headrace bootstrap``."""

    listen: Listen = "127.0.0.1:7090"
    relays: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:7080"], min_length=1)
    store: str = "sqlite:///./headrace-data/bootstrap.db"
    sources: list[str] | None = None
    tokens: list[str] = Field(default_factory=list)
