"""``headrace sink --config FILE``: deliver a relay's windows into a target (sql, nats, lake), exactly once."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section


@click.command()
@common_options
@click.option("--idle-exit", type=float, default=None, help="Exit 0 after this many seconds without a new event.")
@click.option(
    "--compact",
    is_flag=True,
    help="lake target: compact and vacuum the sink's Delta tables once, print the counts as JSON, exit.",
)
def sink(config_path: str | None, idle_exit: float | None, compact: bool) -> None:
    """Keep a target in step with a relay: a SQL replica, NATS JetStream or Delta Lake (the ``sink:`` section).

    The checkpoint lives in the target and is committed with the data it covers, so a crash at any
    moment neither skips nor repeats a window's effect. Failures restart the subscriber from that
    checkpoint after a backoff. Exit codes: 0 (SIGTERM or idle exit), 1 failure, 2 bad usage or
    configuration, 3 the checkpoint is older than the relay holds and no bootstrap server is configured.
    See docs/sinks.md.
    """
    from ..errors import ScnTooOld
    from ._config import SinkConfig
    from ._loop import run_sink

    if compact:
        import json

        from ._lake_compact import compact_sink

        click.echo(json.dumps(compact_sink(config_path)))
        return
    cfg = load_section(config_path, "sink", SinkConfig, require=True)
    try:
        run_sink(cfg, idle_exit=idle_exit)
    except ScnTooOld as exc:
        click.echo(f"headrace: {exc}", err=True)
        raise SystemExit(3) from exc
