"""The headrace_logs DAG: imports into a DagBag cleanly and runs end to end under ``dag.test()``.

Airflow runs in subprocesses with a temporary AIRFLOW_HOME (migrated once per session), so its
settings never leak into the other tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow_support import run_dag
from archive_support import corpus, corpus_sinks
from support import write_config
from test_logpath_flow import check_tables, sections

pytest.importorskip("airflow")


def test_dag_runs_end_to_end_with_dag_test(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    data = corpus(200, seed=21)
    corpus_sinks(tmp_path / "sink" / "done", data, random.Random(21))
    db = tmp_path / "logs.db"
    cfg = write_config(tmp_path / "headrace.yaml", sections(tmp_path, f"sqlite:///{db}"))
    result = run_dag(airflow_env, "headrace_logs", cfg)
    assert "headrace_logs" in result["dags"]  # the DagBag imported the dags folder without errors
    assert result["tasks"] == ["archive", "data_types", "demux", "load"]
    assert result["state"] == "success", result
    mapped = [t for t in result["tis"] if t.startswith("demux[")]  # type: ignore[union-attr]
    assert len(mapped) == len(data), f"one demux task per data type: {result['tis']}"
    engine = sa.create_engine(f"sqlite:///{db}")
    check_tables(engine, data)
    engine.dispose()
    assert not list((tmp_path / "sink" / "done").glob("*.avro"))
