"""The ``headrace bootstrap`` command."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError
from ._config import BootstrapConfig


@click.command()
@common_options
def bootstrap(config_path: str | None) -> None:
    """Run the bootstrap daemon."""
    load_section(config_path, "bootstrap", BootstrapConfig)
    raise FatalError("headrace bootstrap is not implemented yet")
