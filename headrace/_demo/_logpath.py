"""The demo's log path: log files → agent → collector → sink files → archive → demux → load → SQL."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import httpx

from .._counts import chunk_counts
from ._loglines import KINDS, Written, write_lines
from ._procs import wait_for

__all__ = ["LogCounts", "avro_lines", "process", "ship"]

QUERY = "SELECT status, count(*) AS requests FROM logs_web GROUP BY status ORDER BY requests DESC, status"


@dataclass
class LogCounts:
    """Lines per data type at each step of the log path."""

    written: Written = field(default_factory=Written)
    acked_bytes: int = 0
    written_bytes: int = 0
    shipped: Counter[str] = field(default_factory=Counter)  # lines in the closed sink files
    archived: Counter[str] = field(default_factory=Counter)  # lines in the archive parts
    parsed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    loaded: Counter[str] = field(default_factory=Counter)  # rows in the loaded tables
    query: list[tuple[Any, ...]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # a batch job's own failures
    summaries: list[str] = field(default_factory=list)  # each batch job's summary line


def _status(port: int) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=5).json()
    return status


def ship(logs: Path, agent_port: int, lines: int, counts: LogCounts) -> None:
    """Write ``lines`` lines over the three files (the access log rotated half way) and wait until the
    agent reports every byte acknowledged by the collector."""
    logs.mkdir(parents=True, exist_ok=True)
    # Start the files and let the agent find them, as it finds long-lived logs.
    write_lines(logs, 0, len(KINDS), counts.written)
    wait_for(lambda: len(_status(agent_port)["streams"]) >= len(KINDS), 30, "the agent to find the log files")
    write_lines(logs, len(KINDS), lines, counts.written, rotate_at=lines // 2)
    counts.written_bytes = sum(p.stat().st_size for p in logs.iterdir())

    def all_acked() -> bool:
        counts.acked_bytes = sum(int(s["acked_offset"]) for s in _status(agent_port)["streams"])
        return counts.acked_bytes >= counts.written_bytes

    wait_for(all_acked, 60, "the collector to acknowledge every byte the agent read")


def avro_lines(paths: Iterable[Path]) -> Counter[str]:
    """Lines per data type in sink files or archive parts (both hold headrace chunks)."""

    def records() -> Iterable[dict[str, Any]]:
        for path in paths:
            with path.open("rb") as f:
                for rec in fastavro.reader(f):
                    assert isinstance(rec, dict)
                    yield rec

    return chunk_counts(records(), lambda r: str(r["data_type"]))[0]


def process(config: dict[str, Any], base: Path, counts: LogCounts) -> None:
    """Archive the closed sink files, demux the archives, load the tables, run :data:`QUERY`."""
    # (the public names are headrace.batch.run_archive etc.; imported from their modules for mypy, which
    # cannot see through headrace.batch's lazy __getattr__)
    from ..batch._archive import run_archive
    from ..batch._config import ArchiveConfig, DemuxConfig, LoadConfig
    from ..batch._demux import run_demux
    from ..batch._load import run_load

    archive = run_archive(ArchiveConfig(**config["archive"]))
    counts.archived = avro_lines(sorted(Path(config["archive"]["archive_dir"]).rglob("part-*.avro")))
    demux = run_demux(DemuxConfig(**config["demux"]))
    for data_type, (good, errors, _) in demux.by_type.items():
        counts.parsed[data_type] += good
        counts.errors[data_type] += errors
    load = run_load(LoadConfig(**config["load"]))
    for summary in (archive, demux, load):
        counts.summaries.append(summary.line().splitlines()[0])
        counts.failures += [f"{summary.job}: {f}" for f in summary.failures]
    db = sqlite3.connect(base / "logs.db")
    try:
        for data_type in KINDS:
            try:
                counts.loaded[data_type] = db.execute(f"SELECT count(*) FROM logs_{data_type}").fetchone()[0]
            except sqlite3.OperationalError as exc:  # no such table: nothing loaded
                counts.failures.append(f"load: logs_{data_type}: {exc}")
        counts.query = [tuple(r) for r in db.execute(QUERY)] if counts.loaded["web"] else []
    finally:
        db.close()
