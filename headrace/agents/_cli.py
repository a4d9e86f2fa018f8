"""The ``headrace agent`` command."""

from __future__ import annotations

import os

import click

from .._cli import common_options
from .._config import load_section
from ._config import AgentConfig


@click.command()
@common_options
def agent(config_path: str | None) -> None:
    """Run the agent daemon: tail the configured files and ship them to collectors."""
    cfg = load_section(config_path, "agent", AgentConfig)
    from .._http import run_app
    from ._agent import lock_state_dir
    from ._app import make_app

    lock = lock_state_dir(cfg.state_dir)  # held until the process exits
    try:
        run_app(make_app(cfg), cfg.listen, graceful_seconds=30.0, limits=cfg.limits)
    finally:
        os.close(lock)
