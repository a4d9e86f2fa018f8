"""Relay benchmark on PostgreSQL: headrace's relay + a subscriber vs PostgreSQL's own ``pg_recvlogical``.

Usage::

    PYTHONPATH=.:tests python bench/bench_relay_postgres.py [--txns 20000] [--rows 5] [--rate 1000] [--seconds 10]

It starts a private PostgreSQL 15 (``tests/db_servers.py``: ``wal_level=logical``, run as the
``postgres`` user in a temporary directory), and in one run, on the same generated workload:

1. creates a logical slot for ``pg_recvlogical`` and starts a ``headrace relay`` process (which
   creates its own slot on the same publication) with a subscriber (the client library, decoding
   every event to Python values) following it;
2. commits ``--txns`` transactions of ``--rows`` rows (server-side, as fast as PostgreSQL can);
   *relay*: events/s from the first commit to the subscriber's last delivery;
3. *ceiling*: ``pg_recvlogical --plugin=pgoutput`` then drains its slot, holding the same changes, up
   to the workload's end LSN into ``/dev/null`` (the server decodes every change; nothing is parsed
   on the client): events/s, and the relay's ratio to it;
4. *latency*: a writer commits one transaction every 1/``--rate`` s for ``--seconds`` while the relay
   and subscriber follow live; each row carries the wall-clock time taken just before its COMMIT;
   latency = delivery time − that time, p50 and p99.

Results are printed and written to ``bench/results/relay_postgres.json``.
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

from db_servers import PgServer

from headrace.relay.client import Subscriber


def _relay(tmp: Path, url: str, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"relay:\n  listen: 127.0.0.1:{port}\n  source: {url}\n  tables: [events]\n  state_dir: {tmp}/{name}-state\n"
        f"  buffer_bytes: 536870912\n  postgres: {{slot: {name}, publication: bench}}\n"
    )
    return start_until_healthy(["relay", "--config", str(cfg)], tmp / f"{name}.log", port, timeout=30)


def _follow(url: str, total: int) -> list[tuple[float, float]]:
    """(commit time, delivery time) per event until ``total`` events arrived."""
    sub = Subscriber([url], wait_ms=1000, max_bytes=8 << 20)
    out: list[tuple[float, float]] = []
    for w in sub.windows(idle_exit=120):
        now = time.time()
        out.extend((e.after["t_commit"], now) for e in w.events if e.after)
        if len(out) >= total:
            break
    sub.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--txns", type=int, default=20_000)
    ap.add_argument("--rows", type=int, default=5)
    ap.add_argument("--rate", type=float, default=1000.0, help="transactions/s in the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    args = ap.parse_args()
    if shutil.which("pg_recvlogical") is None:
        raise SystemExit("pg_recvlogical not found (Debian: postgresql-client)")
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-pg-"))
    pg = PgServer(Path(tempfile.mkdtemp(prefix="headrace-bench-pgdata-", dir="/tmp")))
    pg.init()
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, object] = {
        "txns": args.txns,
        "rows_per_txn": args.rows,
        "cpus": os.cpu_count(),
        "postgres": pg.execute("SHOW server_version")[0][0],
    }
    try:
        pg.execute(
            "CREATE TABLE events (id bigserial PRIMARY KEY, payload text, amount float8, t_commit float8); "
            "CREATE PUBLICATION bench FOR TABLE events"
        )
        url = pg.url()
        pg.execute("SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')")
        relay, rurl = _relay(tmp, url, "relay")  # creates its slot, then waits for changes
        procs.append(relay)
        total = args.txns * args.rows
        got: list[tuple[float, float]] = []
        follower = threading.Thread(target=lambda: got.extend(_follow(rurl, total)))
        follower.start()
        time.sleep(1.0)
        t0 = time.time()
        with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:  # autocommit: the DO block may COMMIT
            cur.execute(
                f"DO $$ BEGIN FOR i IN 1..{args.txns} LOOP "
                f"INSERT INTO events (payload, amount, t_commit) SELECT repeat('x', 64), i * 0.5, "
                f"extract(epoch FROM clock_timestamp()) FROM generate_series(1, {args.rows}); COMMIT; "
                "END LOOP; END $$"
            )
        results["workload_seconds"] = round(time.time() - t0, 2)
        end_lsn = pg.execute("SELECT pg_current_wal_lsn()::text")[0][0]

        # 1. the relay + a decoding subscriber, following the workload live: first commit → last delivery
        follower.join(900)
        relay_eps = total / (max(d for _, d in got) - t0)
        results["relay_subscriber_events_per_s"] = round(relay_eps)
        status = httpx.get(rurl + "/v1/status").json()
        results["relay_buffer_bytes_for_workload"] = status["bytes"]

        # 2. the ceiling: PostgreSQL decodes the same changes and streams them to pg_recvlogical
        t = time.perf_counter()
        subprocess.run(
            ["pg_recvlogical", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", "postgres",
             "--slot=ceiling", "--start", "--no-loop", f"--endpos={end_lsn}", "-f", "/dev/null",
             "-o", "proto_version=1", "-o", "publication_names=bench"],
            check=True, timeout=600,
        )  # fmt: skip
        ceiling = total / (time.perf_counter() - t)
        results["pg_recvlogical_events_per_s"] = round(ceiling)
        results["relay_vs_pg_recvlogical"] = round(relay_eps / ceiling, 3)

        # 3. latency at a fixed moderate rate, relay and subscriber following live
        n_lat = int(args.rate * args.seconds)
        lat_total = n_lat * args.rows
        delivered: list[tuple[float, float]] = []

        def follow() -> None:
            sub = Subscriber([rurl], start_scn=int(status["newest_scn"]), wait_ms=1000, max_bytes=1 << 20)
            for w in sub.windows(idle_exit=60):
                now = time.time()
                delivered.extend((e.after["t_commit"], now) for e in w.events if e.after)
                if len(delivered) >= lat_total:
                    break
            sub.close()

        f = threading.Thread(target=follow)
        f.start()
        time.sleep(0.5)
        conn = pg.connect(autocommit=False)
        cur = conn.cursor()
        start = time.time()
        for i in range(n_lat):
            delay = start + i / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            cur.execute(
                "INSERT INTO events (payload, amount, t_commit) SELECT repeat('y', 64), %s, %s "
                "FROM generate_series(1, %s)",
                (i * 0.5, now, args.rows),
            )
            conn.commit()
        results["latency_rate_achieved_txn_per_s"] = round(n_lat / (time.time() - start))
        conn.close()
        f.join(120)
        lat_ms = sorted((d - c) * 1000 for c, d in delivered)
        results["latency_rate_txn_per_s"] = args.rate
        results["latency_events"] = len(lat_ms)
        results["latency_ms_p50"] = round(statistics.median(lat_ms), 1)
        results["latency_ms_p99"] = round(lat_ms[int(len(lat_ms) * 0.99) - 1], 1)
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop("immediate")
        shutil.rmtree(pg.root, ignore_errors=True)
    results["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(results, indent=2))
    write_result("relay_postgres", results)


if __name__ == "__main__":
    main()
