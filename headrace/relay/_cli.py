"""The ``headrace relay`` and ``headrace subscribe`` commands."""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import click

from .._cli import common_options
from .._config import load_section
from ._config import RelayConfig, SubscriberConfig

if TYPE_CHECKING:
    from .._tls import ClientTLS


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
@click.option("--relay", "relays", multiple=True, help="Relay URL; repeat for failover (or --from-jetstream).")
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
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM CA bundle that https:// relays and bootstrap servers are verified with (subscriber.client_tls.ca).",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM client certificate presented to servers that require one (mTLS; subscriber.client_tls.cert).",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    default=None,
    help="PEM private key of --cert (subscriber.client_tls.key).",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(0.05, 3600),
    default=5.0,
    show_default=True,
    help="Seconds between snapshot_progress log lines while reading a snapshot (stderr not a terminal).",
)
@click.option(
    "--from-jetstream",
    "jetstream",
    multiple=True,
    metavar="NATS_URL",
    help="Read the stream a `headrace sink` nats target fills instead of a relay (repeat for NATS servers).",
)
@click.option("--stream", default="HEADRACE", show_default=True, help="With --from-jetstream: the JetStream stream.")
@click.option(
    "--subject-prefix", default="headrace", show_default=True, help="With --from-jetstream: the sink's subject prefix."
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
    ca: str | None,
    cert: str | None,
    key: str | None,
    progress_every: float,
    jetstream: tuple[str, ...],
    stream: str,
    subject_prefix: str,
) -> None:
    """Print the changes of a relay as JSON lines (one object per event).

    Keys: scn, table, op (c/u/d/r), key, before, after, ts_ms, window_end. A window's lines are
    written with one write; the checkpoint is saved after it, so a restart replays whole windows.
    Exit codes: 0 (idle exit or SIGTERM), 1 failure, 2 bad usage, 3 the checkpoint is older than
    the relay holds (scn_too_old: bootstrap or start over), 4 idle exit while the relay's capture is
    stopped (the reason is on stderr); an idle exit while no relay answers (down, unreachable, a
    failed TLS handshake) exits 1 (the reason and URL are on stderr).

    https:// URLs are verified with --ca (else SSL_CERT_FILE or certifi's bundle); --cert/--key present a
    client certificate. The same keys can be set in the config file's ``subscriber.client_tls``
    (the flags override them one by one).

    While it reads a bootstrap snapshot it shows rows read and the snapshot's SCN on stderr: a progress
    line on a terminal, else a snapshot_progress log line every --progress-every seconds.

    --from-jetstream NATS_URL reads the JetStream stream a ``headrace sink`` nats target fills instead
    of a relay: the same lines, whole windows, resumed from --checkpoint by stream sequence (or by SCN
    from a relay subscriber's checkpoint); see docs/sinks.md.
    """
    from ..errors import ScnTooOld
    from .client._cli import run_subscribe

    if jetstream:
        if relays or filter_ or bootstrap_urls or from_snapshot:
            raise click.UsageError(
                "--from-jetstream reads no relay: drop --relay, --filter, --bootstrap, --from-snapshot"
            )
        from .client._jetstream import run_subscribe_jetstream

        srcs = [s for s in (sources or "").split(",") if s] or None
        run_subscribe_jetstream(list(jetstream), stream, subject_prefix, srcs, checkpoint, idle_exit)
        return
    if not relays:
        raise click.UsageError("give --relay URL (or --from-jetstream NATS_URL)")

    for option, urls in (("--relay", relays), ("--bootstrap", bootstrap_urls)):
        for url in urls:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                hint = f"{url!r} is not an http:// or https:// URL (e.g. http://{url})"
                raise click.BadParameter(hint, param_hint=option)
    cfg = load_section(config_path, "subscriber", SubscriberConfig)
    tls = subscriber_tls(cfg, ca=ca, cert=cert, key=key)

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
            tls=tls,
            progress_every=progress_every,
        )
    except ScnTooOld as exc:
        click.echo(f"headrace: {exc}", err=True)
        raise SystemExit(3) from exc


def subscriber_tls(cfg: SubscriberConfig, **flags: str | None) -> ClientTLS | None:
    """``subscriber.client_tls`` with each given flag (``ca``, ``cert``, ``key``) overriding its key."""
    from pydantic import ValidationError

    from .._config import _format_errors
    from .._tls import ClientTLS
    from ..errors import ConfigError

    given = {k: v for k, v in flags.items() if v is not None}
    if cfg.client_tls is None and not given:
        return None
    merged = {**(cfg.client_tls.model_dump() if cfg.client_tls else {}), **given}
    try:
        return ClientTLS.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_errors("subscriber.client_tls", exc), "--ca/--cert/--key") from exc
