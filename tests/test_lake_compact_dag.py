"""The headrace_lake_compact DAG: imports into a DagBag cleanly and, under ``dag.test()`` (real Airflow
in a subprocess), compacts a lake sink's Delta tables without changing their content or checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow_support import run_dag
from support import write_config
from test_sink_lake_target import _target, _win, changes, current, ev, row

from headrace.relay._event import Op
from headrace.relay.client import Checkpoint

pytest.importorskip("airflow")
deltalake = pytest.importorskip("deltalake")


def test_lake_compact_dag_compacts_and_keeps_content(tmp_path: Path, airflow_env: dict[str, Any]) -> None:
    lake = tmp_path / "lake"
    t = _target(lake)
    t.load()
    for s in range(1, 16):
        t.commit([_win(t, s, ev(s, Op.INSERT, s % 4, row(s % 4, name=f"v{s}")))], Checkpoint(s))
    cur, ch = current(lake), changes(lake)
    files = len(deltalake.DeltaTable(str(lake / "changes" / "shop_items")).file_uris())
    target = {"type": "lake", "uri": str(lake), "vacuum_retention_hours": 0}
    cfg = write_config(
        tmp_path / "headrace.yaml", {"sink": {"name": "s1", "relays": ["http://127.0.0.1:9"], "target": target}}
    )
    result = run_dag(airflow_env, "headrace_lake_compact", cfg)
    assert "headrace_lake_compact" in result["dags"]
    assert result["tasks"] == ["compact"]
    assert result["state"] == "success", result
    assert len(deltalake.DeltaTable(str(lake / "changes" / "shop_items")).file_uris()) < files
    assert current(lake) == cur and changes(lake) == ch
    assert _target(lake).load() == Checkpoint(15)
