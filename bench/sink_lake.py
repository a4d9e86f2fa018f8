"""``headrace sink`` (lake target) benchmark: events/s into Delta Lake tables, against one plain append.

Usage::

    PYTHONPATH=$PWD python bench/sink_lake.py [--events 100000] [--window-events 10] [--commit-events 10000]

In one run, on a local temporary folder:

1. *sink target*: ``--events`` decoded insert events in windows of ``--window-events``, committed by
   the sink's lake target in-process (``LakeSinkTarget.commit``: per commit one append to the change
   table, one MERGE into the current table, one append to the sink's log, each Delta commit with the
   checkpoint in its metadata), ``--commit-events`` events per commit;
2. *peer*: deltalake's ``write_deltalake`` of the same rows (the same columns and key) as one append
   to a fresh table: no MERGE, no change table, no checkpoint.

Checks: the current table and the change table each hold ``--events`` rows. Results go to
``bench/results/sink_lake.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import deltalake
    import pyarrow as pa

    from headrace.relay._event import Op
    from headrace.relay._schema import Column, ColumnType, TableMeta, avro_schema, schema_fingerprint
    from headrace.relay.client import ChangeEvent, Checkpoint, Window
    from headrace.sinks._config import LakeTarget
    from headrace.sinks._lake import LakeSinkTarget
    from headrace.sinks._plan import key_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--window-events", type=int, default=10)
    ap.add_argument("--commit-events", type=int, default=10_000)
    args = ap.parse_args()
    meta = TableMeta(
        "shop.orders",
        (
            Column("id", ColumnType("long"), nullable=False),
            Column("customer", ColumnType("string")),
            Column("amount", ColumnType("long")),
            Column("note", ColumnType("string")),
        ),
        key=("id",),
    )
    schema = avro_schema(meta)
    fp = schema_fingerprint(schema)
    n, per = args.events, args.window_events
    windows = []
    for s in range(n // per):
        evs = [
            ChangeEvent(s + 1, "shop.orders", Op.INSERT, [s * per + i], None,
                        {"id": s * per + i, "customer": f"customer {i}", "amount": s * 3, "note": "n" * 20},
                        1_700_000_000_000, i == per - 1, fp, 1)
            for i in range(per)
        ]  # fmt: skip
        windows.append(Window(s + 1, evs))
    root = Path(tempfile.mkdtemp(prefix="headrace-lake-bench-", dir="/tmp"))
    try:
        target = LakeSinkTarget(LakeTarget(type="lake", uri=str(root / "lake")), "bench")
        target.load()
        step = max(1, args.commit_events // per)
        commits = 0
        t0 = time.perf_counter()
        for i in range(0, len(windows), step):
            batch = windows[i : i + step]
            for w in batch:
                target.prepare(w, lambda _fp, _t: schema)
            target.commit(batch, Checkpoint(batch[-1].scn))
            commits += 1
        sink_s = time.perf_counter() - t0
        cur = deltalake.DeltaTable(str(root / "lake" / "current" / "shop_orders")).to_pyarrow_table().num_rows
        chg = deltalake.DeltaTable(str(root / "lake" / "changes" / "shop_orders")).to_pyarrow_table().num_rows

        rows = [e.after for w in windows for e in w.events]
        assert all(r is not None for r in rows)
        t0 = time.perf_counter()
        data = pa.table(
            {
                "_headrace_key": [key_text([r["id"]]) for r in rows if r],
                "id": pa.array([r["id"] for r in rows if r], pa.int64()),
                "customer": [r["customer"] for r in rows if r],
                "amount": pa.array([r["amount"] for r in rows if r], pa.int64()),
                "note": [r["note"] for r in rows if r],
            }
        )
        deltalake.write_deltalake(str(root / "peer"), data, mode="append")
        peer_s = time.perf_counter() - t0
        result = {
            "events": n,
            "events_per_window": per,
            "events_per_commit": step * per,
            "commits": commits,
            "current_rows": cur,
            "change_rows": chg,
            "cpus": os.cpu_count(),
            "deltalake": deltalake.__version__,
            "sink_target_events_per_s": round(n / sink_s),
            "peer_write_deltalake_events_per_s": round(n / peer_s),
            "ratio": round(peer_s / sink_s, 3),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
        write_result("sink_lake", result)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
