"""``headrace sink --config FILE``: deliver a relay's windows into a target (sql, nats), exactly once."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section


@click.command()
@common_options
@click.option("--idle-exit", type=float, default=None, help="Exit 0 after this many seconds without a new event.")
def sink(config_path: str | None, idle_exit: float | None) -> None:
    """Keep a target in step with a relay: a SQL replica or a NATS JetStream stream (the ``sink:`` section).

    The checkpoint lives in the target and is committed with the data it covers, so a crash at any
    moment neither skips nor repeats a window's effect. Failures restart the subscriber from that
    checkpoint after a backoff. Exit codes: 0 (SIGTERM or idle exit), 1 failure, 2 bad usage or
    configuration, 3 the checkpoint is older than the relay holds and no bootstrap server is configured.
    See docs/sinks.md.
    """
    from ..errors import ScnTooOld
    from ._config import SinkConfig
    from ._loop import run_sink

    cfg = load_section(config_path, "sink", SinkConfig, require=True)
    try:
        run_sink(cfg, idle_exit=idle_exit)
    except ScnTooOld as exc:
        click.echo(f"headrace: {exc}", err=True)
        raise SystemExit(3) from exc
