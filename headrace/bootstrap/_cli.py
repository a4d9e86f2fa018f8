"""The ``headrace bootstrap`` command."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ._config import BootstrapConfig


@click.command()
@common_options
def bootstrap(config_path: str | None) -> None:
    """Run the bootstrap server: follow the relay into a log store, apply it into a snapshot store, serve both."""
    from ._daemon import run_bootstrap

    run_bootstrap(load_section(config_path, "bootstrap", BootstrapConfig, require=True), config_path)
