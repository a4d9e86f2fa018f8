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
   the client;
3. the same table in SQLite (a file) and, when ``mariadbd`` is installed, in a private MariaDB
   (``--others``, on by default): ``run_export`` (these go through the reference path: SQLAlchemy rows
   → Arrow) against the driver's own plain read of the same ``SELECT`` (``sqlite3`` and PyMySQL's
   unbuffered cursor, ``fetchmany`` of ``batch_rows`` until done: the Python tuples a driver hands to
   any consumer, the ceiling of a row-at-a-time export).

The fastest of ``--repeat`` runs of each is kept. Results go to ``bench/results/export_postgres.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


SQLITE_SCHEMA = """
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount NUMERIC(12, 2), score DOUBLE, paid BOOLEAN,
    placed DATE, updated DATETIME, note TEXT
);
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows})
INSERT INTO orders
SELECT g, 'customer ' || (g % 5000), round(g * 1.25, 2), g / 7.0, g % 2 = 0,
       date('2020-01-01', '+' || (g % 2000) || ' days'), datetime('2020-01-01', '+' || g || ' seconds'),
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
FROM s;
"""

MARIADB_SCHEMA = [
    """CREATE TABLE orders (
        id bigint PRIMARY KEY, customer varchar(64) NOT NULL, amount decimal(12, 2), score double, paid boolean,
        placed date, updated datetime(6), note text
    )""",
    """INSERT INTO orders
    SELECT seq, concat('customer ', seq % 5000), seq * 1.25, seq / 7.0, seq % 2 = 0,
           date '2020-01-01' + interval (seq % 2000) day, timestamp '2020-01-01 00:00:00' + interval seq second,
           CASE WHEN seq % 3 = 0 THEN NULL ELSE concat('note ', seq) END
    FROM seq_1_to_{rows}""",
]

SELECT_ALL = "SELECT * FROM orders ORDER BY id"
BATCH_ROWS = 50_000  # ExportConfig's default batch_rows: the peers fetch as many rows per call


def _best(repeat: int, run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def _drain(cur: Any) -> int:
    n = 0
    while rows := cur.fetchmany(BATCH_ROWS):
        n += len(rows)
    return n


def _export_once(url: str, out: Path, rows: int) -> None:
    from headrace.batch import ExportConfig, run_export

    summary = run_export(ExportConfig(url=url, output=str(out)))
    assert summary.ok and summary.records == rows, summary.line()
    shutil.rmtree(out)


def _others(root: Path, rows: int, repeat: int) -> dict[str, Any]:
    """SQLite and (when installed) MariaDB: headrace's export against the driver's plain read."""
    out: dict[str, Any] = {}
    path = root / "orders.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(SQLITE_SCHEMA.format(rows=rows))

    def sqlite_read() -> None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert _drain(db.execute(SELECT_ALL)) == rows

    exp = _best(repeat, lambda: _export_once(f"sqlite:///{path}", root / "sqlite-out", rows))
    peer = _best(repeat, sqlite_read)
    out |= {"sqlite_export_rows_per_s": round(rows / exp), "peer_sqlite3_rows_per_s": round(rows / peer)}
    if shutil.which("mariadbd") is None:
        out["mariadb"] = "skipped: mariadbd is not installed"
        return out
    import pymysql
    from db_servers import MariaDbServer

    maria = MariaDbServer(Path(tempfile.mkdtemp(prefix="headrace-export-bench-maria-", dir="/tmp")))
    maria.init()
    maria.start()
    try:
        db_name = maria.create_database("bench")
        with contextlib.closing(maria.connect(db_name)) as conn, conn.cursor() as cur:
            for sql in MARIADB_SCHEMA:
                cur.execute(sql.format(rows=rows))

        def mariadb_read() -> None:
            conn = pymysql.connect(
                host="127.0.0.1", port=maria.port, user="root", database=db_name, cursorclass=pymysql.cursors.SSCursor
            )
            with contextlib.closing(conn), conn.cursor() as cur:
                cur.execute(SELECT_ALL)
                assert _drain(cur) == rows

        exp = _best(repeat, lambda: _export_once(maria.url(db_name), root / "maria-out", rows))
        peer = _best(repeat, mariadb_read)
        out |= {
            "mariadb": maria.execute("SELECT version()")[0][0],
            "mariadb_export_rows_per_s": round(rows / exp),
            "peer_pymysql_rows_per_s": round(rows / peer),
        }
    finally:
        maria.stop()
        shutil.rmtree(maria.root, ignore_errors=True)
    return out


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
    ap.add_argument("--others", action=argparse.BooleanOptionalAction, default=True, help="SQLite and MariaDB too")
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
        if args.others:
            result |= _others(root, args.rows, args.repeat)
        print(json.dumps(result, indent=2))
        write_result("export_postgres", result)
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


if __name__ == "__main__":
    main()
