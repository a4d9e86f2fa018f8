"""Running headrace's DAGs in real Airflow: a temporary AIRFLOW_HOME (migrated once per session) and a
subprocess per DagBag import / ``dag.test()`` run, so Airflow's settings never leak into other tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"

SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag(sys.argv[2])
out = {"dags": sorted(bag.dag_ids), "tasks": sorted(dag.task_ids)}
if len(sys.argv) > 3:
    run = dag.test(run_conf={"config": sys.argv[3]})
    out["state"] = str(run.state)
    out["tis"] = sorted(
        f"{ti.task_id}[{ti.map_index}]={ti.state}" if ti.map_index >= 0 else f"{ti.task_id}={ti.state}"
        for ti in run.get_task_instances()
    )
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment of an Airflow with its own home and metadata database (SQLite), migrated."""
    pytest.importorskip("airflow")
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


def run_dag(env: dict[str, str], dag_id: str, config: Path | str | None = None) -> dict[str, object]:
    """Import the dags folder into a DagBag (no import errors allowed) and, given a headrace config,
    run ``dag_id`` with ``dag.test()``: its DAG ids, task ids and, when run, state and task states."""
    args = [sys.executable, "-c", SCRIPT, str(DAGS), dag_id, *([str(config)] if config is not None else [])]
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))
