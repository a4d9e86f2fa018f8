"""``headrace demo``: the command, running both paths end to end and printing one reconciliation table."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table

from .. import _logging
from ..errors import FatalError, HeadraceError
from ._changes import ChangeCounts, create_shop, export, follow, late_subscriber, write_transactions
from ._loglines import KINDS
from ._logpath import QUERY, LogCounts, avro_lines, process, ship
from ._procs import Proc
from ._reconcile import Check, reconcile

__all__ = ["demo"]

CUSTOMERS_BEFORE = 200  # rows in the shop database before the relay starts: only a snapshot has them


def _console() -> Console:
    """stdout; when it is not a terminal, wide and without wrapping (a file or a pipe gets whole lines)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=160, soft_wrap=True)


def _url(config: dict[str, Any], part: str) -> str:
    return f"http://{config[part]['listen']}"


def _run(base: Path, config: dict[str, Any], cfg: Path, lines: int, transactions: int, console: Console) -> tuple[
    LogCounts, ChangeCounts, list[str]
]:  # fmt: skip
    logs, changes, failures = LogCounts(), ChangeCounts(), []
    db = base / "shop.db"
    create_shop(db, CUSTOMERS_BEFORE)
    procs: dict[str, Proc] = {}
    try:
        for part in ("collector", "relay", "agent", "bootstrap"):  # agent and bootstrap retry until the others answer
            procs[part] = Proc(part, [part, "--config", str(cfg)], base)
        for part, proc in procs.items():
            proc.wait_http(_url(config, part) + "/healthz")
        console.print("daemons running: " + ", ".join(f"{p} {_url(config, p)}" for p in ("collector", "agent")))
        console.print("                 " + ", ".join(f"{p} {_url(config, p)}" for p in ("relay", "bootstrap")))
        ship(base / "logs", int(config["agent"]["listen"].rsplit(":", 1)[1]), lines, logs)
        console.print(f"log path: {lines} lines written to logs/, every byte acked by the collector")
        write_transactions(db, CUSTOMERS_BEFORE, transactions, changes)
        follow(_url(config, "relay"), changes)
        console.print(f"change path: {transactions} transactions committed to shop.db, followed by a subscriber")
        for part in ("agent", "collector"):  # the collector closes its sink file when it stops
            procs.pop(part).stop()
        logs.shipped = avro_lines(sorted((base / "sink" / "done").glob("*.avro")))
        late_subscriber(base, _url(config, "relay"), _url(config, "bootstrap"), db, changes)
        console.print(
            f"late subscriber: {sum(changes.snapshot_rows.values())} rows from the bootstrap snapshot "
            "(late-subscriber.jsonl)"
        )
    finally:
        for part in ("agent", "collector", "bootstrap", "relay"):
            if part in procs:
                procs.pop(part).stop()
    process(config, base, logs)
    for line in logs.summaries:
        console.print(line, markup=False, highlight=False)
    failures += logs.failures
    failures += export(db, base / "exports", changes)
    return logs, changes, failures


def _print_report(console: Console, base: Path, logs: LogCounts, changes: ChangeCounts, checks: list[Check]) -> None:
    if logs.query:
        console.print(f"loaded into {base / 'logs.db'}:")
        query = Table(title=QUERY, title_justify="left")
        query.add_column("status", justify="right")
        query.add_column("requests", justify="right")
        for status, n in logs.query:
            query.add_row(str(status), str(n))
        console.print(query)
    if changes.sample:
        sample = changes.sample if len(changes.sample) <= 120 else changes.sample[:119] + "…"
        console.print("a change event as `headrace subscribe` prints it:")
        console.print(f"  → {sample}", markup=False, highlight=False)
    table = Table(title="reconciliation", title_justify="left")
    table.add_column("check")
    table.add_column("expected", justify="right")
    table.add_column("found", justify="right")
    table.add_column("", justify="center")
    for c in checks:
        table.add_row(c.what, str(c.expected), str(c.found), "ok" if c.ok else "[red]MISMATCH[/]")
    console.print(table)


def _keep(base: Path, cfg: Path, config: dict[str, Any], console: Console) -> None:
    """Leave the daemons running under ``headrace up --config``, detached; print where and how to stop."""
    up = Proc("up", ["up", "--config", str(cfg)], base, detach=True)
    parts = ("collector", "agent", "relay", "bootstrap")
    try:
        for part in parts:
            up.wait_http(_url(config, part) + "/healthz")
    except FatalError:
        up.stop()
        raise
    console.print(f"headrace up is running (pid {up.proc.pid}): headrace up --config {cfg}")
    console.print(f"its log: {up.log}; its daemons:")
    for part in parts:
        console.print(f"  {part:<10} {_url(config, part)}  ({_url(config, part)}/v1/status)")
    files = ", ".join(f"logs/{file}" for file, _ in KINDS.values())
    console.print(f"append lines to {files} or write to shop.db (in {base}) and watch them flow")
    console.print(f"stop everything with: kill {up.proc.pid}")


def conclude(console: Console, base: Path, logs: LogCounts, changes: ChangeCounts, failures: list[str]) -> int:
    """Print the query, a sample event and the reconciliation table; 0 when every count matches and no
    job failed, else 1 after naming each mismatch and failure (on stdout, and a count on stderr)."""
    checks = reconcile(logs, changes)
    _print_report(console, base, logs, changes, checks)
    problems = failures + [f"mismatch: {c.mismatch()}" for c in checks if not c.ok]
    if problems:
        for p in problems:
            console.print(p, markup=False, highlight=False)
        click.echo(f"headrace demo: {len(problems)} problems (above); files and logs are in {base}", err=True)
        return 1
    console.print(f"all {len(checks)} counts match: every line arrived once and was archived, parsed and loaded;")
    console.print("every committed change reached the subscriber; the snapshot copy equals the database")
    console.print(f"files, configs and daemon logs are in {base}")
    return 0


@click.command()
@click.option("--lines", default=6000, show_default=True, help="How many log lines to generate.")
@click.option("--transactions", default=300, show_default=True, help="How many transactions to commit.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to run (default: a new temporary directory, kept afterwards).",
)
@click.option("--keep", is_flag=True, help="Afterwards, leave the daemons running under `headrace up`.")
def demo(lines: int, transactions: int, directory: str | None, keep: bool) -> None:
    """Run both paths end to end on embedded defaults and reconcile every count.

    Logs → agent → collector → archive → demux → load (and a SQL query over the loaded table);
    SQLite → relay → a subscriber, and a bootstrap server → a late subscriber from a snapshot; an
    export to Parquet. Exit status 0 when every count matches, 1 (naming each mismatch) when not.
    """
    _logging.configure("warning", "auto")  # headrace's own log lines: stderr only
    console = _console()
    base = Path(directory).absolute() if directory else Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    if base.is_dir() and any(base.iterdir()):
        raise click.UsageError(f"--dir {base} is not empty; the demo needs a new or empty folder")
    base.mkdir(parents=True, exist_ok=True)
    from ._setup import demo_config

    config = demo_config(base)
    cfg = base / "headrace.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    console.print(f"headrace demo in {base}")
    console.print(f"  config {cfg.name}, daemon logs *.log there")
    try:
        logs, changes, failures = _run(base, config, cfg, lines, transactions, console)
    except HeadraceError as exc:
        click.echo(f"headrace demo: failed: {exc}", err=True)
        sys.exit(1)
    if conclude(console, base, logs, changes, failures) != 0:
        sys.exit(1)
    if keep:
        try:
            _keep(base, cfg, config, console)
        except FatalError as exc:
            click.echo(f"headrace demo: --keep: {exc}", err=True)
            sys.exit(1)
