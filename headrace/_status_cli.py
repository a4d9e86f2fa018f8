"""``headrace status``: every daemon of a config, its health and key figures, in the terminal.

For each daemon section of ``--config`` (collector, agent, relay, bootstrap; without ``--config``
the addresses of ``headrace up``'s embedded defaults) it asks ``/healthz`` and ``/v1/status`` (with
the section's own ``read`` token when it has tokens) and prints a table; ``--watch`` redraws it
every ``--interval`` seconds until Ctrl-C; ``--json`` prints one JSON document instead.

Each batch job section (archive, demux, load, export) adds a row for the job's last run, from its
run record (:mod:`headrace.batch._runrecord`): when it finished, files, records, errors and error
rate, top error reasons; a failed run or one above the job's error-rate threshold is unhealthy.

Exit status: 0 when every part answers and is healthy; 1 when any is unhealthy or unreachable (or a
batch job's last run failed); 2 a configuration problem.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from ._cli import common_options
from ._overview import DAEMONS, Target, batch_runs, overview, problems, targets, url_of

__all__ = ["render_table", "status"]


def _fmt_bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "–"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return str(n)


def _summary(name: str, f: Mapping[str, Any]) -> str:
    """One line of key figures for the table (:func:`headrace._overview.figures` names)."""
    if not f:
        return ""
    if name == "collector":
        return (f"in {_fmt_bytes(f['bytes_in'])} / {f['chunks_in']} chunks, dup {f['duplicates']}, "
                f"rejects {f['rejects']}, sink files {f['sink_files']}")  # fmt: skip
    if name == "agent":
        return (f"{f['streams']} streams, lag {_fmt_bytes(f['lag_bytes'])}, spool {_fmt_bytes(f['spool_bytes'])}"
                f"/{_fmt_bytes(f['spool_cap_bytes'])}, last ack from {f['last_ack_from'] or 'never'}")  # fmt: skip
    if name == "relay":
        return (f"SCN {f['oldest_scn']}..{f['newest_scn']}, fill {100 * f['fill']:.1f} %, "
                f"{f['events_per_s']:g} events/s, capture {f['capture']}, {f['subscribers']} subscribers "
                f"(max lag {f['max_subscriber_lag']})")  # fmt: skip
    if name == "bootstrap":
        seeding = ""
        if f["seeding"]:
            of = f" of ~{f['seed_estimated_rows']:,}" if f.get("seed_estimated_rows") else ""
            rows = (
                f" {f['seed_rows']:,}{of} rows ({f.get('seed_rows_per_s') or 0:,.0f}/s)" if f.get("seed_rows") else ""
            )
            seeding = f", seeding{rows}"
        ready = "ready" if f["snapshot_ready"] else "not ready"
        return (f"applied SCN {f['applied_scn']} (log {f['log_scn']}), {f['unapplied_events']} unapplied, "
                f"snapshot {ready}{seeding}, re-seeds {f['reseeds']}")  # fmt: skip
    if name in ("archive", "demux", "load", "export"):
        if f.get("never_ran"):
            return "never ran (no run record yet)"
        reasons = ", ".join(f"{r!r} ×{c}" for r, c in list((f.get("top_reasons") or {}).items())[:3])
        out = (f"last run {f['finished_at']} ({f['seconds']:.1f} s), exit {f['exit_code']}: {f['files']} files, "
               f"{f['records']} records, {f['errors']} errors ({100 * f['error_rate']:.1f} %)")  # fmt: skip
        return out + (f"; top reasons: {reasons}" if reasons else "") + (f"; {f['idle']}" if f.get("idle") else "")
    return ""


def render_table(parts: list[dict[str, Any]]) -> Any:
    """A rich table of :func:`headrace._overview.overview` results: unhealthy parts first."""
    from rich.markup import escape
    from rich.table import Table

    bad = problems(parts)
    title = "headrace: all parts healthy" if not bad else f"headrace: {len(bad)} part(s) NOT healthy"
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("part", "address", "health", "figures"):
        table.add_column(col, overflow="fold")
    order = sorted(parts, key=lambda p: (p["ok"], p["reachable"]))
    for p in order:
        degraded = (p.get("health") or {}).get("degraded")
        if p["ok"]:
            health = "[green]ok[/]" + (f"\n[yellow]degraded: {escape(str(degraded))}[/]" if degraded else "")
        elif not p["reachable"]:
            health = f"[bold red]UNREACHABLE[/]\n{escape(p.get('error') or '')}"
        else:
            health = f"[bold red]FAILED[/]\n{escape(p.get('error') or '')}"
        table.add_row(p["name"], p["url"], health, escape(_summary(p["name"], p.get("figures") or {})))
    return table


def _targets(config_path: str | None) -> tuple[list[Target], dict[str, Any]]:
    """The daemons to ask and the validated sections of ``config_path`` (batch jobs' run records)."""
    if config_path is None:
        from ._up import DEFAULT_LISTEN, PARTS

        return [Target(name, url_of(DEFAULT_LISTEN[name])) for name in PARTS], {}
    from ._check import check_config

    findings, models = check_config(config_path)
    bad = [f for f in findings if not f.ok]
    for f in bad:
        click.echo(f"headrace status: {f.where}: {f.detail}", err=True)
    if bad:
        raise SystemExit(2)
    found = targets(models)
    if not found and not any(job in models for job in BATCH_JOBS):
        names = ", ".join((*DAEMONS, *BATCH_JOBS))
        click.echo(f"headrace status: {config_path} has no daemon or batch job section ({names})", err=True)
        raise SystemExit(2)
    return found, models


BATCH_JOBS = ("archive", "demux", "load", "export")


def _parts(ts: list[Target], models: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    return overview(ts, timeout) + batch_runs(models)


@click.command()
@common_options
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts) instead of a table.")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=1.0, show_default=True, help="--watch period.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True, help="Per request.")
def status(config_path: str | None, watch: bool, as_json: bool, interval: float, timeout: float) -> None:
    """Health and key figures of every daemon in the config (default: `headrace up`'s addresses), and
    the last run of each batch job in it (archive, demux, load, export).

    Exit status 0 when all are healthy, 1 when any is unhealthy or unreachable or a batch job's last
    run failed (or had too many errors), 2 for a config problem.
    """
    ts, models = _targets(config_path)
    if as_json:  # one document; with --watch, one line per round (JSON Lines)
        while True:
            parts = _parts(ts, models, timeout)
            bad = problems(parts)
            doc = {"ok": not bad, "problems": bad, "parts": parts}
            click.echo(json.dumps(doc, default=str, indent=None if watch else 2))
            if not watch:
                raise SystemExit(1 if bad else 0)
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                raise SystemExit(1 if bad else 0) from None
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)  # piped: no wrapping at 80 columns
    parts = _parts(ts, models, timeout)
    if not watch:
        console.print(render_table(parts))
        raise SystemExit(1 if problems(parts) else 0)
    from rich.live import Live

    try:
        with Live(render_table(parts), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                parts = _parts(ts, models, timeout)
                live.update(render_table(parts), refresh=True)
    except KeyboardInterrupt:
        pass
    sys.exit(1 if problems(parts) else 0)
