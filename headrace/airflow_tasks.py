"""Helpers for headrace's Airflow DAGs (``dags/``), imported inside their tasks.

Nothing here imports Airflow at module level: the daemons never need it, and the DAG files stay
cheap to parse (they import headrace only when a task runs).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["config_path", "summary_result"]


def config_path() -> str:
    """The headrace config file of the running task: the DAG param ``config``; when that is empty, the
    Airflow Variable ``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``."""
    from airflow.sdk import Variable, get_current_context

    params = get_current_context()["params"]
    path = params.get("config") or Variable.get("headrace_config", default=None) or os.environ.get("HEADRACE_CONFIG")
    if not path:
        raise ValueError(
            "no headrace config: set the DAG param 'config', the Variable 'headrace_config' or HEADRACE_CONFIG"
        )
    return str(path)


def summary_result(summary: Any) -> dict[str, Any]:
    """Print a batch job's summary and return its counts; raise (so Airflow retries) on failure, and
    skip the task (saying why) when there was nothing to do for a reason the user can act on."""
    print(summary.line())
    if not summary.ok:
        raise RuntimeError("; ".join(summary.failures[:5]))
    if getattr(summary, "exit_code", 0) != 0:
        from airflow.exceptions import AirflowSkipException

        raise AirflowSkipException(summary.idle)
    return {
        "files": summary.files,
        "chunks": summary.chunks,
        "records": summary.records,
        "errors": summary.errors,
        "bytes": summary.bytes,
    }
