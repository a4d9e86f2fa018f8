"""The headrace_verify DAG under ``dag.test()`` in real Airflow: a SQLite source and a replica written
by the ``sink sql`` target's code, two tables: the task of the table equal to its source succeeds, the
task of the table changed behind the sink's back fails, and so does the run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from airflow_support import run_dag
from support import write_config
from verify_support import execute, replicate

pytest.importorskip("airflow")


def test_verify_dag_fails_on_a_difference_only(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    src = tmp_path / "app.db"
    conn = sqlite3.connect(src)
    for t in ("customers", "orders"):
        conn.execute(f"CREATE TABLE {t} (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, price NUMERIC(10, 2))")
        conn.executemany(
            f"INSERT INTO {t} VALUES (?, ?, ?, ?)", [(i, f"{t} {i} ✓", i % 7, f"{i}.25") for i in range(300)]
        )
    conn.commit()
    conn.close()
    source, replica = f"sqlite:///{src}", f"sqlite:///{tmp_path / 'replica.db'}"
    for t in ("customers", "orders"):
        replicate(source, t, replica)  # registers t → t for the sink "verify-test"
    execute(replica, "UPDATE orders SET qty = qty + 1 WHERE id = 42")
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "relay": {"source": source},
            "sink": {
                "name": "verify-test",
                "relays": ["http://127.0.0.1:1"],
                "target": {"type": "sql", "url": replica},
            },
        },
    )
    result = run_dag({**airflow_env, "HEADRACE_VERIFY_RECHECK_SECONDS": "0"}, "headrace_verify", cfg)
    assert result["tasks"] == ["reconcile", "replica_tables", "verify"]
    assert result["state"] == "failed", result
    # mapped in the registry's order: customers (equal), orders (changed)
    assert {"verify[0]=success", "verify[1]=failed", "reconcile=skipped"} <= set(result["tis"]), result
