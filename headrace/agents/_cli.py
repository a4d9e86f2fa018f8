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
    cfg = load_section(config_path, "agent", AgentConfig, require=True)
    from .._http import bind_listen, run_app
    from .._reload import on_reload
    from ._agent import lock_state_dir
    from ._app import make_app

    sock = bind_listen(cfg.listen, "agent.listen")  # before the state folder is created or locked
    lock = lock_state_dir(cfg.state_dir)  # held until the process exits
    try:
        app = make_app(cfg)
        # SIGHUP: tokens, allowed_paths and the token sent to collectors are re-read from the file.
        on_reload("tokens", lambda: app.state.reload(load_section(config_path, "agent", AgentConfig)))
        run_app(
            app, cfg.listen, graceful_seconds=30.0, tls=cfg.tls, limits=cfg.limits, listen_key="agent.listen", sock=sock
        )
    finally:
        os.close(lock)
