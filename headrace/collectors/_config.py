"""The ``collector:``, ``archive:``, ``demux:`` and ``load:`` config sections."""

from __future__ import annotations

from pydantic import Field

from .._config import Listen, Section


class CollectorConfig(Section):
    """Settings of ``headrace collector``."""

    listen: Listen = "127.0.0.1:7070"
    sink_dir: str = "./headrace-data/sink"
    roll_bytes: int = Field(default=64 << 20, gt=0)
    roll_seconds: float = Field(default=300.0, gt=0)
    tokens: list[str] = Field(default_factory=list)
