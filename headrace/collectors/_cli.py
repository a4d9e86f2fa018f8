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
    cfg = load_section(config_path, "collector", CollectorConfig, require=True)
    from .._http import bind_listen, run_app
    from .._reload import on_reload
    from ._app import build_app

    sock = bind_listen(cfg.listen, "collector.listen")  # before recovery touches the sink
    app = build_app(cfg)

    def reload_tokens() -> None:
        """SIGHUP: the section's tokens (and the token sent upstream) take effect for the next request."""
        new = load_section(config_path, "collector", CollectorConfig)
        app.state.access.update(new.tokens, metrics_open_on_localhost=new.metrics_open_on_localhost)
        shipper = getattr(app.state.store, "shipper", None)
        if shipper is not None:
            shipper.set_token(new.upstream_token)

    on_reload("tokens", reload_tokens)
    run_app(app, cfg.listen, tls=cfg.tls, limits=cfg.limits, listen_key="collector.listen", sock=sock)
    if app.state.failed:
        raise FatalError(f"the collector stopped because its sink failed: {app.state.failed}")
