"""The headrace_logs DAG: imports into a DagBag cleanly and runs end to end under ``dag.test()``.

Airflow runs in subprocesses with a temporary AIRFLOW_HOME (migrated once per session), so its
settings never leak into the other tests.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from archive_support import corpus, corpus_sinks
from support import write_config
from test_logpath_flow import check_tables, sections

pytest.importorskip("airflow")
DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(DAGS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    yield env


SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("headrace_logs")
out = {"dags": sorted(bag.dag_ids), "tasks": sorted(dag.task_ids)}
if len(sys.argv) > 2:
    run = dag.test(run_conf={"config": sys.argv[2]})
    out["state"] = str(run.state)
    out["tis"] = sorted(f"{ti.task_id}[{ti.map_index}]={ti.state}" for ti in run.get_task_instances())
print("RESULT " + json.dumps(out))
"""


def run_script(env: dict[str, str], *args: str) -> dict[str, object]:
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(DAGS), *args], env=env, capture_output=True, text=True)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def test_dag_runs_end_to_end_with_dag_test(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    data = corpus(200, seed=21)
    corpus_sinks(tmp_path / "sink" / "done", data, random.Random(21))
    db = tmp_path / "logs.db"
    cfg = write_config(tmp_path / "headrace.yaml", sections(tmp_path, f"sqlite:///{db}"))
    result = run_script(airflow_env, str(cfg))
    assert "headrace_logs" in result["dags"]  # the DagBag imported the dags folder without errors
    assert result["tasks"] == ["archive", "data_types", "demux", "load"]
    assert result["state"] == "success", result
    mapped = [t for t in result["tis"] if t.startswith("demux[")]  # type: ignore[union-attr]
    assert len(mapped) == len(data), f"one demux task per data type: {result['tis']}"
    engine = sa.create_engine(f"sqlite:///{db}")
    check_tables(engine, data)
    engine.dispose()
    assert not list((tmp_path / "sink" / "done").glob("*.avro"))
