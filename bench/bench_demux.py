"""Demux throughput: lines/s from an archive part to a Parquet file, per processor, against a peer.

The peer, measured in the same run on the same lines, is what one would write without Arrow: a plain
Python loop applying ``re`` to each line, converting fields in Python, then building an Arrow table and
writing the same Parquet file. headrace's path is the real one: ``run_demux`` reading the archive
(Avro, deflate) that ``run_archive`` built from sink files.

    PYTHONPATH=. python bench/bench_demux.py [--lines 1000000] [--repeat 3] [--only combined]
        [--threads N] [--batch-bytes N] [--out bench/results/demux.json]

Wall-clock rates on a shared machine depend on what else runs: the load average before and after is
recorded, CPU-seconds per line are reported next to wall time, and ``--repeat N`` keeps each
processor's fastest of N runs (the same archive demuxed again from scratch; the peer's too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from headrace._block_codecs import Codec
from headrace._chunk import SINK_SCHEMA, Chunk, chunk_to_record
from headrace.batch._archive import run_archive
from headrace.batch._config import ArchiveConfig, DemuxConfig, DemuxType
from headrace.batch._demux import run_demux

RECEIVED_MS = 1_795_000_000_000
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", "curl/8.4.0", "Mozilla/4.08 [en] (Win98; I ;Nav)"]


def gen_lines(kind: str, n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        if kind == "combined":
            user = "frank" if i % 3 else "-"
            line = (
                f"10.{i % 251}.{i % 13}.{i % 7} - {user} [10/Oct/2026:13:{i % 60:02d}:{i % 59:02d} +0000] "
                f'"GET /img/{rng.randrange(10000)}.gif?q={i} HTTP/1.1" {200 + (i % 5) * 100} {rng.randrange(100000)} '
                f'"http://www.example.com/p/{i % 100}" "{AGENTS[i % 3]}"'
            )
        elif kind == "json":
            line = json.dumps({"ts": f"2026-10-10T13:{i % 60:02d}:00Z", "level": "INFO", "n": i, "msg": f"event {i}"})
        elif kind == "syslog":
            line = (
                f"<{13 + i % 8}>Oct {1 + i % 28:2d} 13:{i % 60:02d}:00 host{i % 9} app[{i % 999}]: message number {i}"
            )
        else:
            line = f"2026-10-10T13:{i % 60:02d}:00Z INFO request {i} took {rng.randrange(1000)} ms"
        out.append(line.encode() + b"\n")
    return out


def make_archive(root: Path, kind: str, lines: list[bytes], codec: Codec = "zstandard") -> tuple[Path, float, float]:
    """Sink files of ``lines``, then the real archive builder over them: (archive dir, wall s, CPU s)."""
    done = root / "sink" / "done"
    done.mkdir(parents=True)
    schema = fastavro.parse_schema(SINK_SCHEMA)
    recs, pos, file_no = [], 0, 0
    for i in range(0, len(lines), 2000):  # ~300 KB chunks, 64 MB sink files
        data = b"".join(lines[i : i + 2000])
        recs.append(chunk_to_record(Chunk("bench", f"{kind}.log", kind, pos, pos + len(data), data), RECEIVED_MS))
        pos += len(data)
        if len(recs) == 200 or i + 2000 >= len(lines):
            with open(done / f"sink-{file_no:04d}.avro", "wb") as f:
                fastavro.writer(f, schema, recs)
            recs, file_no = [], file_no + 1
    cfg = ArchiveConfig(sink_dir=str(root / "sink"), archive_dir=str(root / "archive"), part_bytes=1 << 30, codec=codec)
    t0, c0 = time.perf_counter(), time.process_time()
    run_archive(cfg)
    return root / "archive", time.perf_counter() - t0, time.process_time() - c0


COMBINED_RE = re.compile(
    r"^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def peer_combined(lines: list[bytes], out: io.BytesIO) -> int:
    """The plain-Python peer: re per line, Python conversions, then an Arrow table and the same Parquet."""
    cols: dict[str, list[object]] = {k: [] for k in COMBINED_RE.groupindex}
    for raw in lines:
        m = COMBINED_RE.match(raw.decode().rstrip("\n"))
        if m is None:
            continue
        for k, v in m.groupdict().items():
            cols[k].append(v)
    seen: dict[object, dt.datetime] = {}  # the usual trick: parse each distinct time once
    cols["time"] = [
        seen.get(t) or seen.setdefault(t, dt.datetime.strptime(t, "%d/%b/%Y:%H:%M:%S %z")) for t in cols["time"]
    ]  # type: ignore[arg-type]
    cols["status"] = [int(s) for s in cols["status"]]  # type: ignore[call-overload]
    cols["size"] = [None if s == "-" else int(s) for s in cols["size"]]  # type: ignore[call-overload]
    table = pa.table(cols)
    pq.write_table(table, out, compression="zstd")
    return table.num_rows


SPECS = {
    "combined": DemuxType(processor="combined"),
    "json": DemuxType(processor="json"),
    "syslog": DemuxType(processor="syslog"),
    "regex": DemuxType.model_validate(
        {"processor": "regex", "pattern": r"(?P<ts>\S+) (?P<level>\w+) (?P<msg>.*)", "types": {"ts": "timestamp"}}
    ),
    "raw": DemuxType(processor="raw"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--others", type=int, default=300_000, help="lines for the non-combined processors")
    ap.add_argument("--repeat", type=int, default=1, help="demux runs per processor; the fastest is kept")
    ap.add_argument("--only", action="append", choices=list(SPECS), help="processors to run (default: all)")
    ap.add_argument("--threads", type=int, default=DemuxConfig().threads, help="demux.threads")
    ap.add_argument("--batch-bytes", type=int, default=DemuxConfig().batch_bytes, help="demux.batch_bytes")
    ap.add_argument("--out", default="bench/results/demux.json")
    args = ap.parse_args()
    rng = random.Random(42)
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"pyarrow {pa.__version__}",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "load_average_1m_at_start": os.getloadavg()[0],
    }
    per: dict[str, dict[str, float]] = {}
    for kind in args.only or list(SPECS):
        n = args.lines if kind == "combined" else args.others
        lines = gen_lines(kind, n, rng)
        root = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        try:
            archive, asecs, acpu = make_archive(root, kind, lines)
            mb = sum(map(len, lines)) / 1e6
            archive_rates = {"zstandard": (mb / asecs, n / asecs, acpu)}
            if kind == "combined":  # the archive builder with the previous default codec, for comparison
                _, dsecs, dcpu = make_archive(root / "deflate", kind, lines, "deflate")
                archive_rates["deflate"] = (mb / dsecs, n / dsecs, dcpu)
            for codec, (mbs, lps, c) in archive_rates.items():
                print(f"{kind:9s} archive build ({codec}): {mbs:8,.1f} MB/s, {lps:12,.0f} lines/s ({c:.2f} s CPU)")
                per[f"{kind}_archive_{codec}"] = {
                    "lines": n,
                    "mb_per_s": round(mbs, 1),
                    "lines_per_s": round(lps),
                    "cpu_seconds": round(c, 3),
                }
            secs = cpu = float("inf")
            for _ in range(args.repeat):
                shutil.rmtree(root / "tables", ignore_errors=True)
                cfg = DemuxConfig(
                    archive_dir=str(archive),
                    output=str(root / "tables"),
                    types={kind: SPECS[kind]},
                    threads=args.threads,
                    batch_bytes=args.batch_bytes,
                )
                t0, c0 = time.perf_counter(), time.process_time()
                summary = run_demux(cfg)
                s_, c_ = time.perf_counter() - t0, time.process_time() - c0
                assert summary.ok and summary.records == n and summary.errors == 0, summary.line()
                if s_ < secs:
                    secs, cpu = s_, c_
            per[kind] = {
                "lines": n,
                "seconds": round(secs, 3),
                "cpu_seconds": round(cpu, 3),
                "lines_per_s": round(n / secs),
                "lines_per_cpu_s": round(n / cpu),
                "cpu_us_per_line": round(cpu / n * 1e6, 2),
            }
            print(
                f"{kind:9s} headrace demux: {n / secs:12,.0f} lines/s ({n:,} lines in {secs:.2f} s wall, "
                f"{cpu:.2f} s CPU: {n / cpu:,.0f} lines per CPU-second)",
                flush=True,
            )
            if kind == "combined":
                psecs = pcpu = float("inf")
                for _ in range(args.repeat):
                    t0, c0 = time.perf_counter(), time.process_time()
                    rows = peer_combined(lines, io.BytesIO())
                    s_, c_ = time.perf_counter() - t0, time.process_time() - c0
                    assert rows == n
                    if s_ < psecs:
                        psecs, pcpu = s_, c_
                per["combined_peer_python_re"] = {
                    "lines": n,
                    "seconds": round(psecs, 3),
                    "cpu_seconds": round(pcpu, 3),
                    "lines_per_s": round(n / psecs),
                    "lines_per_cpu_s": round(n / pcpu),
                    "cpu_us_per_line": round(pcpu / n * 1e6, 2),
                }
                print(
                    f"{'':9s} peer (Python re loop + Parquet): {n / psecs:12,.0f} lines/s; "
                    f"headrace is {psecs / secs:.1f}x faster (wall), {pcpu / cpu:.1f}x (CPU)"
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    results["load_average_1m_at_end"] = os.getloadavg()[0]  # other work on the machine skews wall times
    results["results"] = per
    if "combined" in per:
        peer = per["combined_peer_python_re"]
        results["combined_speedup_vs_peer"] = round(peer["seconds"] / per["combined"]["seconds"], 2)
        results["combined_cpu_ratio_vs_peer"] = round(peer["cpu_seconds"] / per["combined"]["cpu_seconds"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
