"""Idle agent against rsyslog imfile: CPU, wakeups and RSS while 1,000 tailed files stay quiet, then ack latency.

Both tail ``--files`` files (one line each, all shipped and confirmed before the window starts):

* ``headrace``: a ``headrace agent`` shipping to a ``headrace collector``;
* ``rsyslog``: a private ``rsyslogd`` with imfile in inotify mode → omfwd (TCP) → a second private
  ``rsyslogd`` with imtcp → omfile (configs in bench/_peers.py).

During ``--seconds`` nothing is written and nothing asks either for anything. The sending side's
process (the agent; rsyslog's imfile/omfwd instance) is measured from /proc: CPU % from utime+stime,
wakeups/s from the voluntary + involuntary context switches summed over its threads, RSS at the end.
Then ``--appends`` lines are appended, one at a time to different files, and each one's latency is
measured: until the agent's ``/v1/status`` shows it acked (fsynced by the collector) for headrace, until
the receiving rsyslogd's output file holds it for rsyslog.

    PYTHONPATH=.:tests python bench/idle_agent.py [--files 1000] [--seconds 60] [--appends 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _peers import (
    agent_acked,
    agent_config,
    collector_config,
    cpu_seconds,
    ctxt_switches,
    free_port,
    rss_mib,
    rsyslog_receiver_conf,
    rsyslog_sender_conf,
    rsyslog_version,
    start_headrace,
    start_rsyslogd,
    stop,
    wait_http,
    wait_listening,
)
from _result import write_result  # bench/ is sys.path[0] when run as a script

LINE = "2026-12-06T23:00:00.000Z INFO worker-{i:04d} heartbeat ok queue=0 lag_ms=0 pid=4242 host=web-01\n"


def make_files(logs: Path, n: int) -> int:
    logs.mkdir()
    total = 0
    for i in range(n):
        data = LINE.format(i=i).encode()
        (logs / f"f{i:04d}.log").write_bytes(data)
        total += len(data)
    return total


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def idle_window(pid: int, seconds: float) -> dict[str, Any]:
    """CPU %, wakeups/s and RSS of ``pid`` over ``seconds`` in which nothing is written or asked."""
    c0, w0, t0 = cpu_seconds(pid), ctxt_switches(pid), time.monotonic()
    time.sleep(seconds)
    c1, w1, t1 = cpu_seconds(pid), ctxt_switches(pid), time.monotonic()
    secs = t1 - t0
    return {
        "seconds": round(secs, 1),
        "cpu_percent": round(100 * (c1 - c0) / secs, 3),
        "wakeups_per_s": round((w1 - w0) / secs, 2),
        "rss_mib": round(rss_mib(pid), 1),
        "threads": len(list(Path(f"/proc/{pid}/task").iterdir())),
    }


def latencies(logs: Path, appends: int, arrived: Callable[[int], bool]) -> list[float]:
    """Append one line to file k for k < ``appends``; seconds until ``arrived(k + 1)`` for each."""
    out = []
    for k in range(appends):
        with open(logs / f"f{k * 7:04d}.log", "a") as f:
            t0 = time.monotonic()
            f.write(LINE.format(i=9000 + k))
        deadline = t0 + 30
        while not arrived(k + 1):
            if time.monotonic() > deadline:
                out.append(float("inf"))
                break
            time.sleep(0.01)  # 10 ms resolution: the target is 0.5 s
        else:
            out.append(time.monotonic() - t0)
    return out


def run_headrace(tmp: Path, files: int, seconds: float, appends: int) -> dict[str, Any]:
    logs = tmp / "logs"
    total = make_files(logs, files)
    cport, aport = free_port(), free_port()
    col = start_headrace(["collector", "--config", str(collector_config(tmp, cport))], tmp / "c.log")
    try:
        wait_http(f"http://127.0.0.1:{cport}/healthz")
        agent = start_headrace(
            ["agent", "--config", str(agent_config(tmp, aport, cport, str(logs / "*.log")))], tmp / "a.log"
        )
        try:
            wait_http(f"http://127.0.0.1:{aport}/healthz", timeout=120)
            wait_until(lambda: agent_acked(aport) == (files, total), 300, "the agent to ack every file")
            time.sleep(2)  # let the last acks settle before the window
            r = idle_window(agent.pid, seconds)
            line = len(LINE.format(i=9000))
            r["ack_latency_s"] = latencies(logs, appends, lambda k: agent_acked(aport)[1] >= total + k * line)
            r["files_confirmed"] = agent_acked(aport)[0]
        finally:
            stop(agent)
    finally:
        stop(col)
    return r


def run_rsyslog(tmp: Path, files: int, seconds: float, appends: int) -> dict[str, Any]:
    logs = tmp / "logs"
    total = make_files(logs, files)
    out, port = tmp / "out.log", free_port()
    recv = start_rsyslogd(tmp, "receiver", rsyslog_receiver_conf(tmp / "receiver" / "work", port, out))
    try:
        wait_listening(port)
        send = start_rsyslogd(tmp, "sender", rsyslog_sender_conf(tmp / "sender" / "work", str(logs / "*.log"), port))
        try:
            size = lambda: out.stat().st_size if out.exists() else 0  # noqa: E731
            wait_until(lambda: size() >= total, 300, "rsyslog to forward every file")
            time.sleep(2)
            r = idle_window(send.pid, seconds)
            line = len(LINE.format(i=9000))
            r["ack_latency_s"] = latencies(logs, appends, lambda k: size() >= total + k * line)
            r["files_confirmed"] = len(out.read_bytes().splitlines()) - appends
        finally:
            stop(send)
    finally:
        stop(recv)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--appends", type=int, default=5)
    a = ap.parse_args()
    result: dict[str, Any] = {
        "files": a.files,
        "seconds": a.seconds,
        "appends": a.appends,
        "rsyslog_version": rsyslog_version(),
        "load_average_1m_at_start": os.getloadavg()[0],
    }
    for name, runner in [("headrace", run_headrace), ("rsyslog", run_rsyslog)]:
        with tempfile.TemporaryDirectory(prefix=f"bench-idle-{name}-", dir=".") as tmp:
            r = runner(Path(tmp).resolve(), a.files, a.seconds, a.appends)
        lat = r["ack_latency_s"]
        r["ack_latency_s"] = [round(x, 4) for x in lat]
        r["ack_latency_s_median"] = round(statistics.median(lat), 4)
        r["ack_latency_s_max"] = round(max(lat), 4)
        print(f"{name:9s} {r}", flush=True)
        result[name] = r
    result["load_average_1m_at_end"] = os.getloadavg()[0]
    write_result("idle_agent", result, default_file=False)


if __name__ == "__main__":
    main()
