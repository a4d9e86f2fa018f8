"""headrace table export on a schedule: database tables → Parquet (full snapshots or increments).

One task runs the whole export, so the tables of a run are one consistent snapshot of the database
(see docs/export.md). The headrace config file is the DAG param ``config``; when that is empty, the
Airflow Variable ``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``.
A run is idempotent up to its commit point per table, so Airflow's retries are safe.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task


def _config_path() -> str:
    from headrace.airflow_tasks import config_path

    return config_path()


@dag(
    dag_id="headrace_export",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # runs on one output must not overlap (a local output is locked anyway)
    params={"config": Param("", type="string", description="path of the headrace YAML config")},
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["headrace"],
)
def headrace_export() -> None:
    @task
    def export() -> dict[str, Any]:
        from headrace.airflow_tasks import summary_result
        from headrace.batch import ExportConfig, run_export
        from headrace.config import load as load_config

        return summary_result(run_export(load_config(_config_path(), "export", ExportConfig)))

    export()


headrace_export()
