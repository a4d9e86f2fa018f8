"""The ``headrace collector`` command."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError
from ._config import CollectorConfig


@click.command()
@common_options
def collector(config_path: str | None) -> None:
    """Run the collector daemon."""
    load_section(config_path, "collector", CollectorConfig)
    raise FatalError("headrace collector is not implemented yet")
