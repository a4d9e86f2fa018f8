"""``headrace verify``: the command (wiring only; the work is in :mod:`._run`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from .._cli import common_options

if TYPE_CHECKING:
    from ._run import VerifyReport

#: exit status when a copy differs from its source (verify) or counts diverge (reconcile)
EXIT_DIVERGED = 7


def _cols(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


@click.command()
@common_options
@click.option("--source", default=None, help="SQLAlchemy URL of the source database.")
@click.option(
    "--against",
    default=None,
    help="The copy: a SQLAlchemy URL (a `headrace sink` replica), a bootstrap server's URL or an export folder.",
)
@click.option("--table", default=None, help="Source table ([schema.]name).")
@click.option("--against-table", default=None, help="The copy's table, when its name differs (default: the sink's).")
@click.option("--key", default=None, help="Key columns, comma-separated (default: the source's primary key).")
@click.option("--exclude", default=None, help="Columns not to compare, comma-separated.")
@click.option("--leaf-rows", default=64, show_default=True, help="Rows per bucket below which rows are compared.")
@click.option(
    "--recheck-seconds",
    default=0.0,
    show_default=True,
    help="Re-check differing keys after this wait; keys that converged (changes in flight) are not reported.",
)
@click.option("--max-keys", default=10_000, show_default=True, help="Most keys listed per kind of difference.")
@click.option("--token", default=None, help="Bearer token for a bootstrap server given as --against.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def verify(
    config_path: str | None,
    source: str | None,
    against: str | None,
    table: str | None,
    against_table: str | None,
    key: str | None,
    exclude: str | None,
    leaf_rows: int,
    recheck_seconds: float,
    max_keys: int,
    token: str | None,
    as_json: bool,
) -> None:
    """Prove a copy of TABLE equals the source: exit 0 when equal, 7 with the differing keys otherwise.

    Each side hashes its rows into key-hash buckets with its own SQL; only buckets whose hashes differ
    are looked into, so few differences cost few queries. With only --config: every table of the
    config's sql sink against relay.source (one report, or JSON line, per table). Exit codes: 0 equal,
    7 different (the keys and a repair plan are printed), 1 a database unreachable, 2 bad usage.
    See docs/verify.md.
    """
    from ..errors import UsageError
    from ._jobs import ReplicaTable, sink_replicas
    from ._run import verify as run

    if source and against and table:
        specs = [ReplicaTable(source, table, against, against_table or "")]
    elif config_path and not (source or against or table):
        specs = sink_replicas(config_path)  # every table of the config's sink replica, against relay.source
    else:
        raise UsageError("give --source, --against and --table, or only --config (every table of its sql sink)")
    reports: list[VerifyReport] = []
    for spec in specs:
        report = run(
            spec.source,
            spec.against,
            spec.table,
            against_table=spec.against_table or None,
            key=_cols(key),
            exclude=_cols(exclude),
            leaf_rows=leaf_rows,
            recheck_seconds=recheck_seconds,
            max_keys=max_keys,
            token=token,
        )
        reports.append(report)
        _print(report, as_json)
    if any(not r.equal for r in reports):
        raise SystemExit(EXIT_DIVERGED)


def _print(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        r = report
        verdict = "equal" if r.equal else "DIFFERENT"
        click.echo(
            f"{r.table} vs {r.replica_table}: {verdict} ({r.source_rows} source rows, {r.replica_rows} replica rows; "
            f"{r.round_trips} round trips, {r.rows_fetched} rows fetched, {r.seconds:.2f} s)"
        )
        for what, keys in (("missing in the replica", r.missing), ("extra in the replica", r.extra),
                           ("different", r.different)):  # fmt: skip
            for k in keys:
                click.echo(f"  {what}: {json.dumps(k, ensure_ascii=False)}")
        for c in r.columns_missing:
            click.echo(f"  column missing in the replica: {c}")
        for c in r.columns_extra:
            click.echo(f"  column only in the replica: {c}")
        if not r.equal and (r.missing or r.extra or r.different):
            plan = r.repair_plan()
            click.echo(
                f"repair: copy {len(plan['resnapshot'])} keys again from the source, delete {len(plan['delete'])}"
            )


@click.command()
@common_options
@click.option("--agent", "agents", multiple=True, help="An agent's URL (default: the config's agent.listen).")
@click.option("--agent-token", default=None, help="Bearer token for the agents' /v1/status.")
@click.option(
    "--joined-types",
    default=None,
    help="Data types whose processor joins lines into multi-line records (no lines = rows check), comma-separated.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks and the counts as one JSON document.")
def reconcile(
    config_path: str | None, agents: tuple[str, ...], agent_token: str | None, joined_types: str | None, as_json: bool
) -> None:
    """Count the log path per stream at every stage and compare: exit 0 when every count matches, 7 naming
    each stream and stage that diverges.

    Reads what the config's sections point at: agent (its /v1/status), collector.sink_dir,
    archive.archive_dir, demux.output, load.url; a section that is absent is a stage not checked.
    Exit codes: 0 reconciled, 7 a divergence, 1 a stage unreadable, 2 bad usage. See docs/verify.md.
    """
    from ..errors import UsageError
    from ._jobs import reconcile as run

    if config_path is None:
        raise UsageError("headrace reconcile needs --config: the file of the log path's daemons and jobs")
    result = run(config_path, agents, agent_token, _cols(joined_types))
    found = result.checks
    bad = [c for c in found if not c.ok]
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        for c in found:
            click.echo(f"{'ok      ' if c.ok else 'MISMATCH'} {c.what}: {c.expected} → {c.found}")
        click.echo(f"{len(found) - len(bad)} of {len(found)} checks match (stages read: {', '.join(result.stages)})")
    if bad:
        for c in bad:
            click.echo(f"headrace reconcile: {c.mismatch()}", err=True)
        raise SystemExit(EXIT_DIVERGED)
