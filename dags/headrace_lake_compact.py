"""headrace lake upkeep on a schedule: compact the small files of a ``lake`` sink's Delta tables, then vacuum.

Every commit of ``headrace sink`` with the ``lake`` target adds a small Parquet file to each Delta
table it touches; this DAG bin-packs them (``optimize.compact``) and deletes the files no version
within ``sink.target.vacuum_retention_hours`` needs (``vacuum``), on every current table, change table
and the sink's log (see docs/sinks.md). It runs next to the sink: compaction changes no rows and
carries no checkpoint; a commit conflict with the sink's MERGE fails one side cleanly (the sink
restarts from its checkpoint, this task is retried).

The headrace config file (with the ``sink:`` section) is the DAG param ``config``; when that is empty,
the Airflow Variable ``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task


@dag(
    dag_id="headrace_lake_compact",
    schedule=dt.timedelta(hours=1),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # two compactions of one table would conflict
    params={"config": Param("", type="string", description="path of the headrace YAML config")},
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    tags=["headrace"],
)
def headrace_lake_compact() -> None:
    @task
    def compact() -> dict[str, Any]:
        """Compact and vacuum every Delta table of the sink; returns the counts."""
        from headrace.airflow_tasks import config_path
        from headrace.sinks import compact_sink

        out = compact_sink(config_path())
        print(out)
        return out

    compact()


headrace_lake_compact()
