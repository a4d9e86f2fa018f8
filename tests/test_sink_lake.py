"""``headrace sink`` with the ``lake`` target (Delta Lake), end to end: a SQLite source under writers, a
relay and a bootstrap server, the sink killed with SIGKILL at random moments (the first inside the
initial snapshot) and restarted, a column added to the source meanwhile; on a local folder and on S3
(moto's server, in its own process). At the end the current tables equal the source, the change
table holds every change once (each counter's updates count up by one, no gap, no repeat), the log's
checkpoint is the last SCN the source logged; compaction keeps all of it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import pytest
from bootstrap_stack import Stack
from sink_support import CounterWriter, add_counters, sink_config, source_table
from support import free_port, wait_until

deltalake = pytest.importorskip("deltalake")

from headrace.verify import verify  # noqa: E402

TABLES = {"accounts": "id", "tags": "k", "counters": "id"}
KEY = "_headrace_key"


@pytest.fixture
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 server in its own process (delta-rs and a moto server thread in one process can
    deadlock on the GIL), a bucket ``lake``; yields the storage options."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    opts = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # one writer per table (one sink per lake)
    }
    try:
        client = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

        def bucket() -> bool:
            assert proc.poll() is None, "moto_server exited"
            try:
                client.create_bucket(Bucket="lake")
            except Exception:
                return False
            return True

        wait_until(bucket, 30, "moto's S3 server")
        yield opts
    finally:
        proc.kill()
        proc.wait(10)


def lake_rows(uri: str, table: str, opts: dict[str, str] | None = None) -> list[dict[str, Any]]:
    dt = deltalake.DeltaTable(f"{uri}/{table}", storage_options=opts)
    return list(dt.to_pyarrow_table().to_pylist())


def duckdb_rows(uri: str, table: str) -> list[dict[str, Any]]:
    """A local Delta table as DuckDB reads it (its ``delta`` extension from the
    ``duckdb-extension-delta`` package: DuckDB would otherwise download it at run time)."""
    import importlib.resources

    import duckdb

    ext = importlib.resources.files("duckdb_extension_delta") / "extensions" / f"v{duckdb.__version__}"
    with duckdb.connect() as con:
        con.execute(f"LOAD '{ext / 'delta.duckdb_extension'}'")
        out: list[dict[str, Any]] = (
            con.execute("SELECT * FROM delta_scan(?)", [f"{uri}/{table}"]).to_arrow_table().to_pylist()
        )
    return out


def lake_current(uri: str, table: str, key: str, opts: dict[str, str] | None = None) -> dict[Any, dict[str, Any]]:
    rows = lake_rows(uri, f"current/{table}", opts)
    for r in rows:
        r.pop(KEY)
    return {r[key]: r for r in rows}


def lake_checkpoint(uri: str, opts: dict[str, str] | None = None) -> dict[str, Any] | None:
    from headrace.sinks._lake import read_sink_checkpoint

    log_uri = f"{uri}/_headrace_sink/sink"
    if not deltalake.DeltaTable.is_deltatable(log_uri, storage_options=opts):
        return None
    head = read_sink_checkpoint(deltalake.DeltaTable(log_uri, storage_options=opts), "sink")
    return None if head is None else head.checkpoint.to_json()


def _scn(uri: str, opts: dict[str, str] | None) -> int:
    return int((lake_checkpoint(uri, opts) or {}).get("scn", -1))


def compact(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "sink", "--config", str(cfg), "--compact"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_with_kills(
    stack: Stack,
    daemons: Any,
    uri: str,
    opts: dict[str, str] | None,
    kills: int,
    seed: int,
    compact_at: int | None = None,
) -> tuple[Path, int]:
    """Writers and the sink with ``kills`` SIGKILLs (the first inside the snapshot), then an idle-exit run;
    at start number ``compact_at`` a compaction runs while the sink writes (either may lose a commit race:
    the sink restarts from its checkpoint, a failed compaction is only reported)."""
    rng = random.Random(seed)
    target = {"type": "lake", "uri": uri, "storage_options": opts or {}, "batch_rows": 500, "batch_seconds": 0.5}
    cfg = sink_config(stack.tmp / "sink.yaml", stack.relay_url, stack.boot_url, target, snapshot_rows=100)
    counters = CounterWriter(stack.db)
    counters.start()
    stack.start_writers(1, sleep_ms=3)
    sink = daemons(["sink", "--config", str(cfg)], "sink")
    last = -1
    try:
        for i in range(kills):
            sink.start()
            if i == 0:
                wait_until(lambda: lake_checkpoint(uri, opts) is not None, 90, "a first commit", interval=0.02)
                assert (lake_checkpoint(uri, opts) or {}).get("phase") == "snapshot"
            else:
                wait_until(lambda last=last: _scn(uri, opts) > last, 90, "the checkpoint to move")
                if i == 1:
                    counters.add_label_column()  # the schema grows while the sink runs (and dies)
                if i == compact_at:
                    out = compact(cfg)
                    assert out.returncode in (0, 1), out.stderr[-2000:]  # 1: lost a commit race (reported)
                    assert sink.alive(), sink.output()
                time.sleep(rng.uniform(0.05, 1.5))  # a random kill moment (not a synchronisation)
            assert sink.alive(), sink.output()
            sink.kill9()
            last = _scn(uri, opts)
        stack.stop_writers()
        increments = counters.finish()
        sink.args = ["sink", "--config", str(cfg), "--idle-exit", "3"]
        sink.start()
        assert sink.proc is not None
        assert sink.proc.wait(180) == 0, sink.output()
    finally:
        counters.finish()
    return cfg, increments


def check_lake(stack: Stack, uri: str, opts: dict[str, str] | None, increments: int) -> None:
    for table, key in TABLES.items():
        src, rep = source_table(stack.db, table, key), lake_current(uri, table, key, opts)
        missing, extra = src.keys() - rep.keys(), rep.keys() - src.keys()
        differ = [k for k in src.keys() & rep.keys() if src[k] != rep[k]]
        detail = [(src[k], rep[k]) for k in differ[:2]]
        assert not missing and not extra and not differ, (table, sorted(missing)[:5], sorted(extra)[:5], detail)
    for table in TABLES:  # and headrace verify agrees on each current table
        report = verify(f"sqlite:///{stack.db}", f"{uri}/current/{table}", table, storage_options=opts)
        assert report.equal and report.source_rows == report.replica_rows > 0, report
    rep = lake_current(uri, "counters", "id", opts)
    assert sum(r["n"] for r in rep.values()) == increments  # every increment once
    assert any(r["label"] is not None for r in rep.values())  # the added column arrived

    # the change table: no change twice; each counter's updates count up by exactly one, to its final value
    for table in TABLES:
        ch = [r for r in lake_rows(uri, f"changes/{table}", opts) if r["_headrace_op"] in ("c", "u", "d")]
        ids = [(r["_headrace_scn"], r["_headrace_index"]) for r in ch]
        assert len(ids) == len(set(ids)), f"{table}: a change twice in the change table"
    # segments between restarted snapshots (a ``t``, in commit order); in the last one, each counter's rows
    # in SCN order: the ``u`` rows count up by exactly one (no repeat, no gap: every change once), and the
    # newest row (a snapshot read or an update) is the counter's value
    rows = sorted(lake_rows(uri, "changes/counters", opts), key=lambda r: r["_headrace_commit"])
    cut = max((i for i, r in enumerate(rows) if r["_headrace_op"] == "t"), default=-1)
    segments = [rows[: cut + 1], rows[cut + 1 :]]
    updates = 0
    for seg in segments:
        by_id: dict[int, list[dict[str, Any]]] = {}
        for r in seg:
            if r["_headrace_op"] != "t":
                by_id.setdefault(r["id"], []).append(r)
        for cid, rs in by_id.items():
            rs.sort(key=lambda r: (r["_headrace_scn"], r["_headrace_op"] != "r"))
            ns = [r["n"] for r in rs if r["_headrace_op"] == "u"]
            updates += len(ns)
            assert ns == list(range(ns[0], ns[0] + len(ns))) if ns else True, f"counter {cid}: {ns}"
            if seg is segments[-1]:
                assert rs[-1]["n"] == rep[cid]["n"], (cid, rs[-3:])
    assert updates > 0
    cp = lake_checkpoint(uri, opts)
    assert cp is not None and cp["scn"] == wl.change_log_head(stack.db) and cp["phase"] == "relay"


def _stack(tmp_path: Path, daemons: Any, rows: int, **bootstrap: Any) -> Stack:
    stack = Stack(tmp_path, daemons, rows=rows, bootstrap=bootstrap)
    add_counters(stack.db)
    stack.start_relay()
    stack.start_bootstrap()
    stack.wait_ready()
    return stack


def test_lake_on_local_disk_survives_kill9_and_compacts(tmp_path: Path, daemons: Any) -> None:
    # a bootstrap log compacted right away: a sink slowed by the load and its kills restarts snapshots,
    # so kills land in restarted snapshots too (issue 15: a replay reading a new snapshot, see docs/sinks.md)
    stack = _stack(tmp_path, daemons, rows=1000)
    uri = str(tmp_path / "lake")
    try:
        cfg, increments = run_with_kills(stack, daemons, uri, None, kills=3, seed=1, compact_at=2)
    finally:
        stack.kill_all()
    check_lake(stack, uri, None, increments)

    changes_before = sorted(json.dumps(r, default=str) for r in lake_rows(uri, "changes/counters"))
    files = len(deltalake.DeltaTable(f"{uri}/changes/counters").file_uris())
    out = compact(cfg)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["tables"] == 7 and counts["files_removed"] > 0, counts
    assert len(deltalake.DeltaTable(f"{uri}/changes/counters").file_uris()) < files
    assert sorted(json.dumps(r, default=str) for r in lake_rows(uri, "changes/counters")) == changes_before
    check_lake(stack, uri, None, increments)  # compaction changed no content, nor the checkpoint
    for table, key in TABLES.items():  # and DuckDB reads the same current tables
        by_key = {r[key]: r for r in lake_rows(uri, f"current/{table}")}
        got = {r[key]: r for r in duckdb_rows(uri, f"current/{table}")}
        assert got == by_key, table


def test_lake_on_s3_survives_kill9(tmp_path: Path, daemons: Any, s3: dict[str, str]) -> None:
    # a bootstrap log kept for a while: a sink on (moto's slow) S3 finishes its snapshot and catches up,
    # instead of starting the snapshot over and over as the log is compacted under it
    stack = _stack(tmp_path, daemons, rows=500, retention_seconds=3600)
    uri = "s3://lake/cdc"
    try:
        _, increments = run_with_kills(stack, daemons, uri, s3, kills=2, seed=2)
    finally:
        stack.kill_all()
    check_lake(stack, uri, s3, increments)


@pytest.mark.slow
def test_lake_soak_many_kills(tmp_path: Path, daemons: Any) -> None:
    """Longer: a bigger source, eight SIGKILLs, a compaction while the sink runs (a bootstrap log kept
    for a while, so the sink reaches the relay between kills rather than restarting its snapshot)."""
    stack = _stack(tmp_path, daemons, rows=5000, retention_seconds=600)
    uri = str(tmp_path / "lake")
    try:
        _, increments = run_with_kills(stack, daemons, uri, None, kills=8, seed=8, compact_at=4)
    finally:
        stack.kill_all()
    check_lake(stack, uri, None, increments)
