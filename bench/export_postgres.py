"""Export benchmark: rows/s from a PostgreSQL table into Parquet, against PostgreSQL's own COPY.

Usage::

    PYTHONPATH=$PWD:$PWD/tests python bench/export_postgres.py [--rows 1000000] [--repeat 2]

Starts a private PostgreSQL (``tests/db_servers.py``), fills a table of ``--rows`` rows with eight
common column types, and in the same run times:

1. *headrace*: ``run_export`` as configured by default (``export.reader: auto``: ADBC's PostgreSQL
   driver when ``adbc-driver-postgresql`` is installed, else the reference path), and
   *reference*: ``run_export`` with ``reader: sqlalchemy`` (SQLAlchemy, server-side cursor, typed
   Arrow columns, Parquet zstd); the two outputs must hold the same values;
2. *peer (ceiling)*: ``COPY (SELECT …) TO STDOUT`` in PostgreSQL's binary format through psycopg2
   into a discarding sink: the server reading and serialising the rows, nothing parsed or typed on
   the client.

The fastest of ``--repeat`` runs of each is kept. Results go to ``bench/results/export_postgres.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _result import write_result  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent

SCHEMA = """
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(12, 2), score double precision,
    paid boolean, placed date, updated timestamptz, note text
);
INSERT INTO orders
SELECT g, 'customer ' || (g % 5000), (g * 1.25)::numeric(12, 2), g / 7.0, g % 2 = 0,
       date '2020-01-01' + g % 2000, timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second',
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
FROM generate_series(1, {rows}) g;
"""


class _Discard:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def main() -> None:
    from db_servers import PgServer

    from headrace.batch import ExportConfig, read_export, run_export
    from headrace.batch._export_adbc import adbc_available

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="headrace-export-bench-", dir="/tmp"))
    pg = PgServer(Path(tempfile.mkdtemp(prefix="headrace-export-bench-pg-", dir="/tmp")))
    pg.init()
    pg.start()
    try:
        db = pg.create_database("bench")
        with contextlib.closing(pg.connect(db)) as conn, conn.cursor() as cur:
            cur.execute(SCHEMA.format(rows=args.rows))
            cur.execute("VACUUM ANALYZE orders")
        best = ref = peer = float("inf")
        parquet_bytes = copy_bytes = 0
        agree = True
        for i in range(args.repeat):
            out, ref_out = root / f"out{i}", root / f"ref{i}"
            t0 = time.perf_counter()
            summary = run_export(ExportConfig(url=pg.url(db), output=str(out)))
            best = min(best, time.perf_counter() - t0)
            assert summary.ok and summary.records == args.rows, summary.line()
            parquet_bytes = summary.bytes
            t0 = time.perf_counter()
            summary = run_export(ExportConfig(url=pg.url(db), output=str(ref_out), reader="sqlalchemy"))
            ref = min(ref, time.perf_counter() - t0)
            assert summary.ok and summary.records == args.rows, summary.line()
            agree = agree and read_export(str(out), "orders").equals(read_export(str(ref_out), "orders"))
            shutil.rmtree(out)
            shutil.rmtree(ref_out)
            sink = _Discard()
            with contextlib.closing(pg.connect(db)) as conn, conn.cursor() as cur:
                t0 = time.perf_counter()
                cur.copy_expert("COPY (SELECT * FROM orders ORDER BY id) TO STDOUT WITH (FORMAT binary)", sink)
                peer = min(peer, time.perf_counter() - t0)
            copy_bytes = sink.bytes
        result = {
            "rows": args.rows,
            "cpus": os.cpu_count(),
            "postgres": pg.execute("SHOW server_version")[0][0],
            "headrace_export_seconds": round(best, 2),
            "headrace_export_rows_per_s": round(args.rows / best),
            "headrace_export_reader": "adbc" if adbc_available() else "sqlalchemy",
            "reference_export_seconds": round(ref, 2),
            "reference_export_rows_per_s": round(args.rows / ref),
            "paths_agree": agree,
            "parquet_mb": round(parquet_bytes / 1e6, 1),
            "peer_copy_binary_seconds": round(peer, 2),
            "peer_copy_binary_rows_per_s": round(args.rows / peer),
            "peer_copy_mb": round(copy_bytes / 1e6, 1),
            "ratio": round(peer / best, 3),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
        write_result("export_postgres", result)
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    main()
