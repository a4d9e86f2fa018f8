"""The ``headrace relay`` and ``headrace subscribe`` commands."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ..errors import FatalError
from ._config import RelayConfig


@click.group(invoke_without_command=True)
@common_options
@click.pass_context
def relay(ctx: click.Context, config_path: str | None) -> None:
    """Run the relay daemon; ``headrace relay uninstall`` removes what it installed in the source."""
    if ctx.invoked_subcommand is not None:
        return
    load_section(config_path, "relay", RelayConfig)
    raise FatalError("headrace relay is not implemented yet")


@relay.command("uninstall")
@common_options
def uninstall(config_path: str | None) -> None:
    """Remove the change-log table and triggers (SQLite) or the slot and publication (PostgreSQL)."""
    load_section(config_path, "relay", RelayConfig)
    raise FatalError("headrace relay uninstall is not implemented yet")


@click.command()
@common_options
def subscribe(config_path: str | None) -> None:
    """Print the changes of a relay as JSON lines."""
    raise FatalError("headrace subscribe is not implemented yet")
