"""PostgreSQL seeding benchmark: rows/s from a PostgreSQL table into the bootstrap snapshot store.

Usage::

    PYTHONPATH=. python bench/bootstrap_pg_seed.py [--rows 100000] [--page-rows 5000] [--profile]

Starts a private PostgreSQL (``tests/db_servers.py``; needs the server binaries), creates the typed
table of ``tests/test_bootstrap_postgres.py`` with ``--rows`` rows (plus 2,000 rows of a
composite-key table), creates the relay's slot and publication (as a relay start would), and runs
:func:`headrace.bootstrap._seed_pg.seed_postgres` into a SQLite store, in process. Prints rows/s
(and with ``--profile`` the top of a cProfile) and writes ``bench/results/bootstrap_pg_seed.json``.

Peer, in the same run on the same server: ``COPY (SELECT * FROM t) TO STDOUT (FORMAT binary)`` of both
tables through psycopg2 into a byte counter (nothing decoded): the rate at which PostgreSQL hands the
rows out, the ceiling for any seeding. Its row count is checked against ``count(*)``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _result import write_result  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


class _Discard:
    """A file-like sink for ``copy_expert`` that only counts the bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def main() -> None:
    from db_servers import PgServer
    from test_bootstrap_postgres import ROWS, SCHEMA

    from headrace.bootstrap._seed_pg import seed_postgres
    from headrace.bootstrap._store import Store
    from headrace.relay._config import PostgresSourceConfig, RelayConfig
    from headrace.relay.sources.postgres import PostgresSource

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--page-rows", type=int, default=5_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="headrace-pgseed-bench-", dir="/tmp"))
    pg = PgServer(root)
    pg.init()
    pg.start()
    try:
        db = pg.create_database("bench")
        pg.execute(SCHEMA.replace(f"generate_series(1, {ROWS})", f"generate_series(1, {args.rows})"), db)
        cfg = RelayConfig(
            source=pg.url(db), tables=["accounts", "lines"], postgres=PostgresSourceConfig(slot="r", publication="p")
        )
        src = PostgresSource(cfg)
        src.open()  # the relay's slot and publication, as a relay start creates them
        src.close()
        store = Store(f"sqlite:///{root}/boot.db")
        prof = cProfile.Profile()
        t0 = time.monotonic()
        if args.profile:
            prof.enable()
        state = seed_postgres(store, pg.url(db), None, args.page_rows, relay_slot="r", publication="p")
        prof.disable()
        seconds = time.monotonic() - t0
        store.close()
        sink = _Discard()
        with contextlib.closing(pg.connect(db)) as conn, conn.cursor() as cur:
            copied = 0
            t0 = time.monotonic()
            for table in ["accounts", "lines"]:
                cur.copy_expert(f"COPY (SELECT * FROM {table}) TO STDOUT WITH (FORMAT binary)", sink)
                copied += cur.rowcount
            copy_seconds = time.monotonic() - t0
            cur.execute("SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM lines)")
            table_rows = cur.fetchone()[0]
        result = {
            "rows": state["rows"],
            "seconds": round(seconds, 2),
            "rows_per_s": round(state["rows"] / seconds),
            "table_rows": table_rows,
            "peer_copy_binary_rows": copied,
            "peer_copy_binary_seconds": round(copy_seconds, 3),
            "peer_copy_binary_rows_per_s": round(copied / copy_seconds),
            "peer_copy_mb": round(sink.bytes / 1e6, 1),
        }
        print(json.dumps(result))
        write_result("bootstrap_pg_seed", result)
        if args.profile:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
