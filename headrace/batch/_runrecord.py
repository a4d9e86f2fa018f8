"""The record of a batch job's last run: what ``headrace status`` and the status page show of it.

Each run of ``archive``, ``demux``, ``load`` and ``export`` ends by writing one small JSON state file
(:data:`RUN_RECORD_FILE`, kind ``run_record``): job, when it started, how long it took, files,
records, errors, error rate, the top error reasons, the failures and the exit code. It goes to
``<runs_dir>/<job>.json``; ``runs_dir`` defaults to ``_runs`` under the job's own output folder
(archive: ``archive_dir``; demux and export: ``output``; load: its ``input``, the demux output), which
may be a local folder or an ``s3://``/``hdfs://`` location. A run that raised (a config problem, a
lock held by another run) is recorded too, with its error. The record is written atomically; a run
that cannot write it logs a warning and keeps its own outcome.

:func:`problem` is the one rule of what counts as a bad run: a failed run (exit code other than 0 and
:data:`~._runreport.EXIT_IDLE`), or an error rate above ``max_error_rate``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from .._logging import get_logger
from .._statefile import StateFile
from .._storage import Store, resolve
from ._runreport import EXIT_IDLE, Summary

__all__ = [
    "JOBS",
    "RUN_RECORD_FILE",
    "RunRecord",
    "load_record",
    "problem",
    "record_of",
    "runs_location",
    "write_record",
]

log = get_logger("batch.runs")

#: the batch jobs, and the config key of the folder their ``_runs`` go under by default
JOBS = {"archive": "archive_dir", "demux": "output", "load": "input", "export": "output"}


class RunRecord(BaseModel):
    """One finished run of a batch job."""

    job: str
    started_at: dt.datetime
    finished_at: dt.datetime
    seconds: float
    files: int = 0
    chunks: int = 0
    records: int = 0
    errors: int = 0
    error_rate: float = 0.0  # errors / (records + errors); 0 without records
    bytes: int = 0
    top_reasons: dict[str, int] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)  # the first ten
    idle: str | None = None  # why there was nothing to do
    exit_code: int = 0


RUN_RECORD_FILE: StateFile[RunRecord] = StateFile("run_record", RunRecord, 1)


def runs_location(job: str, cfg: Any) -> tuple[Store, str]:
    """The store and path of ``job``'s run record for its config section ``cfg``."""
    override = getattr(cfg, "runs_dir", None)
    if override:
        store = resolve(str(override))
        return store, store.path(f"{job}.json")
    store = resolve(str(getattr(cfg, JOBS[job])))
    return store, store.path("_runs", f"{job}.json")


def record_of(
    summary: Summary | None,
    job: str,
    started_at: dt.datetime,
    exit_code: int,
    error: str | None = None,
) -> RunRecord:
    """The record of a run that ended with ``summary`` (None: it raised ``error`` before it had one)."""
    now = dt.datetime.now(dt.UTC)
    if summary is None:
        return RunRecord(
            job=job,
            started_at=started_at,
            finished_at=now,
            seconds=round((now - started_at).total_seconds(), 3),
            failures=[error or "failed"],
            exit_code=exit_code,
        )
    total = summary.records + summary.errors
    failures = [*summary.failures, *([error] if error else [])]
    return RunRecord(
        job=job,
        started_at=started_at,
        finished_at=now,
        seconds=round(summary.seconds, 3),
        files=summary.files,
        chunks=summary.chunks,
        records=summary.records,
        errors=summary.errors,
        error_rate=round(summary.errors / total, 6) if total else 0.0,
        bytes=summary.bytes,
        top_reasons=dict(summary.reasons.most_common(5)),
        failures=failures[:10],
        idle=summary.idle if summary.exit_code == EXIT_IDLE else None,
        exit_code=exit_code,
    )


def write_record(job: str, cfg: Any, record: RunRecord) -> None:
    """Save ``record`` as ``job``'s last run (a warning, not an error, when it cannot be written)."""
    try:
        store, path = runs_location(job, cfg)
        store.write_atomic(path, RUN_RECORD_FILE.encode(record))
    except Exception as exc:  # the run's own outcome matters more than its record
        log.warning("run_record_not_written", job=job, error=f"{type(exc).__name__}: {exc}")


def load_record(job: str, cfg: Any) -> RunRecord | None:
    """``job``'s last run record, or None when it never ran (raises FatalError on a corrupt record)."""
    store, path = runs_location(job, cfg)
    if not store.exists(path):
        return None
    return RUN_RECORD_FILE.decode(store.read_bytes(path), store.uri(path.removeprefix(store.base).lstrip("/")))


def problem(record: RunRecord, max_error_rate: float) -> str | None:
    """Why ``record`` is a bad run (failed, or an error rate above ``max_error_rate``), or None."""
    if record.exit_code not in (0, EXIT_IDLE):
        why = "; ".join(record.failures[:3]) or "no reason recorded"
        return f"last run failed (exit {record.exit_code}): {why}"
    if record.error_rate > max_error_rate:
        return f"last run's error rate {record.error_rate:.1%} is above {max_error_rate:g}"
    return None
