"""Relay benchmark on MariaDB: headrace's relay + a subscriber vs MariaDB's own ``mariadb-binlog``.

Usage::

    PYTHONPATH=$PWD:$PWD/tests python bench/bench_relay_mysql.py [--txns 20000] [--rows 5] [--rate 200] [--seconds 10]

It starts a private MariaDB (``tests/db_servers.py``: row binlog, full row image and metadata) and,
in one run, on the same generated workload:

1. starts a ``headrace relay`` process on the binlog with a subscriber (the client library, decoding
   every event to Python values) following it, then commits ``--txns`` transactions of ``--rows``
   rows (one INSERT each) from a stored procedure (as fast as the server can); *relay*: events/s from the first commit
   to the subscriber's last delivery;
2. *peer (ceiling)*: ``mariadb-binlog --read-from-remote-server`` reads the same stretch of the binlog
   from the server into ``/dev/null`` (the replication protocol and event framing; row images are
   left base64-encoded, not decoded): events/s, and the relay's ratio to it;
3. *latency*: a writer commits one transaction every 1/``--rate`` s for ``--seconds`` while the relay
   and subscriber follow live; each row carries the wall-clock time taken just before its COMMIT.

Results are printed and written to ``bench/results/relay_mysql.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _procs import free_port, start_until_healthy
from _result import write_result  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from db_servers import MariaDbServer

from headrace.relay.client import Subscriber

# one INSERT of ``rows`` rows per transaction (MariaDB's sequence engine), like the PostgreSQL bench
PROCEDURE = """
CREATE PROCEDURE workload(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  WHILE i < n DO
    START TRANSACTION;
    INSERT INTO events (payload, amount, t_commit)
      SELECT REPEAT('x', 64), i * 0.5, UNIX_TIMESTAMP(NOW(6)) FROM seq_1_to_{rows};
    COMMIT;
    SET i = i + 1;
  END WHILE;
END
"""


def _relay(tmp: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / "relay.yaml"
    cfg.write_text(
        f"relay:\n  listen: 127.0.0.1:{port}\n  source: {url}\n  tables: [events]\n  state_dir: {tmp}/state\n"
        "  buffer_bytes: 536870912\n  mysql: {server_id: 4242, start: current}\n"
    )
    return start_until_healthy(["relay", "--config", str(cfg)], tmp / "relay.log", port, timeout=30)


def _follow(url: str, total: int, start_scn: int = 0) -> list[tuple[float, float]]:
    """(commit time, delivery time) per event until ``total`` events arrived."""
    sub = Subscriber([url], start_scn=start_scn, wait_ms=1000, max_bytes=8 << 20)
    out: list[tuple[float, float]] = []
    for w in sub.windows(idle_exit=120):
        now = time.time()
        out.extend((e.after["t_commit"], now) for e in w.events if e.after)
        if len(out) >= total:
            break
    sub.close()
    return out


def _binlog_position(db: MariaDbServer) -> tuple[str, int]:
    row = db.execute("SHOW MASTER STATUS")[0]
    return str(row[0]), int(row[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--txns", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--rate", type=float, default=200.0, help="transactions/s in the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    args = ap.parse_args()
    tool = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if tool is None:
        raise SystemExit("mariadb-binlog not found (Debian: mariadb-client)")
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-mysql-"))
    db = MariaDbServer(Path(tempfile.mkdtemp(prefix="headrace-bench-mariadb-", dir="/tmp")))
    db.init()
    db.start()
    relay: subprocess.Popen[bytes] | None = None
    results: dict[str, object] = {
        "txns": args.txns,
        "rows_per_txn": args.rows,
        "cpus": os.cpu_count(),
        "server": db.execute("SELECT VERSION()")[0][0],
    }
    try:
        db.create_database("bench")
        with contextlib.closing(db.connect("bench")) as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE events (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload TEXT, amount DOUBLE, "
                "t_commit DOUBLE)"
            )
            cur.execute(PROCEDURE.format(rows=args.rows))
        relay, rurl = _relay(tmp, db.url("bench"))
        total = args.txns * args.rows
        got: list[tuple[float, float]] = []
        since = int(httpx.get(rurl + "/v1/status").json()["newest_scn"])  # the binlog position it started at
        follower = threading.Thread(target=lambda: got.extend(_follow(rurl, total, since)))
        follower.start()
        time.sleep(1.0)
        first_file, first_pos = _binlog_position(db)
        t0 = time.time()
        with contextlib.closing(db.connect("bench")) as conn, conn.cursor() as cur:
            cur.execute("CALL workload(%s)", (args.txns,))
        results["workload_seconds"] = round(time.time() - t0, 2)
        last_file, last_pos = _binlog_position(db)

        # 1. the relay + a decoding subscriber, following the workload live: first commit → last delivery
        follower.join(900)
        relay_eps = total / (max(d for _, d in got) - t0)
        results["relay_subscriber_events_per_s"] = round(relay_eps)
        status = httpx.get(rurl + "/v1/status").json()

        # 2. the ceiling: the server streams the same binlog stretch to its own client tool
        files = [first_file] if first_file == last_file else [first_file, last_file]
        t = time.perf_counter()
        subprocess.run(
            [tool, "--read-from-remote-server", "--host=127.0.0.1", f"--port={db.port}", "--user=root",
             f"--start-position={first_pos}", f"--stop-position={last_pos}", *files],
            check=True, timeout=600, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        ceiling = total / (time.perf_counter() - t)
        results["mariadb_binlog_events_per_s"] = round(ceiling)
        results["relay_vs_mariadb_binlog"] = round(relay_eps / ceiling, 3)

        # 3. latency at a fixed moderate rate, relay and subscriber following live
        n_lat = int(args.rate * args.seconds)
        lat_total = n_lat * args.rows
        delivered: list[tuple[float, float]] = []
        f = threading.Thread(target=lambda: delivered.extend(_follow(rurl, lat_total, int(status["newest_scn"]))))
        f.start()
        time.sleep(0.5)
        with contextlib.closing(db.connect("bench", autocommit=False)) as conn, conn.cursor() as cur:
            start = time.time()
            for i in range(n_lat):
                delay = start + i / args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                now = time.time()
                cur.execute(
                    "INSERT INTO events (payload, amount, t_commit) SELECT REPEAT('y', 64), %s, %s "
                    f"FROM seq_1_to_{args.rows}",
                    (i * 0.5, now),
                )
                conn.commit()
        f.join(120)
        lat_ms = sorted((d - c) * 1000 for c, d in delivered)
        results["latency_rate_txn_per_s"] = args.rate
        results["latency_events"] = len(lat_ms)
        results["latency_ms_p50"] = round(statistics.median(lat_ms), 1)
        results["latency_ms_p99"] = round(lat_ms[int(len(lat_ms) * 0.99) - 1], 1)
        results["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    finally:
        if relay is not None:
            relay.terminate()
            try:
                relay.wait(30)
            except subprocess.TimeoutExpired:
                relay.kill()
        db.stop()
        shutil.rmtree(db.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    write_result("relay_mysql", results)


if __name__ == "__main__":
    main()
