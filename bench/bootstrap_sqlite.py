"""Bootstrap benchmark on SQLite: snapshot serving rate, and how long a new subscriber takes to reach the relay.

Usage::

    PYTHONPATH=. python bench/bootstrap_sqlite.py [--rows 1000000] [--write-sleep-ms 5]

In one run it creates a SQLite table of ``--rows`` rows, starts a relay and a bootstrap server (which
seeds its snapshot store from the table), keeps one writer process committing small transactions
throughout, and measures, side by side:

1. *peer (ceiling)*: reading the same table straight from SQLite with ``sqlite3`` (rows/s);
2. *seeding*: rows/s from the source into the snapshot store (the bootstrap server's own log line);
3. *snapshot serving*: rows/s of ``GET /v1/snapshot`` paged to the end by the client library's
   ``BootstrapClient.snapshot`` (frames parsed into events, rows not decoded); the same pages fetched
   with plain ``httpx`` and counted by their ``X-Headrace-Rows`` header (the server alone:
   ``snapshot_server_only_rows_per_s``); and rows/s decoded by the client library (serving + decoding);
4. *new subscriber → relay*: a ``Subscriber(from_snapshot=True)`` with a no-op consumer, from start to
   ``on_end_bootstrap`` (snapshot, catch-up, back on the relay), in seconds.

Results are printed and written to ``bench/results/bootstrap_sqlite.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from _procs import free_port
from _result import write_result  # bench/ is sys.path[0] when run as a script

from headrace.relay.client import BootstrapClient, Checkpoint, Consumer, Subscriber, Window

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import bootstrap_workload as wl  # noqa: E402


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


class Counter(Consumer):
    def __init__(self) -> None:
        self.rows = 0
        self.events = 0
        self.started = self.snapshot_done = self.ended = 0.0

    def on_start_bootstrap(self, checkpoint: Checkpoint) -> None:
        self.started = time.monotonic()

    def on_end_window(self, window: Window) -> None:
        for e in window.events:
            self.rows += e.op.value == "r"
            self.events += 1

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        if checkpoint.phase == "catchup" and not self.snapshot_done:
            self.snapshot_done = time.monotonic()

    def on_end_bootstrap(self, checkpoint: Checkpoint) -> None:
        self.ended = time.monotonic()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--write-sleep-ms", type=int, default=5, help="writer pause per transaction; -1: no writer")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-bootstrap-"))
    db = tmp / "src.db"
    t0 = time.monotonic()
    wl.create(db, args.rows)
    print(f"created {args.rows} rows in {time.monotonic() - t0:.1f}s under {tmp}")

    conn = sqlite3.connect(db)
    t0 = time.monotonic()
    n = sum(1 for _ in conn.execute("SELECT * FROM accounts"))
    peer = n / (time.monotonic() - t0)
    conn.close()

    relay = f"127.0.0.1:{free_port()}"
    boot = f"127.0.0.1:{free_port()}"
    cfg = tmp / "headrace.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "relay": {
                    "listen": relay,
                    "source": f"sqlite:///{db}",
                    "state_dir": str(tmp / "relay"),
                    "durable_consumers": ["bootstrap"],
                    "sqlite": {"retention_seconds": None},
                },
                "bootstrap": {
                    "listen": boot,
                    "relays": [f"http://{relay}"],
                    "store": f"sqlite:///{tmp / 'boot.db'}",
                    "seed": f"sqlite:///{db}",
                },
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for cmd, url in (("relay", relay), ("bootstrap", boot)):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "headrace", cmd, "--config", str(cfg), "--log-format", "json"],
                stderr=open(tmp / f"{cmd}.log", "wb"),  # noqa: SIM115
                env=env,
            )
        )
        wait(lambda u=url: httpx.get(f"http://{u}/healthz").status_code == 200, 60, f"{cmd} to start")
    stop_file = tmp / "stop"
    writer = (
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "bootstrap_workload.py"),
                str(db),
                "7",
                str(stop_file),
                str(args.write_sleep_ms),
            ],
            stdout=subprocess.PIPE,
        )
        if args.write_sleep_ms >= 0
        else None
    )
    try:
        t0 = time.monotonic()
        wait(lambda: httpx.get(f"http://{boot}/v1/status").json()["snapshot_ready"], 3600, "the seed")
        seed_s = time.monotonic() - t0

        client = BootstrapClient(f"http://{boot}", timeout=60)
        t0 = time.monotonic()
        served = 0
        after = None
        while True:
            page = client.snapshot(None, None, after, 10_000)
            served += len(page.events)
            after = page.cursor
            if page.done:
                break
        serve_rate = served / (time.monotonic() - t0)
        client.close()

        # the server alone: the same pages over one HTTP connection, frames counted by their header,
        # not decoded (the client library's frame decoding is part of the rate above)
        with httpx.Client(base_url=f"http://{boot}", timeout=60) as raw:
            t0 = time.monotonic()
            raw_rows = raw_bytes = 0
            params: dict[str, Any] = {"limit": 10_000}
            while True:
                r = raw.get("/v1/snapshot", params=params)
                r.raise_for_status()
                raw_rows += int(r.headers["x-headrace-rows"])
                raw_bytes += len(r.content)
                if r.headers["x-headrace-done"] == "1":
                    break
                params = {"limit": 10_000, "after": r.headers["x-headrace-cursor"]}
            raw_rate = raw_rows / (time.monotonic() - t0)

        consumer = Counter()
        sub = Subscriber([f"http://{relay}"], bootstrap=[f"http://{boot}"], from_snapshot=True, wait_ms=1000)
        t0 = time.monotonic()

        def watcher() -> None:  # stop the subscriber once it is back on the relay
            while not consumer.ended:
                time.sleep(0.05)
            sub.stop()

        threading.Thread(target=watcher, daemon=True).start()
        sub.run(consumer)
        sub.close()
        to_relay = consumer.ended - t0
        decode_rate = consumer.rows / (consumer.snapshot_done - t0)
    finally:
        stop_file.touch()
        writes = int(writer.communicate(timeout=60)[0] or 0) if writer is not None else 0
        for p in procs:
            p.terminate()
            p.wait(60)
    result = {
        "rows": args.rows,
        "peer_sqlite_read_rows_per_s": round(peer),
        "seed_seconds": round(seed_s, 1),
        "seed_rows_per_s": round(args.rows / seed_s),
        "snapshot_serving_rows_per_s": round(serve_rate),
        "snapshot_served_rows": served,
        "snapshot_server_only_rows_per_s": round(raw_rate),
        "snapshot_server_only_rows": raw_rows,
        "snapshot_server_only_mb": round(raw_bytes / 1e6, 1),
        "snapshot_decoded_rows_per_s": round(decode_rate),
        "new_subscriber_to_relay_seconds": round(to_relay, 1),
        "subscriber_events": consumer.events,
        "writer_transactions_during_run": writes,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    write_result("bootstrap_sqlite", result)


if __name__ == "__main__":
    main()
