"""The headrace_logs DAG on a real cluster engine: Airflow's CeleryExecutor with two Celery workers on a
Redis broker, archives and Parquet on S3 (moto's server), the metadata and load databases on PostgreSQL.

One Airflow deployment (api-server, dag-processor, scheduler; tests/airflow_cluster.py) runs the DAG
twice on the same input: first with the scheduler on ``LocalExecutor``, then, after a scheduler restart,
on ``CeleryExecutor``. The mapped demux tasks of the Celery run must have run on both workers, and its
Parquet rows and loaded tables must equal the LocalExecutor run's.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import sqlalchemy as sa
from airflow_cluster import AirflowCluster
from archive_support import DEMUX_TYPES, corpus, corpus_sinks
from support import write_config
from test_logpath_flow import (
    check_errors,
    check_tables,
    s3,  # noqa: F401  (fixture: moto's S3 server)
)

pytest.importorskip("airflow.providers.celery")
pytest.importorskip("redis")

DAG = "headrace_logs"
WORKERS = ["worker1", "worker2"]


def run_config(tmp: Path, name: str, s3_host: str, load_url: str) -> tuple[Path, str]:
    """A headrace config whose archives and Parquet live under ``s3://logs/<name>/``; its tables prefix."""
    query = f"?endpoint_override={s3_host}&scheme=http&region=us-east-1"
    archive, tables = f"s3://logs/{name}/archive{query}", f"s3://logs/{name}/tables{query}"
    sections = {
        "archive": {"sink_dir": str(tmp / name / "sink"), "archive_dir": archive, "part_bytes": 200_000},
        "demux": {"archive_dir": archive, "output": tables, "types": DEMUX_TYPES, "batch_bytes": 100_000},
        "load": {"input": tables, "url": load_url},
    }
    return write_config(tmp / name / "headrace.yaml", sections), f"logs/{name}/tables"


def parquet_rows(fs: pafs.FileSystem, tables: str, types: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every Parquet row under ``tables``, per data type (and ``_errors``), sorted."""
    out = {}
    for t in [*types, "_errors"]:
        path = f"{tables}/_errors" if t == "_errors" else f"{tables}/data_type={t}"
        table = ds.dataset(path, format="parquet", partitioning="hive", filesystem=fs).to_table()
        cols = sorted(table.column_names)
        out[t] = sorted(tuple(r[c] for c in cols) for r in table.select(cols).to_pylist())
    return out


def db_rows(url: str, types: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            out = {}
            for t in types:
                table = sa.Table(f"logs_{t}", sa.MetaData(), autoload_with=conn)
                cols = sorted(c.name for c in table.columns)
                out[t] = sorted(tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in cols))))
            return out
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.timeout(900)  # 2-4 min on a busy 2-core machine, past 6 min when it is very busy
def test_logs_dag_on_two_celery_workers_equals_local_executor(
    tmp_path: Path,
    pg_server: Any,
    s3: str,  # noqa: F811  (the fixture)
) -> None:
    data = corpus(300, seed=41)
    t0 = time.monotonic()
    marks: list[str] = []

    def mark(what: str) -> None:
        marks.append(f"{what} {time.monotonic() - t0:.1f}s")

    cluster = AirflowCluster(tmp_path / "cluster", pg_server.url(pg_server.create_database("airflow_meta")))
    try:
        for name in WORKERS:  # they start while the rest does; the LocalExecutor run never queues on Celery
            cluster.start_celery_worker(name)
        cluster.airflow("db", "migrate")
        mark("db migrated")
        cluster.start_core()
        cluster.start_scheduler("LocalExecutor")
        cluster.wait_api()
        mark("api up")
        cluster.wait_dag(DAG)
        mark("dag parsed")

        results: dict[str, dict[str, Any]] = {}
        for executor in ("LocalExecutor", "CeleryExecutor"):
            if executor == "CeleryExecutor":
                cluster.start_scheduler("CeleryExecutor")
                cluster.poll(lambda: cluster.celery_workers_ready(WORKERS), 120, "both Celery workers")
                mark("scheduler restarted, workers up")
            name = executor.removesuffix("Executor").lower()
            corpus_sinks(tmp_path / name / "sink" / "done", data, random.Random(41))  # the same files each time
            load_url = pg_server.url(pg_server.create_database(f"logs_{name}"))
            cfg, tables = run_config(tmp_path, name, s3, load_url)
            run_id = cluster.trigger(DAG, f"test_{name}", {"config": str(cfg)})
            state = cluster.wait_run(DAG, run_id, timeout=300)
            tis = cluster.task_instances(DAG, run_id)
            assert state == "success", (executor, [(t["task_id"], t["map_index"], t["state"]) for t in tis])
            results[executor] = {"tis": tis, "tables": tables, "url": load_url}
            mark(f"{name} run done")

        # the Celery run: every task ran under Celery, the mapped demux tasks on both workers
        celery_tis = results["CeleryExecutor"]["tis"]
        demux = [t for t in celery_tis if t["task_id"] == "demux"]
        assert len(demux) == len(data), f"one demux task per data type: {demux}"
        assert all(t["state"] == "success" for t in celery_tis), celery_tis
        assert {t["hostname"] for t in celery_tis} <= set(WORKERS), [t["hostname"] for t in celery_tis]
        assert {t["hostname"] for t in demux} == set(WORKERS), [(t["map_index"], t["hostname"]) for t in demux]
        local_hosts = {t["hostname"] for t in results["LocalExecutor"]["tis"]}
        assert not local_hosts & set(WORKERS), f"the LocalExecutor run went through Celery: {local_hosts}"

        # the output of both runs: right against the corpus, and equal to each other
        fs = pafs.S3FileSystem(endpoint_override=s3, scheme="http", region="us-east-1")
        for executor, r in results.items():
            engine = sa.create_engine(r["url"].replace("postgresql://", "postgresql+psycopg2://", 1))
            check_tables(engine, data)
            engine.dispose()
            check_errors(r["tables"], data, filesystem=fs)
            assert not list((tmp_path / executor.removesuffix("Executor").lower() / "sink" / "done").glob("*.avro"))
        local, celery = results["LocalExecutor"], results["CeleryExecutor"]
        assert parquet_rows(fs, celery["tables"], list(data)) == parquet_rows(fs, local["tables"], list(data))
        assert db_rows(celery["url"], list(data)) == db_rows(local["url"], list(data))
        mark("checked")
    finally:
        cluster.stop()
        mark("stopped")
        print("\nheadrace_logs on Airflow:", ", ".join(marks))
