"""Demux against DuckDB: lines/s from log lines to Parquet, on realistic data with 0.1 % bad lines.

For each processor (``combined``, ``json``, ``syslog``) the same generated lines go

* through headrace: sink files → ``run_archive`` (zstandard) → ``run_demux`` → Parquet (+ ``_errors``);
  the clock covers ``run_demux`` only, as in bench/bench_demux.py;
* through DuckDB (the peer a user would pick): the lines as a plain text file →
  ``COPY (SELECT … regexp_extract(…) …) TO 'x.parquet'`` (combined, syslog) or
  ``read_json(…, ignore_errors = true)`` → Parquet (JSON), with the bad lines left out.

DuckDB reads plain text, headrace its own Avro archive (DuckDB has no reader for it without an
extension download): each side reads its natural input. The two are interleaved (A B A B) ``--repeat``
times and each keeps its fastest run. Both must account for every line: headrace's good rows +
error rows must equal the lines generated, and so must the lines DuckDB's line reader sees (its
rows + the lines it left out); a bad line that became a row anyway is counted as
``bad_accepted`` (a correctness finding, reported, not a completeness failure).

Data: varied time zones, user agents, paths, '-' users, sizes and referers (combined); objects with
optional and mixed-type fields (JSON); varied RFC 3164 programs and messages (syslog); 0.1 % bad lines
(truncated lines, stray text, broken JSON). ``--clean`` also runs the JSON case without the bad lines.

    PYTHONPATH=.:tests python bench/demux_duckdb.py [--lines 1000000] [--others 500000] [--repeat 3]
        [--only combined|json|syslog ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from _result import write_result  # bench/ is sys.path[0] when run as a script
from bench_demux import make_archive
from wire_compression import AGENTS, ERRORS, PATHS, SYSLOG, WORDS, _fill, _ip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headrace.batch._config import DemuxConfig, DemuxType
from headrace.batch._demux import run_demux

ZONES = ["+0000", "-0500", "-0800", "+0100", "+0200", "+0530", "+0900", "+1000", "-0330", "+1245"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
REFERERS = ["-", "https://shop.example.com/", "https://www.google.com/search?q=shoes", "android-app://com.x/"]


def _combined(i: int, rng: random.Random) -> str:
    user = rng.choice(["-", "-", "-", "frank", "alice", "svc-batch"])
    ts = f"{rng.randrange(1, 29):02d}/{rng.choice(MONTHS)}/2026:{rng.randrange(24):02d}:{rng.randrange(60):02d}:" + (
        f"{rng.randrange(60):02d} {rng.choice(ZONES)}"
    )
    method = rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD"])
    status = rng.choice([200, 200, 200, 201, 204, 301, 304, 404, 500, 503])
    size = "-" if status in (204, 304) or rng.random() < 0.05 else str(rng.randrange(0, 500_000))
    return (
        f'{_ip(rng)} - {user} [{ts}] "{method} {_fill(rng.choice(PATHS), rng)} HTTP/1.1" {status} {size} '
        f'"{rng.choice(REFERERS)}" "{rng.choice(AGENTS)}"'
    )


def _json(i: int, rng: random.Random) -> str:
    rec: dict[str, Any] = {
        "ts": f"2026-10-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.{i % 1000:03d}Z",
        "level": rng.choice(["info", "info", "info", "debug", "warn", "error"]),
        "logger": rng.choice(["shop.api", "shop.payments", "shop.cache", "shop.db", "shop.auth"]),
        "msg": rng.choice(["order placed", "cache miss", "slow query", "user login", "retrying upstream call"]),
        "n": i,
    }
    if rng.random() < 0.5:  # optional fields
        rec["user_id"] = rng.randrange(1, 10**7)
    if rng.random() < 0.3:
        rec["ms"] = round(rng.expovariate(0.01), 2)
    if rng.random() < 0.1:
        rec["error"] = rng.choice(ERRORS)
    if rng.random() < 0.2:  # mixed type: a number, sometimes a string
        rec["order"] = rng.randrange(10**6) if rng.random() < 0.9 else f"ord-{rng.randrange(10**6)}"
    if rng.random() < 0.05:
        rec["tags"] = rng.sample(WORDS, 2)
    return json.dumps(rec)


def _syslog(i: int, rng: random.Random) -> str:
    body = _fill(rng.choice(SYSLOG), rng)
    return f"<{rng.randrange(8, 192)}>{rng.choice(MONTHS)} {rng.randrange(1, 29):2d} {rng.randrange(24):02d}:" + (
        f"{rng.randrange(60):02d}:{rng.randrange(60):02d} web-{rng.randrange(1, 40):02d} {body}"
    )


GEN = {"combined": _combined, "json": _json, "syslog": _syslog}


def gen_lines(kind: str, n: int, bad_fraction: float, seed: int = 42) -> tuple[list[bytes], int]:
    """``n`` lines of ``kind``, about ``bad_fraction`` of them bad (truncated, stray text); (lines, bad count)."""
    rng = random.Random(seed)
    out, bad = [], 0
    for i in range(n):
        line = GEN[kind](i, rng)
        if rng.random() < bad_fraction:
            bad += 1
            if rng.random() < 0.8:  # a line cut short (a torn write, a truncated copy)
                line = line[: rng.randrange(10, max(11, len(line) - 5))].rstrip()
            else:
                line = rng.choice(["-- MARK --", "panic: runtime error", "Segmentation fault (core dumped)"])
        out.append(line.encode() + b"\n")
    return out, bad


COMBINED_SQL = r"""
SELECT s.host, s.ident, NULLIF(s.usr, '-') AS user,
       strptime(s.time, '%d/%b/%Y:%H:%M:%S %z') AS time,
       s.method, s.path, s.protocol, CAST(s.status AS SMALLINT) AS status,
       TRY_CAST(NULLIF(s.size, '-') AS BIGINT) AS size, NULLIF(s.referer, '-') AS referer, s.agent
FROM (SELECT regexp_extract(line,
        '^(\S+) (\S+) (\S+) \[([^\]]+)\] "(\S+) (\S+) ([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$',
        ['host', 'ident', 'usr', 'time', 'method', 'path', 'protocol', 'status', 'size', 'referer', 'agent']) AS s
      FROM {src})
WHERE s.host <> ''
"""
SYSLOG_SQL = r"""
SELECT CAST(s.pri AS SMALLINT) AS pri,
       strptime('2026 ' || s.ts, '%Y %b %d %H:%M:%S') AS ts, s.host,
       NULLIF(s.app, '') AS app_name, NULLIF(s.pid, '') AS procid, s.msg
FROM (SELECT regexp_extract(line,
        '^<(\d{1,3})>([A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (\S+) ([^:\[\s]+)(?:\[(\d+)\])?: (.*)$',
        ['pri', 'ts', 'host', 'app', 'pid', 'msg']) AS s
      FROM {src})
WHERE s.host <> ''
"""


def _lines_source(path: Path) -> str:
    # one VARCHAR column per line: a delimiter and quote that never occur, no header, no type sniffing
    return (
        f"read_csv('{path}', columns = {{'line': 'VARCHAR'}}, header = false, delim = '\\x01', quote = '', "
        "escape = '', auto_detect = false, strict_mode = false)"
    )


def duckdb_query(kind: str, path: Path) -> str:
    if kind == "json":
        # ignore_errors turns a line that is not JSON into a row of NULLs: keep the rows that have the
        # field every good record has
        return (
            f"SELECT * FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true) "
            "WHERE ts IS NOT NULL"
        )
    sql = COMBINED_SQL if kind == "combined" else SYSLOG_SQL
    return sql.replace("{src}", _lines_source(path))


def duckdb_lines_read(text_file: Path) -> int:
    """How many lines DuckDB's line reader sees in ``text_file`` (the completeness check's denominator)."""
    got = duckdb.connect().execute(f"SELECT count(*) FROM {_lines_source(text_file)}").fetchone()
    assert got is not None
    return int(got[0])


def run_duckdb(kind: str, text_file: Path, out: Path, threads: int) -> tuple[int, float, float]:
    """DuckDB: the lines → Parquet (zstd); (rows written, wall s, CPU s of this process)."""
    con = duckdb.connect(config={"threads": threads})
    t0, c0 = time.perf_counter(), time.process_time()
    got = con.execute(f"COPY ({duckdb_query(kind, text_file)}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
    rows = got.fetchone()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    written = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()
    con.close()
    assert rows is not None and written is not None and rows[0] == written[0], (rows, written)
    return int(written[0]), secs, cpu


def run_headrace(kind: str, archive: Path, tables: Path) -> tuple[int, int, float, float]:
    """headrace demux of the archive; (good rows, error rows, wall s, CPU s)."""
    shutil.rmtree(tables, ignore_errors=True)
    cfg = DemuxConfig(archive_dir=str(archive), output=str(tables), types={kind: DemuxType(processor=kind)})
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_demux(cfg)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return summary.records, summary.errors, secs, cpu


def bench_kind(kind: str, n: int, bad_fraction: float, repeat: int, threads: int, label: str) -> dict[str, Any]:
    lines, bad = gen_lines(kind, n, bad_fraction)
    root = Path(tempfile.mkdtemp(prefix=f"bench-duckdb-{kind}-"))
    try:
        archive, _, _ = make_archive(root, kind, lines)
        text_file = root / f"{kind}.log"
        text_file.write_bytes(b"".join(lines))
        lines_read = duckdb_lines_read(text_file)
        best_h = best_d = (0, 0, float("inf"), float("inf"))
        for _ in range(repeat):  # interleaved: A B A B
            good, errs, s, c = run_headrace(kind, archive, root / "tables")
            if s < best_h[2]:
                best_h = (good, errs, s, c)
            rows, s, c = run_duckdb(kind, text_file, root / "duck.parquet", threads)
            if s < best_d[2]:
                best_d = (rows, lines_read - rows, s, c)
        h_good, h_err, h_s, h_c = best_h
        d_rows, d_rej, d_s, d_c = best_d
        r = {
            "lines": n,
            "bad_lines": bad,
            "headrace": {
                "rows": h_good,
                "errors": h_err,
                "accounted": h_good + h_err,
                "bad_accepted": h_good - (n - bad),
                "seconds": round(h_s, 3),
                "cpu_seconds": round(h_c, 3),
                "lines_per_s": round(n / h_s),
            },
            "duckdb": {
                "rows": d_rows,
                "rejected": d_rej,
                "accounted": d_rows + d_rej,
                "bad_accepted": d_rows - (n - bad),
                "seconds": round(d_s, 3),
                "cpu_seconds": round(d_c, 3),
                "lines_per_s": round(n / d_s),
            },
        }
        r["ratio"] = round(r["headrace"]["lines_per_s"] / r["duckdb"]["lines_per_s"], 3)
        print(
            f"{label:14s} {n:,} lines ({bad} bad): headrace {n / h_s:12,.0f} lines/s ({h_good} rows, {h_err} errors); "
            f"DuckDB {n / d_s:12,.0f} lines/s ({d_rows} rows); ratio {r['ratio']}",
            flush=True,
        )
        return r
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000, help="combined lines")
    ap.add_argument("--others", type=int, default=500_000, help="JSON and syslog lines")
    ap.add_argument("--bad", type=float, default=0.001, help="fraction of bad lines")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs of each; the fastest is kept")
    ap.add_argument("--clean", action="store_true", help="also JSON without bad lines")
    ap.add_argument("--duckdb-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", choices=list(GEN), action="append", help="only these formats (repeatable)")
    a = ap.parse_args()
    result: dict[str, Any] = {
        "duckdb_version": duckdb.__version__,
        "duckdb_threads": a.duckdb_threads,
        "demux_threads": DemuxConfig().threads,
        "load_average_1m_at_start": os.getloadavg()[0],
    }
    per: dict[str, Any] = {}
    for kind in a.only or list(GEN):
        n = a.lines if kind == "combined" else a.others
        per[kind] = bench_kind(kind, n, a.bad, a.repeat, a.duckdb_threads, kind)
    if a.clean and (not a.only or "json" in a.only):
        per["json_clean"] = bench_kind("json", a.others, 0.0, a.repeat, a.duckdb_threads, "json (no bad)")
    result["results"] = per
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    write_result("demux_duckdb", result)


if __name__ == "__main__":
    main()
