"""The json processor on one batch whose fields keep or change their types: CPU µs per line.

    PYTHONPATH=. python bench/bench_json_mixed.py [--lines 80000] [--repeat 3]

Three batches of the same size: every field of one type (the common case), 2 % of lines with a
string ``order`` among numbers, and ``order`` alternating number / string. Prints the best of
``--repeat`` runs of ``JsonProcessor.parse`` in process CPU time (Arrow's threads included) and
how many lines went to ``_errors`` (0: every valid line is a row).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import pyarrow as pa

from headrace.batch._lines import LineBatch
from headrace.batch._processors_json import JsonProcessor


def _batch(lines: list[str]) -> LineBatch:
    n = len(lines)
    origin = pa.array(["a"] * n).dictionary_encode()
    return LineBatch("t", dt.date(2026, 1, 2), pa.array(lines, pa.string()), origin, origin, pa.array(range(n)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=80_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    def line(i: int, order: object) -> str:
        ts = f"2026-10-10T13:{i % 60:02d}:00Z"
        return json.dumps({"ts": ts, "level": "INFO", "n": i, "order": order, "v": i / 7, "msg": f"event {i}"})

    cases = {
        "one type": [line(i, i) for i in range(a.lines)],
        "2 % string order": [line(i, f"ord-{i}" if i % 50 == 7 else i) for i in range(a.lines)],
        "order alternating": [line(i, str(i) if i % 2 else i) for i in range(a.lines)],
    }
    proc = JsonProcessor({})
    for name, lines in cases.items():
        batch = _batch(lines)
        best = float("inf")
        for _ in range(a.repeat):
            t = time.process_time()
            parsed = proc.parse(batch)
            best = min(best, time.process_time() - t)
        errors = len(parsed.reason) - parsed.reason.null_count
        print(f"{name:20} {best * 1e6 / a.lines:7.2f} CPU µs per line   errors {errors}")


if __name__ == "__main__":
    main()
