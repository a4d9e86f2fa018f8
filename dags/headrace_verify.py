"""headrace's nightly proof that copies match: ``verify`` every table of the ``sink`` SQL replica
against the relay's source database (one mapped task per table), and ``reconcile`` the log path's
counts per stream (agent → sink files → archives → demux → load). A difference fails the task, so the
DAG run fails and Airflow's alerting (email, callbacks) tells someone.

The headrace config file is the DAG param ``config``; when that is empty, the Airflow Variable
``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``. A config
without ``relay`` and ``sink`` sections skips verify; one without ``archive`` skips reconcile. Both
only read, so retries and re-runs are safe. Keys that differ are checked again after
``HEADRACE_VERIFY_RECHECK_SECONDS`` (default 30) and only those still different fail the task, so
changes in flight while the sink runs are not reported. Schedule it after the nightly batch jobs (archive, demux
and load must have run over what the collectors hold, or reconcile reports them as behind).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task


def _config_path() -> str:
    from headrace.airflow_tasks import config_path

    return config_path()


def _has(section: str) -> bool:
    import yaml

    with open(_config_path(), encoding="utf-8") as f:
        return section in (yaml.safe_load(f) or {})


@dag(
    dag_id="headrace_verify",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params={"config": Param("", type="string", description="path of the headrace YAML config")},
    default_args={"retries": 0},  # a difference is a finding, not a transient failure
    tags=["headrace"],
)
def headrace_verify() -> None:
    @task
    def replica_tables() -> list[dict[str, str]]:
        from headrace.verify import sink_replicas

        if not (_has("relay") and _has("sink")):
            return []
        return [
            {"source": t.source, "table": t.table, "against": t.against, "against_table": t.against_table}
            for t in sink_replicas(_config_path())
        ]

    @task(max_active_tis_per_dagrun=2)
    def verify(spec: dict[str, str]) -> dict[str, Any]:
        import json
        import os

        from headrace.verify import verify as run

        recheck = float(os.environ.get("HEADRACE_VERIFY_RECHECK_SECONDS", "30"))
        report = run(spec["source"], spec["against"], spec["table"], against_table=spec["against_table"],
                     recheck_seconds=recheck)  # fmt: skip
        doc = report.to_json()
        print(json.dumps({k: doc[k] for k in ("equal", "table", "source_rows", "replica_rows", "round_trips")}))
        if not report.equal:
            raise RuntimeError(
                f"{spec['table']}: the replica differs: {len(report.missing)} missing, {len(report.extra)} extra, "
                f"{len(report.different)} different; repair plan: {json.dumps(report.repair_plan())[:2000]}"
            )
        return {"table": spec["table"], "rows": report.source_rows, "round_trips": report.round_trips}

    @task
    def reconcile() -> dict[str, Any]:
        from airflow.exceptions import AirflowSkipException

        from headrace.verify import reconcile as run

        if not _has("archive"):
            raise AirflowSkipException("no archive section: no log path to reconcile")
        result = run(_config_path())
        for c in result.checks:
            print(("ok       " if c.ok else "MISMATCH ") + c.what, c.expected, c.found)
        bad = [c.mismatch() for c in result.checks if not c.ok]
        if bad:
            raise RuntimeError("; ".join(bad[:20]))
        return {"checks": len(result.checks), "stages": result.stages}

    verify.expand(spec=replica_tables())
    reconcile()


headrace_verify()
