"""``headrace sink`` with the ``sql`` target, end to end: a SQLite source under writers, a relay and a
bootstrap server, the sink killed with SIGKILL at random moments and restarted; the replica must equal
the source, row for row, and its checkpoint must be the last SCN the source logged."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import pytest
from bootstrap_stack import Stack
from db_servers import mariadb_server, pg_server  # noqa: F401
from sink_support import CounterWriter, add_counters, checkpoint, replica_table, sink_config, source_table
from support import wait_until

from headrace.verify import verify

TABLES = {"accounts": "id", "tags": "k", "counters": "id"}


def _run_with_kills(stack: Stack, daemons: Any, url: str, kills: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    target = {"type": "sql", "url": url, "batch_rows": 400}
    cfg = sink_config(stack.tmp / "sink.yaml", stack.relay_url, stack.boot_url, target, snapshot_rows=200)
    counters = CounterWriter(stack.db)
    counters.start()
    stack.start_writers(1, sleep_ms=3)
    sink = daemons(["sink", "--config", str(cfg)], "sink")
    last = -1
    phases = []
    for i in range(kills):
        sink.start()
        if i == 0:
            # the first kill lands inside the initial snapshot: right after its first commit
            wait_until(lambda: checkpoint(url) is not None, 60, "a first commit", interval=0.01)
        else:
            wait_until(lambda last=last: (checkpoint(url) or {}).get("scn", -1) > last, 60, "the checkpoint to move")
            if i == kills // 2:
                counters.add_label_column()  # the schema grows while the sink runs (and dies)
            time.sleep(rng.uniform(0.05, 1.2))  # a random kill moment (not a synchronisation)
        assert sink.alive(), sink.output()
        if i == kills - 1:
            assert sink.stop() == 0, sink.output()  # SIGTERM: what is staged is committed, exit 0
            assert "sink_stopped" in sink.output()
        else:
            sink.kill9()
        cp = checkpoint(url) or {}
        last = cp.get("scn", -1)
        phases.append(cp.get("phase"))
    stack.stop_writers()
    increments = counters.finish()
    final = wl.change_log_head(stack.db)
    sink.args = ["sink", "--config", str(cfg), "--idle-exit", "3"]
    sink.start()
    assert sink.proc is not None
    assert sink.proc.wait(120) == 0, sink.output()

    for table, key in TABLES.items():
        src, rep = source_table(stack.db, table, key), replica_table(url, table, key)
        missing, extra = src.keys() - rep.keys(), rep.keys() - src.keys()
        differ = [k for k in src.keys() & rep.keys() if src[k] != rep[k]]
        detail = [(src[k], rep[k]) for k in differ[:2]]
        assert not missing and not extra and not differ, (table, sorted(missing)[:5], sorted(extra)[:5], detail)
    for table in TABLES:  # and headrace verify agrees, with one query per side
        report = verify(f"sqlite:///{stack.db}", url, table)
        assert report.equal and report.round_trips == 2, report.to_json()
    rep = replica_table(url, "counters", "id")
    assert sum(r["n"] for r in rep.values()) == increments  # every increment once
    assert any(r["label"] is not None for r in rep.values())  # the added column arrived
    cp = checkpoint(url)
    assert cp is not None and cp["scn"] == final and cp["phase"] == "relay"
    return phases


def _stack(tmp_path: Path, daemons: Any) -> Stack:
    stack = Stack(tmp_path, daemons, rows=3000)
    add_counters(stack.db)
    stack.start_relay()
    stack.start_bootstrap()
    stack.wait_ready()
    return stack


def test_sqlite_replica_survives_kill9_under_writers(tmp_path: Path, daemons: Any) -> None:
    stack = _stack(tmp_path, daemons)
    try:
        phases = _run_with_kills(stack, daemons, f"sqlite:///{tmp_path / 'replica.db'}", kills=4, seed=1)
        assert phases[0] == "snapshot", phases  # the first kill hit the initial copy
    finally:
        stack.kill_all()


@pytest.mark.postgres
def test_postgres_replica_survives_kill9_under_writers(tmp_path: Path, daemons: Any, pg_server: Any) -> None:  # noqa: F811
    stack = _stack(tmp_path, daemons)
    db = pg_server.create_database("sink_replica")
    try:
        _run_with_kills(stack, daemons, pg_server.url(db), kills=3, seed=2)
    finally:
        stack.kill_all()


@pytest.mark.mariadb
def test_mariadb_replica_survives_kill9_under_writers(tmp_path: Path, daemons: Any, mariadb_server: Any) -> None:  # noqa: F811
    stack = _stack(tmp_path, daemons)
    db = mariadb_server.create_database("sink_replica")
    try:
        _run_with_kills(stack, daemons, mariadb_server.url(db), kills=3, seed=3)
    finally:
        stack.kill_all()
