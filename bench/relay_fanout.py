"""Relay fan-out benchmark: many subscribers reading a full buffer at once; relay RSS, CPU and events/s.

Usage::

    PYTHONPATH=. python bench/relay_fanout.py [--events 1000000] [--rows 1000] [--subscribers 100]
        [--response-mib 8 --response-mib 1] [--workers 4] [--client raw|subscriber]

1. *fill*: a writer commits ``--events`` small rows (``--rows`` per transaction, so one window each)
   into a SQLite table; a relay (``relay.buffer_bytes`` sized to hold all of them, default in-flight
   budget) captures them into its ring buffer. The run waits until the buffer holds every event.
2. *reference*: one reader fetches the whole buffer once and parses every frame: event count, SCN
   sum, CRC-32 and length of the byte stream. The real client library (:class:`Subscriber`, decoding
   every event) reads it once too and must see the same count and SCN sum.
3. *fan-out*, per ``--response-mib``: ``--subscribers`` concurrent subscribers, spread over
   ``--workers`` processes (threads inside), each read the whole buffer from the start with
   ``max_bytes`` = that size. With ``--client raw`` (the default) a subscriber is a plain httpx
   streaming loop that follows ``X-Headrace-Scn`` and checks what it got, without decoding rows:
   the sum of ``X-Headrace-Events`` and the stream's length and CRC-32 must equal the reference
   (so every event arrived exactly once, in order, byte for byte). Decoding in Python would bound
   the client side well below the relay (≈ 60k events/s per core), so the raw client is the one
   that measures the relay. ``--client subscriber`` uses :class:`Subscriber` itself (count + SCN sum).
   Measured: total events delivered / (start → last subscriber done); the relay's peak RSS
   (``VmRSS`` sampled every 20 ms, and ``VmHWM``) against the bytes its buffer holds and its
   configured size; the relay's and the clients' CPU seconds.

Results are printed and written via bench/_result.py (``bench/results/relay_fanout.json`` by hand).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
from _procs import cpu_seconds, free_port, start_until_healthy, stop
from _result import write_result  # bench/ is sys.path[0] when run as a script

from headrace.relay.client import Subscriber

MIB = 1 << 20
_HEAD = struct.Struct(">I4xQ")  # frame_len, then scn at offset 8

WRITER = r"""
import sqlite3, sys
db, n, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db, isolation_level=None, timeout=60)
c.execute("PRAGMA synchronous=NORMAL")
done = 0
while done < n:
    k = min(rows, n - done)
    c.execute("BEGIN IMMEDIATE")
    rows_ = [("x" * 32, (done + i) * 0.5) for i in range(k)]
    c.executemany("INSERT INTO events (payload, amount) VALUES (?, ?)", rows_)
    c.execute("COMMIT")
    done += k
"""


def _fresh_db(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT, amount REAL)")
    c.commit()
    c.close()


def _status(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/v1/status", timeout=30).json())


def _mem_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0])
    return out


class RssSampler(threading.Thread):
    """Samples ``VmRSS`` of ``pid`` every ``period`` seconds; ``peak_kib`` is the largest seen."""

    def __init__(self, pid: int, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.period, self.peak_kib = pid, period, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.peak_kib = max(self.peak_kib, _mem_kib(self.pid)["VmRSS"])
            self.halt.wait(self.period)


def read_raw(
    client: httpx.Client, since: int, until: int, max_bytes: int, sub_id: str, frames: bool = False
) -> dict[str, Any]:
    """Follow the relay from ``since`` until ``until`` with plain streaming GETs: events (from the
    headers), bytes, CRC-32 of the stream, and with ``frames`` the parsed frame count and SCN sum."""
    events = length = crc = n_frames = scn_sum = requests = 0
    carry = b""
    while since < until:
        params = {"since": since, "max_bytes": max_bytes, "wait_ms": 0, "subscriber": sub_id}
        with client.stream("GET", "/v1/stream", params=params) as r:
            if r.status_code == 503:  # busy: the relay says when to come back
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            r.raise_for_status()
            got = 0
            for chunk in r.iter_raw(1 << 20):
                got += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if frames:
                    buf = carry + chunk
                    off = 0
                    while off + 16 <= len(buf):
                        flen, scn = _HEAD.unpack_from(buf, off)
                        if off + 4 + flen > len(buf):
                            break
                        n_frames += 1
                        scn_sum += scn
                        off += 4 + flen
                    carry = buf[off:]
            if got != int(r.headers["content-length"]):
                raise SystemExit(f"{sub_id}: body cut short ({got} of {r.headers['content-length']} bytes)")
            length += got
            events += int(r.headers["x-headrace-events"])
            since = int(r.headers["x-headrace-scn"])
            requests += 1
    out = {"events": events, "bytes": length, "crc32": crc, "requests": requests}
    if frames:
        out |= {"frames": n_frames, "scn_sum": scn_sum, "leftover": len(carry)}
    return out


def _client(url: str, connections: int) -> httpx.Client:
    """One connection pool a worker's threads share (one TLS-less client: no per-subscriber setup cost)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.Client(base_url=url, timeout=120, limits=limits)


def read_subscriber(url: str, since: int, until: int, max_bytes: int, sub_id: str) -> dict[str, Any]:
    """The same with the client library, decoding every event: event count and SCN sum."""
    sub = Subscriber([url], start_scn=since, wait_ms=0, max_bytes=max_bytes, subscriber_id=sub_id, timeout=120)
    events = scn_sum = 0
    for w in sub.windows(idle_exit=120):
        events += len(w.events)
        scn_sum += sum(e.scn for e in w.events)
        if w.scn >= until:
            break
    sub.close()
    return {"events": events, "scn_sum": scn_sum}


def _worker(url: str, since: int, until: int, max_bytes: int, ids: list[str], client: str, go: Any, out: Any) -> None:
    results: dict[str, Any] = {}
    pool = _client(url, len(ids))

    def one(sub_id: str) -> None:
        t0 = time.time()
        try:
            if client == "raw":
                r = read_raw(pool, since, until, max_bytes, sub_id)
            else:
                r = read_subscriber(url, since, until, max_bytes, sub_id)
        except BaseException as exc:  # reported, checked by the parent
            r = {"error": repr(exc)}
        r["t0"], r["t1"] = t0, time.time()
        results[sub_id] = r

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    go.wait()
    cpu0 = time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool.close()
    out.put({"subs": results, "cpu_s": time.process_time() - cpu0})


def fan_out(
    url: str, pid: int, since: int, until: int, max_bytes: int, subscribers: int, workers: int, client: str
) -> dict[str, Any]:
    """``subscribers`` concurrent full reads; wall time, per-subscriber results, relay RSS and CPU."""
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    ids = [f"fan-{i:03d}" for i in range(subscribers)]
    procs = [
        ctx.Process(target=_worker, args=(url, since, until, max_bytes, ids[w::workers], client, go, out))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the workers import and reach the start line
    sampler = RssSampler(pid)
    sampler.start()
    cpu0 = cpu_seconds(pid)
    t0 = time.time()
    go.set()
    parts = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    relay_cpu = cpu_seconds(pid) - cpu0
    sampler.halt.set()
    sampler.join()
    subs = {k: v for part in parts for k, v in part["subs"].items()}
    t1 = max(v["t1"] for v in subs.values())
    return {
        "subs": subs,
        "wall_s": t1 - t0,
        "relay_cpu_s": relay_cpu,
        "clients_cpu_s": sum(p["cpu_s"] for p in parts),
        "relay_peak_rss_kib": sampler.peak_kib,
        "relay_vmhwm_kib": _mem_kib(pid)["VmHWM"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=1000, help="rows per transaction (one window each)")
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--response-mib", type=int, action="append", help="max_bytes per response, MiB (repeatable)")
    ap.add_argument("--workers", type=int, default=4, help="client processes the subscribers are spread over")
    ap.add_argument("--client", choices=("raw", "subscriber"), default="raw")
    ap.add_argument("--bytes-per-event", type=int, default=160, help="to size relay.buffer_bytes (x 1.25)")
    args = ap.parse_args()
    sizes = args.response_mib or [8, 1]
    tmp = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    db = tmp / "bench.db"
    _fresh_db(db)
    capacity = max(64 * MIB, int(args.events * args.bytes_per_event * 1.25))
    port = free_port()
    cfg = tmp / "relay.yaml"
    cfg.write_text(
        f"relay:\n  listen: 127.0.0.1:{port}\n  source: sqlite:///{db}\n  state_dir: {tmp}/state\n"
        f"  buffer_bytes: {capacity}\n  sqlite: {{poll_ms: 5}}\n"
    )
    relay, url = start_until_healthy(["relay", "--config", str(cfg)], tmp / "relay.log", port, timeout=60)
    results: dict[str, Any] = {
        "events": args.events,
        "rows_per_txn": args.rows,
        "subscribers": args.subscribers,
        "workers": args.workers,
        "client": args.client,
        "cpus": os.cpu_count(),
    }
    try:
        since = int(_status(url)["newest_scn"])
        rss_start = _mem_kib(relay.pid)["VmRSS"]
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRITER, str(db), str(args.events), str(args.rows)], check=True)
        while (st := _status(url))["events"] < args.events:
            time.sleep(0.2)
        results["fill_events_per_s"] = round(args.events / (time.perf_counter() - t))
        if st["evicted_windows"] or st["events"] != args.events:
            raise SystemExit(f"buffer does not hold exactly the events written: {st}")
        until = int(st["newest_scn"])
        mem = _mem_kib(relay.pid)
        results |= {
            "buffer_capacity_mib": round(capacity / MIB, 1),
            "buffer_bytes_mib": round(st["bytes"] / MIB, 1),
            "buffer_windows": st["windows"],
            "relay_rss_start_mib": round(rss_start / 1024, 1),
            "relay_rss_filled_mib": round(mem["VmRSS"] / 1024, 1),
            "relay_vmhwm_filled_mib": round(mem["VmHWM"] / 1024, 1),
        }

        with _client(url, 1) as c:
            ref = read_raw(c, since, until, 8 * MIB, "reference", frames=True)
        want_sum = sum(range(since + 1, until + 1)) if until - since == args.events else None
        ok = ref["frames"] == ref["events"] == args.events and not ref["leftover"]
        results["reference_ok"] = ok and (want_sum is None or ref["scn_sum"] == want_sum)
        results["reference"] = {k: ref[k] for k in ("events", "frames", "scn_sum", "bytes", "crc32")}
        t = time.perf_counter()
        lib = read_subscriber(url, since, until, 8 * MIB, "library-check")
        results["subscriber_library_events_per_s"] = round(lib["events"] / (time.perf_counter() - t))
        results["subscriber_library_ok"] = lib["events"] == ref["events"] and lib["scn_sum"] == ref["scn_sum"]

        for mib in sizes:
            run = fan_out(url, relay.pid, since, until, mib * MIB, args.subscribers, args.workers, args.client)
            subs = run.pop("subs")
            keys = ("events", "bytes", "crc32") if args.client == "raw" else ("events", "scn_sum")
            bad = sorted(k for k, v in subs.items() if any(v.get(x) != ref[x] for x in keys))
            delivered = sum(v.get("events", 0) for v in subs.values())
            peak = max(run["relay_peak_rss_kib"], 0) / 1024
            results[f"fanout_{mib}mib"] = {
                "max_bytes_mib": mib,
                "complete_subscribers": len(subs) - len(bad),
                "incomplete": {k: subs[k] for k in bad[:3]},
                "events_delivered": delivered,
                "events_per_s": round(delivered / run["wall_s"]),
                "mb_per_s": round(sum(v.get("bytes", 0) for v in subs.values()) / run["wall_s"] / 1e6, 1),
                "wall_s": round(run["wall_s"], 2),
                "requests": sum(v.get("requests", 0) for v in subs.values()),
                "relay_cpu_s": round(run["relay_cpu_s"], 2),
                "clients_cpu_s": round(run["clients_cpu_s"], 2),
                "relay_cpu_us_per_event": round(run["relay_cpu_s"] / max(delivered, 1) * 1e6, 3),
                "relay_peak_rss_mib": round(peak, 1),
                "relay_vmhwm_mib": round(run["relay_vmhwm_kib"] / 1024, 1),
                "relay_peak_rss_over_buffer_bytes_mib": round(peak - st["bytes"] / MIB, 1),
                "relay_peak_rss_over_filled_mib": round(peak - mem["VmRSS"] / 1024, 1),
                # the target: fan-out adds at most the in-flight budget (relay.max_inflight_bytes, 64 MiB)
                # to the filled relay, and the relay stays within its buffer's configured size + 64 MiB
                "rss_growth_within_inflight_budget": peak - mem["VmRSS"] / 1024 <= 64,
                "rss_within_buffer_capacity_plus_64mib": peak <= capacity / MIB + 64,
            }
    finally:
        stop(relay)
    write_result("relay_fanout", results)
    for k, v in results.items():
        print(f"{k:40} {v}")


if __name__ == "__main__":
    main()
