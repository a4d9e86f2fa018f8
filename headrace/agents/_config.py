"""The ``agent:`` config section."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field

from .._config import Listen, Section


class SourceConfig(Section):
    """One glob of files to tail."""

    path: str = Field(description="glob; files that match later are picked up too")
    data_type: str
    start: Literal["beginning", "end"] = "beginning"
    multiline_start: str | None = Field(
        default=None, description="regex that starts a record (stack traces); default: one record per line"
    )
    tags: dict[str, str] = Field(default_factory=dict)


class AgentConfig(Section):
    """Settings of ``headrace agent``."""

    name: str = Field(default_factory=socket.gethostname)
    collectors: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:7070"], min_length=1)
    token: str | None = None
    state_dir: str = "./headrace-data/agent"
    listen: Listen = "127.0.0.1:7071"
    sources: list[SourceConfig] = Field(default_factory=list)
