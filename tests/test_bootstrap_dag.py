"""The headrace_bootstrap DAG: imports into a DagBag cleanly and runs apply → compact → report_lag
under ``dag.test()`` against a real SQLite bootstrap store.

Airflow runs in subprocesses with a temporary AIRFLOW_HOME (migrated once per module), so its
settings never leak into the other tests.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import pytest
from airflow_support import run_dag
from support import write_config

from headrace.bootstrap import LogWindow, Store
from headrace.relay import Event, Op, decode_event, encode_event, encode_key

pytest.importorskip("airflow")


def _log(store: Store, rng: random.Random, windows: int) -> dict[tuple[str, int], bytes | None]:
    """Write ``windows`` random windows of c/u/d events to the log; returns each key's final ``after``."""
    final: dict[tuple[str, int], bytes | None] = {}
    out = []
    scn = 10
    old = int(time.time() * 1000) - 60_000  # committed a minute ago: older than retention
    for _ in range(windows):
        events = []
        for _ in range(rng.randint(1, 6)):
            scn += 1
            table = rng.choice(["orders", "customers"])
            k = rng.randint(1, 200)
            op = rng.choice([Op.INSERT, Op.UPDATE, Op.DELETE])
            after = None if op is Op.DELETE else rng.randbytes(rng.randint(1, 20))
            events.append(Event(scn, table, op, encode_key([k]), old, "00" * 8, None, after, False))
            final[(table, k)] = after
        events[-1] = dataclasses.replace(events[-1], window_end=True)
        out.append(
            LogWindow(
                scn,
                events[0].scn,
                old,
                len(events),
                frozenset(e.source for e in events),
                b"".join(encode_event(e) for e in events),
            )
        )
    store.init_positions(10)
    store.append(out, scn)
    return final


def test_bootstrap_dag_applies_compacts_and_reports(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    url = f"sqlite:///{tmp_path / 'boot.db'}"
    store = Store(url)
    final = _log(store, random.Random(7), 500)
    head = store.state()["log_scn"]
    store.close()
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {"bootstrap": {"store": url, "apply_batch_windows": 64, "retention_seconds": 30, "apply_in_server": False}},
    )
    result = run_dag(airflow_env, "headrace_bootstrap", cfg)
    assert "headrace_bootstrap" in result["dags"]
    assert result["tasks"] == ["apply", "compact", "report_lag"]
    assert result["state"] == "success", result

    store = Store(url)
    st = store.state()
    assert st["applied_scn"] == head
    # every key holds its last image, deleted keys are gone
    rows, _ = store.snapshot_page(["customers", "orders"], None, 1_000_000)
    got = {}
    for source, _sk, frame in rows:
        e, _ = decode_event(frame)
        assert e.op is Op.READ and e.window_end is False
        got[(source, json.loads(e.key)[0])] = e.after
    assert got == {k: v for k, v in final.items() if v is not None}
    # compaction: the applied windows were older than the retention window
    assert store.log_windows(0, 10) == [] and st["log_floor"] == head
    store.close()
