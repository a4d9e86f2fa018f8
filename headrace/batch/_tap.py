"""``headrace tap``: what a processor makes of sample lines, before a config is deployed.

The lines go through the same code as ``headrace demux`` (record split, multi-line joining, the
processor, the UTF-8 check), as one chunk of a stream named after the input, so what ``tap`` shows
is what demux would write: the typed columns of each parsed record, and each failed record with
its reason. Output is a table on a terminal and JSON lines otherwise (``--format`` chooses).
Exit status: 0 when every record parsed, 1 when any failed (so a script can check a sample), 2 for
a bad processor name, option or config.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import sys
from typing import Any, BinaryIO

import click
import yaml

from .._chunk import Chunk, chunk_to_record
from .._cli import common_options
from .._config import load_section
from ..errors import UsageError
from ._config import DemuxConfig
from ._demux import demux_batch
from ._lines import split_records
from ._processors import load_processor

__all__ = ["tap", "tap_records"]


def tap_records(
    data: bytes,
    processor: str,
    options: dict[str, Any],
    multiline: str | None = None,
    stream: str = "stdin",
    where: str = "tap",
) -> list[dict[str, Any]]:
    """Parse ``data`` as demux would; one dict per record in input order: ``_offset`` plus either the
    parsed columns or ``_error`` (the reason) and ``raw``."""
    proc = load_processor(processor, options, where)
    record = chunk_to_record(Chunk("tap", stream, "tap", 0, len(data), data), 0)
    batch = split_records("tap", dt.date.today(), [record], multiline)
    good, errors = demux_batch(proc, batch, where)
    rows = [
        {"_offset": r["_offset"], **{k: v for k, v in r.items() if k not in ("_source", "_stream", "_offset")}}
        for r in good.to_pylist()
    ]
    rows += [{"_offset": r["_offset"], "_error": r["reason"], "raw": r["raw"]} for r in errors.to_pylist()]
    return sorted(rows, key=lambda r: int(r["_offset"]))


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.date | dt.time | dt.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    return str(v)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {pair!r}: expected KEY=VALUE (VALUE is read as YAML)")
        out[key] = yaml.safe_load(value)
    return out


def _show_records(rows: list[dict[str, Any]]) -> None:
    """One block per record, a field per line (log records have more fields than a terminal is wide)."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False)
    for r in rows:
        if "_error" in r:
            console.print(f"[bold red]@{r['_offset']} failed:[/] {escape(r['_error'])}")
            console.print(f"  [dim]raw[/]  {escape(r['raw'])}")
            continue
        console.print(f"[bold green]@{r['_offset']}[/]")
        width = max(len(k) for k in r)
        for k, v in r.items():
            if k != "_offset":
                shown = "[dim]null[/]" if v is None else escape(str(v))
                console.print(f"  [cyan]{k:<{width}}[/]  {shown}")


@click.command()
@common_options
@click.argument("files", nargs=-1, type=click.File("rb"))
@click.option("--processor", help="Processor name (raw, regex, json, combined, syslog, or a dotted path).")
@click.option("--option", "-o", "option_pairs", multiple=True, help="Processor option KEY=VALUE (repeatable).")
@click.option("--multiline", help="RE2 pattern of a record's first line (multi-line records).")
@click.option("--data-type", help="Take processor and options from the config's demux section for this type.")
@click.option("--format", "fmt", type=click.Choice(["auto", "table", "json"]), default="auto")
@click.option("--limit", type=click.IntRange(min=1), default=10_000, show_default=True, help="Records at most.")
def tap(
    config_path: str | None,
    files: tuple[BinaryIO, ...],
    processor: str | None,
    option_pairs: tuple[str, ...],
    multiline: str | None,
    data_type: str | None,
    fmt: str,
    limit: int,
) -> None:
    """Show what a processor makes of sample lines (FILES, or standard input)."""
    options = _options(option_pairs)
    where = "tap"
    if data_type is not None:
        if config_path is None:
            raise UsageError("--data-type reads the demux section: give --config FILE too")
        cfg = load_section(config_path, "demux", DemuxConfig, require=True, command="tap")
        spec = cfg.types.get(data_type, cfg.default)
        if spec is None:
            raise UsageError(f"demux.types has no {data_type!r} and demux.default is null")
        where = f"demux.types.{data_type}" if data_type in cfg.types else "demux.default"
        processor = processor or spec.processor
        options = {**(spec.model_extra or {}), **options}
        multiline = multiline or spec.multiline
    if processor is None:
        raise UsageError("say which processor: --processor NAME, or --config FILE --data-type TYPE")
    inputs = files or (sys.stdin.buffer,)
    rows: list[dict[str, Any]] = []
    for f in inputs:
        name = getattr(f, "name", "stdin")
        rows += tap_records(f.read(), processor, options, multiline, str(name), where)
    rows = rows[:limit]
    if fmt == "table" or (fmt == "auto" and sys.stdout.isatty()):
        _show_records(rows)
    else:
        for r in rows:
            click.echo(json.dumps(r, default=_json_default, ensure_ascii=False))
    failed = sum(1 for r in rows if "_error" in r)
    click.echo(f"headrace tap: {len(rows)} records, {len(rows) - failed} parsed, {failed} failed", err=True)
    if failed:
        raise SystemExit(1)
