"""Relay benchmark on SQLite: events/s from commit to subscriber, and commit-to-delivery latency.

Usage::

    PYTHONPATH=. python bench/relay_sqlite.py [--txns 10000] [--rows 5] [--rate 200] [--seconds 10]

In one run, on the same generated workload, it measures:

1. *peer (ceiling)*: reading the same change log straight from SQLite (no decoding, encoding or HTTP);
2. *relay throughput*: a writer process commits ``--txns`` transactions of ``--rows`` rows as fast as it
   can while a subscriber (the client library, decoding every event) follows through a relay process;
   events/s = events / (first commit → last delivery). The writer's own commit rate is reported too
   (when the two are close, the writer was the bottleneck), and a second subscriber reads the same
   events back from the relay's buffer (serving + decoding alone);
3. *catch-up (capture alone, as the peer reads)*: the relay is stopped, the writer commits ``--txns``
   transactions, and the restarted relay reads that backlog into its buffer: events/s from its first
   progress until it holds the last change (no subscriber, so neither the writer's speed nor the
   client's decoding bounds it);
4. *latency*: the writer commits one transaction every 1/``--rate`` seconds for ``--seconds``; each row
   carries the wall-clock time just before its COMMIT; latency = delivery time − that time (p50/p99).

Results are printed and written to ``bench/results/relay_sqlite.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _procs import free_port, start_until_healthy
from _result import write_result  # bench/ is sys.path[0] when run as a script

from headrace.relay.client import Subscriber

WRITER = r"""
import sqlite3, sys, time
db, n, rows, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
c = sqlite3.connect(db, isolation_level=None, timeout=60)
c.execute("PRAGMA synchronous=NORMAL")
start = time.time()
for i in range(n):
    if rate:
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
    c.execute("BEGIN IMMEDIATE")
    now = time.time()
    c.executemany("INSERT INTO events (payload, amount, t_commit) VALUES (?, ?, ?)", [("x" * 64, i * 0.5, now)] * rows)
    c.execute("COMMIT")
"""


def _fresh_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT, amount REAL, t_commit REAL)")
    c.commit()
    c.close()


def _start_relay(tmp: Path, db: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A relay on ``db``; given the ``port`` of an earlier one, the same relay again (same state)."""
    port = port or free_port()
    cfg = tmp / f"relay-{port}.yaml"
    cfg.write_text(
        f"relay:\n  listen: 127.0.0.1:{port}\n  source: sqlite:///{db}\n  state_dir: {tmp}/state-{port}\n"
        "  sqlite: {poll_ms: 5}\n"
    )
    return start_until_healthy(["relay", "--config", str(cfg)], tmp / f"relay-{port}.log", port, timeout=20)


def _catch_up(tmp: Path, db: Path, relay: subprocess.Popen[bytes], url: str, n: int, rows: int) -> float:
    """Capture alone, as the peer reads: the relay is stopped, ``n`` transactions are committed, and the
    restarted relay reads that backlog. Events/s from the moment it answers ``/healthz`` until its
    buffer holds the last change (one SCN per row here; start-up before ``/healthz`` is not counted,
    whatever it reads before that is)."""
    resume = _newest(url)
    relay.terminate()
    relay.wait(30)
    _writer(db, n, rows, 0).wait()
    c = sqlite3.connect(db)
    end = c.execute("SELECT max(scn) FROM headrace_changes").fetchall()[0][0]
    c.close()
    relay2, _ = _start_relay(tmp, db, int(url.rsplit(":", 1)[1]))
    t0 = time.perf_counter()
    try:
        while _newest(url) < end:
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
    finally:
        relay2.terminate()
        relay2.wait(30)
    return (end - resume) / elapsed


def _writer(db: Path, n: int, rows: int, rate: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(n), str(rows), str(rate)])


def _follow(url: str, total: int, since: int) -> list[tuple[float, float]]:
    """(commit time, delivery time) per event until ``total`` events arrived."""
    sub = Subscriber([url], start_scn=since, wait_ms=1000, max_bytes=8 << 20)
    out: list[tuple[float, float]] = []
    for w in sub.windows(idle_exit=60):
        now = time.time()
        out.extend((e.after["t_commit"], now) for e in w.events if e.after)
        if len(out) >= total:
            break
    sub.close()
    return out


def _newest(url: str) -> int:
    return int(httpx.get(url + "/v1/status").json()["newest_scn"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--txns", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--rate", type=float, default=200.0, help="transactions/s in the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    db = tmp / "bench.db"
    _fresh_db(db)
    relay, url = _start_relay(tmp, db)
    results: dict[str, object] = {"txns": args.txns, "rows_per_txn": args.rows, "cpus": os.cpu_count()}
    try:
        # throughput through the relay
        total = args.txns * args.rows
        since = _newest(url)
        w = _writer(db, args.txns, args.rows, 0)
        got = _follow(url, total, since)
        t_end = max(d for _, d in got)
        w.wait()
        first_commit = min(c for c, _ in got)
        relay_eps = total / (t_end - first_commit)
        results["relay_events_per_s"] = round(relay_eps)
        results["writer_events_per_s"] = round(total / (max(c for c, _ in got) - first_commit))

        # serving alone: a second subscriber reads the same events back from the relay's buffer
        t = time.perf_counter()
        again = _follow(url, total, since)
        results["buffer_to_subscriber_events_per_s"] = round(len(again) / (time.perf_counter() - t))

        # peer: the same change log read straight from SQLite (the ceiling without encoding/HTTP)
        c = sqlite3.connect(db)
        t = time.perf_counter()
        n = 0
        last = 0
        while True:
            batch = c.execute(
                "SELECT scn, tbl, op, ts_ms, before, after FROM headrace_changes "
                "WHERE scn > ? ORDER BY scn LIMIT 10000",
                (last,),
            ).fetchall()
            if not batch:
                break
            for row in batch:
                json.loads(row[5])
            n += len(batch)
            last = batch[-1][0]
        peer_eps = n / (time.perf_counter() - t)
        results["peer_changelog_read_events_per_s"] = round(peer_eps)
        results["relay_vs_peer"] = round(relay_eps / peer_eps, 3)

        # capture alone: the relay catching up on a backlog it did not see committed
        catch_up = _catch_up(tmp, db, relay, url, args.txns, args.rows)
        results["relay_catch_up_events_per_s"] = round(catch_up)
        results["relay_catch_up_vs_peer"] = round(catch_up / peer_eps, 3)
        relay, url = _start_relay(tmp, db, int(url.rsplit(":", 1)[1]))
        c = sqlite3.connect(db)
        end = c.execute("SELECT max(scn) FROM headrace_changes").fetchall()[0][0]
        c.close()
        while _newest(url) < end:  # the restarted relay may re-read part of the backlog first
            time.sleep(0.01)

        # latency at a fixed moderate rate
        n_lat = int(args.rate * args.seconds)
        since = _newest(url)
        w = _writer(db, n_lat, 1, args.rate)
        got = _follow(url, n_lat, since)
        w.wait()
        lat = sorted((d - c) * 1000 for c, d in got)
        results["latency_rate_txn_per_s"] = args.rate
        results["latency_ms_p50"] = round(statistics.median(lat), 1)
        results["latency_ms_p99"] = round(lat[int(len(lat) * 0.99) - 1], 1)
    finally:
        relay.terminate()
        relay.wait(30)
    write_result("relay_sqlite", results)
    for k, v in results.items():
        print(f"{k:40} {v}")


if __name__ == "__main__":
    main()
