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
    """Run the collector daemon: receive chunk batches over HTTP into rolling Avro sink files (or forward them)."""
    cfg = load_section(config_path, "collector", CollectorConfig)
    from .._http import run_app
    from ._app import build_app

    app = build_app(cfg)
    run_app(app, cfg.listen, limits=cfg.limits)
    if app.state.failed:
        raise FatalError(f"the collector stopped because its sink failed: {app.state.failed}")
