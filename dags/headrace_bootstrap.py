"""headrace bootstrap store upkeep on a schedule: apply the log → compact it → report the lag.

The headrace config file is the DAG param ``config``; when that is empty, the Airflow Variable
``headrace_config``; when that is unset, the environment variable ``HEADRACE_CONFIG``. Tasks call
headrace's Python API against the ``bootstrap.store`` database. Applying is safe next to a running
bootstrap server (its applier and this one never write a stale merge: each apply is a
compare-and-set on ``applied_scn``); set ``bootstrap.apply_in_server: false`` to leave applying to
this DAG alone. Every step is idempotent, so a retry or a re-run is safe.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param, dag, task


def _config_path() -> str:
    from headrace.airflow_tasks import config_path

    return config_path()


@dag(
    dag_id="headrace_bootstrap",
    schedule=dt.timedelta(minutes=5),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    params={"config": Param("", type="string", description="path of the headrace YAML config")},
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1)},
    tags=["headrace"],
)
def headrace_bootstrap() -> None:
    @task
    def apply() -> dict[str, Any]:
        """Merge every logged window into the snapshot store (bounded passes)."""
        from headrace.bootstrap import BootstrapConfig, Store, apply_once
        from headrace.config import load as load_config

        cfg = load_config(_config_path(), "bootstrap", BootstrapConfig)
        store = Store(cfg.store)
        try:
            total = 0
            for _ in range(10_000):
                n = apply_once(store, cfg.apply_batch_windows)
                if n == 0:
                    break
                total += n
            st = store.state()
            return {"windows": total, "applied_scn": st["applied_scn"], "log_scn": st["log_scn"]}
        finally:
            store.close()

    @task
    def compact(applied: dict[str, Any]) -> dict[str, Any]:
        """Delete applied log windows older than ``bootstrap.retention_seconds``."""
        from headrace.bootstrap import BootstrapConfig, Store, compact_once
        from headrace.config import load as load_config

        cfg = load_config(_config_path(), "bootstrap", BootstrapConfig)
        store = Store(cfg.store)
        try:
            return {**applied, "compacted_windows": compact_once(store, cfg.retention_seconds)}
        finally:
            store.close()

    @task
    def report_lag(done: dict[str, Any]) -> dict[str, Any]:
        """Positions and lag of the store (also in the task log)."""
        from headrace.bootstrap import BootstrapConfig, Store, lag
        from headrace.config import load as load_config

        cfg = load_config(_config_path(), "bootstrap", BootstrapConfig)
        store = Store(cfg.store)
        try:
            out = {**done, **lag(store)}
        finally:
            store.close()
        print(
            f"bootstrap store: log_scn={out['log_scn']} applied_scn={out['applied_scn']} "
            f"log_floor={out['log_floor']} unapplied_windows={out['unapplied_windows']} "
            f"apply_lag_ms={out['apply_lag_ms']}"
        )
        return out

    report_lag(compact(apply()))


headrace_bootstrap()
