"""The ``headrace relay`` and ``headrace subscribe`` commands."""

from __future__ import annotations

import click

from .._cli import common_options
from .._config import load_section
from ._config import RelayConfig


@click.group(invoke_without_command=True)
@common_options
@click.pass_context
def relay(ctx: click.Context, config_path: str | None) -> None:
    """Run the relay daemon; ``headrace relay uninstall`` removes what it installed in the source."""
    if ctx.invoked_subcommand is not None:
        return
    from ._daemon import run_relay

    run_relay(load_section(config_path, "relay", RelayConfig, require=True), config_path)


@relay.command("uninstall")
@common_options
def uninstall(config_path: str | None) -> None:
    """Remove the change-log table and triggers (SQLite) or the slot and publication (PostgreSQL).

    Changes not yet read by a relay are lost.
    """
    from ._daemon import uninstall_relay

    uninstall_relay(load_section(config_path, "relay", RelayConfig, require=True, command="relay uninstall"))
    click.echo("uninstalled")


@click.command()
@common_options
@click.option("--relay", "relays", multiple=True, required=True, help="Relay URL; repeat for failover.")
@click.option("--sources", default=None, help="Comma-separated tables (default: all).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="Checkpoint file (resume from it).")
@click.option("--filter", "filter_", default=None, help="Server-side filter: mod:N:i or range:LO:HI.")
@click.option("--idle-exit", type=float, default=None, help="Exit 0 after this many seconds without a new event.")
@click.option("--token", default=None, envvar="HEADRACE_TOKEN", help="Bearer token (or HEADRACE_TOKEN).")
@click.option(
    "--bootstrap",
    "bootstrap_urls",
    multiple=True,
    help="Bootstrap server URL (repeat for failover): used when the relay says scn_too_old.",
)
@click.option(
    "--from-snapshot", is_flag=True, help="Without a checkpoint, start with a snapshot from the bootstrap server."
)
def subscribe(
    config_path: str | None,
    relays: tuple[str, ...],
    sources: str | None,
    checkpoint: str | None,
    filter_: str | None,
    idle_exit: float | None,
    token: str | None,
    bootstrap_urls: tuple[str, ...],
    from_snapshot: bool,
) -> None:
    """Print the changes of a relay as JSON lines (one object per event).

    Keys: scn, table, op (c/u/d/r), key, before, after, ts_ms, window_end. A window's lines are
    written with one write; the checkpoint is saved after it, so a restart replays whole windows.
    Exit codes: 0 (idle exit or SIGTERM), 1 failure, 2 bad usage, 3 the checkpoint is older than
    the relay holds (scn_too_old: bootstrap or start over), 4 idle exit while the relay's capture is
    stopped (the reason is on stderr).
    """
    from ..errors import ScnTooOld
    from .client._cli import run_subscribe

    try:
        run_subscribe(
            relays=list(relays),
            sources=[s for s in (sources or "").split(",") if s] or None,
            checkpoint=checkpoint,
            filter=filter_,
            idle_exit=idle_exit,
            token=token,
            bootstrap=list(bootstrap_urls),
            from_snapshot=from_snapshot,
        )
    except ScnTooOld as exc:
        click.echo(f"headrace: {exc}", err=True)
        raise SystemExit(3) from exc
