"""headrace log path on a schedule: archive → demux (one mapped task per data type) → load.

The headrace config file is the DAG param ``config``; when that is empty, the Airflow Variable
``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``. Each task calls
headrace's Python API (no subprocesses) and fails, so Airflow retries it, when its run reports a
failure. Every step is idempotent (see docs/archive-demux-load.md), so a retry or a re-run is safe.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task


def _config_path() -> str:
    from headrace.airflow_tasks import config_path

    return config_path()


def _check(summary: Any) -> dict[str, Any]:
    from headrace.airflow_tasks import summary_result

    return summary_result(summary)


@dag(
    dag_id="headrace_logs",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # archive runs must not overlap (the archive builder would refuse anyway)
    params={"config": Param("", type="string", description="path of the headrace YAML config")},
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    tags=["headrace"],
)
def headrace_logs() -> None:
    @task
    def archive() -> dict[str, Any]:
        from headrace.batch import ArchiveConfig, run_archive
        from headrace.config import load as load_config

        return _check(run_archive(load_config(_config_path(), "archive", ArchiveConfig)))

    # runs after a skipped archive too (nothing new closed yet): earlier archives may still need demux
    @task(trigger_rule="none_failed")
    def data_types() -> list[str]:
        from headrace.batch import DemuxConfig, list_data_types
        from headrace.config import load as load_config
        from headrace.storage import resolve

        cfg = load_config(_config_path(), "demux", DemuxConfig)
        store = resolve(cfg.archive_dir)
        found = list_data_types(store)
        return [t for t in found if t in cfg.types or cfg.default is not None]

    @task(max_active_tis_per_dagrun=4)
    def demux(data_type: str) -> dict[str, Any]:
        from headrace.batch import DemuxConfig, run_demux
        from headrace.config import load as load_config

        return _check(run_demux(load_config(_config_path(), "demux", DemuxConfig), data_types=[data_type]))

    @task
    def load(data_type: str) -> dict[str, Any]:
        from headrace.batch import LoadConfig, run_load
        from headrace.config import load as load_config

        return _check(run_load(load_config(_config_path(), "load", LoadConfig), data_types=[data_type]))

    types = data_types()
    demuxed = demux.expand(data_type=types)
    archive() >> types
    demuxed >> load.expand(data_type=types)


headrace_logs()
