"""``headrace sink`` (sql target) benchmark: rows/s into PostgreSQL, against plain bulk loads of the same rows.

Usage::

    PYTHONPATH=$PWD:$PWD/tests python bench/sink_sql.py [--rows 200000] [--window-rows 100]

Starts a private PostgreSQL (``tests/db_servers.py``) and, in the same run, times:

1. *sink, end to end*: a SQLite source table gets ``--rows`` inserts in transactions of
   ``--window-rows`` rows while a relay captures them; then a ``headrace sink`` process (sql target,
   default batching) is started and timed from its start until the checkpoint in PostgreSQL reaches
   the last SCN (process start, relay streaming and decoding, planning, upserts, commits);
2. *sink, target only*: the same rows as decoded windows, committed by the sink's target in-process
   (``SqlSinkTarget.commit``: upserts with the checkpoint, in batches of 1000 windows) — the cost of the
   database side without the relay;
3. *peer: plain INSERT*: the same rows inserted with psycopg2's ``execute_values`` (multi-row VALUES
   pages of 1000) in one transaction into a table of the same shape (no upsert, no checkpoint);
4. *peer: COPY*: the same rows through ``COPY … FROM STDIN`` (CSV, psycopg2) in one transaction.

Results go to ``bench/results/sink_sql.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _procs import free_port
from _result import write_result  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def rows(n: int) -> list[tuple[Any, ...]]:
    return [
        (i, f"customer {i % 5000}", i * 3 - 7, i / 7.0, None if i % 3 == 0 else f"note {i}") for i in range(1, n + 1)
    ]


def fill_source(db: Path, n: int, per_txn: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    data = rows(n)
    for i in range(0, n, per_txn):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", data[i : i + per_txn])
        conn.execute("COMMIT")
    conn.close()


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if pred():
                return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def head(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'headrace_changes'").fetchone()[0])
    finally:
        conn.close()


def end_to_end(pg: Any, root: Path, n: int, per_txn: int) -> float:
    db = root / "src.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount INTEGER, score REAL, note TEXT)")
    conn.commit()
    conn.close()
    port = free_port()
    relay_cfg = root / "relay.yaml"
    relay_cfg.write_text(
        yaml.safe_dump(
            {
                "relay": {
                    "listen": f"127.0.0.1:{port}",
                    "source": f"sqlite:///{db}",
                    "state_dir": str(root / "relay"),
                    "buffer_bytes": 512 << 20,
                    "sqlite": {"retention_seconds": None},
                }
            }
        )
    )
    target = pg.url(pg.create_database("sink_e2e"))
    sink_cfg = root / "sink.yaml"
    sink_cfg.write_text(
        yaml.safe_dump(
            {
                "sink": {
                    "name": "bench",
                    "relays": [f"http://127.0.0.1:{port}"],
                    "target": {"type": "sql", "url": target},
                }
            }
        )
    )
    cmd = [sys.executable, "-m", "headrace"]
    relay = subprocess.Popen(
        [*cmd, "relay", "--config", str(relay_cfg), "--log-format", "json", "--log-level", "warning"],
        stdout=open(root / "relay.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    sink = None
    try:
        wait(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200, 30, "the relay")
        fill_source(db, n, per_txn)
        last = head(db)
        wait(
            lambda: httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=2).json()["newest_scn"] >= last,
            120,
            "capture",
        )
        t0 = time.perf_counter()
        sink = subprocess.Popen(
            [*cmd, "sink", "--config", str(sink_cfg), "--log-format", "json", "--log-level", "warning"],
            stdout=open(root / "sink.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        import sqlalchemy as sa

        from headrace._db import create_engine

        engine = create_engine(target)

        def done() -> bool:
            with engine.connect() as c:
                return (c.execute(sa.text("SELECT scn FROM _headrace_sink_checkpoint")).scalar() or 0) >= last

        wait(done, 600, "the sink to catch up")
        seconds = time.perf_counter() - t0
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM orders")).scalar() == n
        engine.dispose()
        return seconds
    finally:
        for p in (sink, relay):
            if p is not None:
                p.terminate()
                p.wait(30)


def target_only(pg: Any, n: int, per_txn: int) -> float:
    from headrace.relay._event import Op
    from headrace.relay._schema import Column, ColumnType, TableMeta, avro_schema, schema_fingerprint
    from headrace.relay.client import ChangeEvent, Checkpoint, Window
    from headrace.sinks._config import SqlTarget
    from headrace.sinks._sql import SqlSinkTarget

    meta = TableMeta(
        "orders",
        (
            Column("id", ColumnType("long"), False),
            Column("customer", ColumnType("string")),
            Column("amount", ColumnType("long")),
            Column("score", ColumnType("double")),
            Column("note", ColumnType("string")),
        ),
        ("id",),
    )
    schema = avro_schema(meta)
    fp = schema_fingerprint(schema)
    names = [c.name for c in meta.columns]
    data = rows(n)
    windows = []
    for i in range(0, n, per_txn):
        scn = i // per_txn + 1
        evs = [
            ChangeEvent(scn, "orders", Op.INSERT, [r[0]], None, dict(zip(names, r, strict=True)), 0, False, fp, 1)
            for r in data[i : i + per_txn]
        ]
        windows.append(Window(scn, evs))
    t = SqlSinkTarget(SqlTarget(type="sql", url=pg.url(pg.create_database("sink_target"))), "bench")
    try:
        t0 = time.perf_counter()
        for i in range(0, len(windows), 1000):
            batch = windows[i : i + 1000]
            for w in batch:
                t.prepare(w, lambda f, tb: schema)
            t.commit(batch, Checkpoint(batch[-1].scn))
        return time.perf_counter() - t0
    finally:
        t.close()


def peers(pg: Any, n: int) -> tuple[float, float]:
    import sqlalchemy as sa

    from headrace._db import create_engine

    db = pg.create_database("sink_peer")
    ddl = "CREATE TABLE {t} (id bigint PRIMARY KEY, customer text, amount bigint, score double precision, note text)"
    data = rows(n)
    engine = create_engine(pg.url(db))
    with engine.begin() as c:
        c.execute(sa.text(ddl.format(t="ins")))
        c.execute(sa.text(ddl.format(t="cp")))
    engine.dispose()
    from psycopg2.extras import execute_values

    with contextlib.closing(pg.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        execute_values(cur, "INSERT INTO ins VALUES %s", data, page_size=1000)
        conn.commit()
        insert_s = time.perf_counter() - t0
    buf = io.StringIO()
    csv.writer(buf).writerows(("" if v is None else v for v in r) for r in data)
    with contextlib.closing(pg.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
        t0 = time.perf_counter()
        buf.seek(0)
        cur.copy_expert("COPY cp FROM STDIN WITH (FORMAT csv)", buf)
        conn.commit()
        copy_s = time.perf_counter() - t0
    return insert_s, copy_s


def main() -> None:
    from db_servers import PgServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--window-rows", type=int, default=100)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="headrace-sink-bench-", dir="/tmp"))
    pg = PgServer(Path(tempfile.mkdtemp(prefix="headrace-sink-bench-pg-", dir="/tmp")))
    pg.init()
    pg.start()
    try:
        n = args.rows
        e2e = end_to_end(pg, root, n, args.window_rows)
        tgt = target_only(pg, n, args.window_rows)
        insert_s, copy_s = peers(pg, n)
        result = {
            "rows": n,
            "rows_per_window": args.window_rows,
            "cpus": os.cpu_count(),
            "postgres": pg.execute("SHOW server_version")[0][0],
            "sink_end_to_end_seconds": round(e2e, 2),
            "sink_end_to_end_rows_per_s": round(n / e2e),
            "sink_target_only_rows_per_s": round(n / tgt),
            "peer_execute_values_insert_rows_per_s": round(n / insert_s),
            "peer_copy_csv_rows_per_s": round(n / copy_s),
            "ratio_end_to_end_vs_copy": round(copy_s / e2e, 3),
            "ratio_target_vs_insert": round(insert_s / tgt, 3),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
        write_result("sink_sql", result)
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    main()
