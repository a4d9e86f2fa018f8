"""The ``headrace agent`` command."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError
from ._config import AgentConfig


@click.command()
@common_options
def agent(config_path: str | None) -> None:
    """Run the agent daemon."""
    load_section(config_path, "agent", AgentConfig)
    raise FatalError("headrace agent is not implemented yet")
