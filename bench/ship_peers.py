"""Log shipping against rsyslog and socat: MB/s of lines from files to the receiving side, every line checked.

For each line size (``--line-bytes``, default 100 and 1024) the same files (``--mb`` MB in ``--files``
files of realistic lines, each line carrying a unique id) are shipped, interleaved (A B C A B C …,
``--repeat`` rounds, the fastest of each kept):

* ``headrace``: a running ``headrace agent`` tails the folder the files are renamed into and ships to a
  running ``headrace collector``; the clock stops when ``/v1/status`` shows every byte acked (spooled
  with fsync, shipped, fsynced by the collector). Afterwards the collector's sink files are read back:
  every line must be there (count and an order-independent CRC sum).
* ``rsyslog``: two private ``rsyslogd`` processes, imfile (inotify) → omfwd (TCP, in-memory queue) in
  one, imtcp → omfile in the other (configs in bench/_peers.py); the clock stops when the output file
  holds every byte (then one fsync). rsyslog acks nothing end to end and fsyncs nothing by default.
* ``socat``: one ``socat -u OPEN:file TCP:…`` per file into one ``socat -u TCP-LISTEN:… CREATE:out`` per
  file (a plain copy, no tailing, no acks); the clock stops when every pair exited (then one fsync per
  output file).

CPU: agent + collector (rsyslog: both rsyslogd; socat: the socat processes) CPU seconds during the
transfer, from /proc/PID/stat (socat: wait4), reported as CPU-s per GB shipped.

    PYTHONPATH=.:tests python bench/ship_peers.py [--mb 200] [--files 20] [--line-bytes 100 --line-bytes 1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
from _peers import (
    agent_acked,
    agent_config,
    checksum,
    collector_config,
    file_lines,
    make_block,
    rsyslog_receiver_conf,
    rsyslog_sender_conf,
    rsyslog_version,
    start_rsyslogd,
    text_pool,
    wait_listening,
)
from _procs import cpu_seconds, die_with_parent, free_port, start_headrace, stop, wait_http
from _result import write_result  # bench/ is sys.path[0] when run as a script


def stage(tmp: Path, blocks: list[bytes]) -> Path:
    staging = tmp / "staging"
    staging.mkdir()
    for i, block in enumerate(blocks):
        (staging / f"f{i:03d}.log").write_bytes(block)
    return staging


def release(staging: Path, logs: Path) -> None:
    for p in sorted(staging.iterdir()):
        p.rename(logs / p.name)


def sink_lines(sink_dir: Path) -> Iterator[bytes]:
    """Every line in the collector's sink files, each stream's chunks put back in offset order."""
    streams: dict[str, dict[int, bytes]] = {}
    for path in sorted(sink_dir.rglob("*.avro")):
        with open(path, "rb") as f:
            for rec in fastavro.reader(f):
                streams.setdefault(rec["stream"], {})[rec["seq_start"]] = rec["data"]  # type: ignore[call-overload,index]
    for chunks in streams.values():
        yield from b"".join(chunks[k] for k in sorted(chunks)).splitlines(keepends=True)


def run_headrace(tmp: Path, blocks: list[bytes], timeout: float) -> dict[str, Any]:
    total = sum(map(len, blocks))
    logs = tmp / "logs"
    logs.mkdir()
    staging = stage(tmp, blocks)
    cport, aport = free_port(), free_port()
    col = start_headrace(["collector", "--config", str(collector_config(tmp, cport))], tmp / "c.log")
    try:
        wait_http(f"http://127.0.0.1:{cport}/healthz")
        agent = start_headrace(
            ["agent", "--config", str(agent_config(tmp, aport, cport, str(logs / "*.log")))], tmp / "a.log"
        )
        try:
            wait_http(f"http://127.0.0.1:{aport}/healthz")
            c0 = cpu_seconds(agent.pid) + cpu_seconds(col.pid)
            t0 = time.monotonic()
            release(staging, logs)
            acked = 0
            while time.monotonic() - t0 < timeout:
                try:
                    streams, acked = agent_acked(aport)
                    if streams == len(blocks) and acked == total:
                        break
                except Exception:  # the status endpoint busy: ask again
                    pass
                time.sleep(0.05)
            secs = time.monotonic() - t0
            cpu = cpu_seconds(agent.pid) + cpu_seconds(col.pid) - c0
        finally:
            stop(agent)
    finally:
        stop(col)
    return {"bytes_done": acked, "seconds": secs, "cpu_s": cpu, "got": checksum(sink_lines(tmp / "sink"))}


def wait_bytes(path: Path, total: int, t0: float, timeout: float) -> int:
    size = 0
    while time.monotonic() - t0 < timeout:
        size = path.stat().st_size if path.exists() else 0
        if size >= total:
            break
        time.sleep(0.02)
    return size


def run_rsyslog(tmp: Path, blocks: list[bytes], timeout: float) -> dict[str, Any]:
    total = sum(map(len, blocks))
    logs = tmp / "logs"
    logs.mkdir()
    staging = stage(tmp, blocks)
    out, port = tmp / "out.log", free_port()
    recv = start_rsyslogd(tmp, "receiver", rsyslog_receiver_conf(tmp / "receiver" / "work", port, out))
    try:
        wait_listening(port)
        send = start_rsyslogd(tmp, "sender", rsyslog_sender_conf(tmp / "sender" / "work", str(logs / "*.log"), port))
        try:
            time.sleep(1.0)  # imfile sets its inotify watches at start; it logs nothing when ready
            c0 = cpu_seconds(send.pid) + cpu_seconds(recv.pid)
            t0 = time.monotonic()
            release(staging, logs)
            size = wait_bytes(out, total, t0, timeout)
            with open(out, "rb") as f:
                os.fsync(f.fileno())
            secs = time.monotonic() - t0
            cpu = cpu_seconds(send.pid) + cpu_seconds(recv.pid) - c0
        finally:
            stop(send)
    finally:
        stop(recv)
    return {"bytes_done": size, "seconds": secs, "cpu_s": cpu, "got": checksum(file_lines([out]))}


def run_socat(tmp: Path, blocks: list[bytes], timeout: float) -> dict[str, Any]:
    staging = stage(tmp, blocks)
    files = sorted(staging.iterdir())
    outs = [tmp / f"out{i:03d}.log" for i in range(len(files))]
    ports: list[int] = []
    while len(ports) < len(files):  # distinct: the OS may hand out a just-freed port twice
        p = free_port()
        if p not in ports:
            ports.append(p)
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            ["socat", "-u", f"TCP-LISTEN:{p},bind=127.0.0.1,reuseaddr", f"CREATE:{o}"], preexec_fn=die_with_parent
        )
        for p, o in zip(ports, outs, strict=True)
    ]
    procs += [
        subprocess.Popen(
            ["socat", "-u", f"OPEN:{f}", f"TCP:127.0.0.1:{p},retry=200,interval=0.01"], preexec_fn=die_with_parent
        )
        for f, p in zip(files, ports, strict=True)
    ]
    cpu = 0.0
    waiting = list(procs)
    while waiting:  # wait4 each (its CPU), with a deadline: a pair that never connected is killed
        for proc in list(waiting):
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
                waiting.remove(proc)
        if waiting and time.monotonic() - t0 > timeout:
            for proc in waiting:
                proc.kill()
            timeout = float("inf")  # reap the killed ones on the next rounds
        time.sleep(0.002)
    for o in outs:
        if o.exists():  # a pair that never connected wrote nothing: counted as bytes missing below
            with open(o, "rb") as f:
                os.fsync(f.fileno())
    secs = time.monotonic() - t0
    done = sum(o.stat().st_size for o in outs if o.exists())
    return {"bytes_done": done, "seconds": secs, "cpu_s": cpu, "got": checksum(file_lines(outs))}


RUNNERS = {"headrace": run_headrace, "rsyslog": run_rsyslog, "socat": run_socat}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=200, help="MB per line size")
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--line-bytes", type=int, action="append", help="line sizes, newline included (100, 1024)")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the fastest run of each is kept")
    ap.add_argument("--timeout", type=float, default=300, help="per run, seconds")
    a = ap.parse_args()
    sizes = a.line_bytes or [100, 1024]
    pool = text_pool()
    result: dict[str, Any] = {
        "mb": a.mb,
        "files": a.files,
        "repeat": a.repeat,
        "rsyslog_version": rsyslog_version(),
        "load_average_1m_at_start": os.getloadavg()[0],
        "sizes": {},
    }
    for line_bytes in sizes:
        per_file = int(a.mb * 1e6) // a.files
        blocks = [make_block(i, line_bytes, per_file, pool, line_bytes) for i in range(a.files)]
        total = sum(map(len, blocks))
        want = checksum(file_lines_of(blocks))
        best: dict[str, dict[str, Any]] = {}
        for _ in range(a.repeat):
            for name, runner in RUNNERS.items():
                with tempfile.TemporaryDirectory(prefix=f"bench-ship-{name}-", dir=".") as tmp:
                    r = runner(Path(tmp).resolve(), blocks, a.timeout)
                complete = r["bytes_done"] == total and tuple(r["got"]) == want
                run = {
                    "complete": complete,
                    "bytes": total,
                    "bytes_done": r["bytes_done"],
                    "lines": want[0],
                    "lines_got": r["got"][0],
                    "lines_checksum_ok": tuple(r["got"]) == want,
                    "seconds": round(r["seconds"], 3),
                    "mb_s": round(total / 1e6 / r["seconds"], 1),
                    "cpu_s": round(r["cpu_s"], 2),
                    "cpu_s_per_gb": round(r["cpu_s"] / (total / 1e9), 1),
                }
                print(f"{line_bytes:5d}-byte lines  {name:9s} {run}", flush=True)
                prev = best.get(name)
                if prev is None or (complete, -run["seconds"]) > (prev["complete"], -prev["seconds"]):
                    best[name] = run
        h = best["headrace"]
        best["ratios"] = {
            "headrace_vs_rsyslog": round(h["mb_s"] / best["rsyslog"]["mb_s"], 3),
            "headrace_vs_socat": round(h["mb_s"] / best["socat"]["mb_s"], 3),
        }
        result["sizes"][str(line_bytes)] = best
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    write_result("ship_peers", result, default_file=False)


def file_lines_of(blocks: list[bytes]) -> Iterator[bytes]:
    for b in blocks:
        yield from b.splitlines(keepends=True)


if __name__ == "__main__":
    main()
