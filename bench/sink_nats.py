"""``headrace sink`` (nats target) benchmark: events/s published to JetStream, against plain publishes.

Usage::

    PYTHONPATH=$PWD:$PWD/tests python bench/sink_nats.py [--events 100000] [--window-events 10]

Starts a private ``nats-server -js`` and, in the same run, times:

1. *sink target*: ``--events`` decoded events in windows of ``--window-events``, committed by the
   sink's nats target in-process (``NatsSinkTarget.commit``: JSON body, msg-id and headrace headers,
   pipelined publishes, every ack awaited, then the KV checkpoint), 2000 events per commit as the
   sink does;
2. *peer*: the same JSON bodies published by nats-py's ``publish_async`` (no headers, no msg id, no
   checkpoint), acks awaited every 2000 messages.

Results go to ``bench/results/sink_nats.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import free_port
from _result import write_result  # bench/ is sys.path[0] when run as a script

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    from headrace.relay._event import Op
    from headrace.relay.client import ChangeEvent, Checkpoint, Window
    from headrace.relay.client._cli import event_json
    from headrace.sinks._config import NatsTarget
    from headrace.sinks._nats import NatsSinkTarget

    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--window-events", type=int, default=10)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="headrace-nats-bench-", dir="/tmp"))
    port = free_port()
    server = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(root / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        n, per = args.events, args.window_events
        windows = []
        for s in range(n // per):
            evs = [
                ChangeEvent(s + 1, "shop.orders", Op.INSERT, [s * per + i], None,
                            {"id": s * per + i, "customer": f"customer {i}", "amount": s * 3, "note": "n" * 20},
                            0, i == per - 1, "00112233445566ff", 1)
                for i in range(per)
            ]  # fmt: skip
            windows.append(Window(s + 1, evs))
        target = NatsSinkTarget(NatsTarget(type="nats", servers=[url], stream="BENCH", subject_prefix="bench"), "b")
        try:
            t0 = time.perf_counter()
            step = max(1, 2000 // per)
            for i in range(0, len(windows), step):
                batch = windows[i : i + step]
                target.commit(batch, Checkpoint(batch[-1].scn))
            sink_s = time.perf_counter() - t0
        finally:
            target.close()
        bodies = [event_json(e).encode() for w in windows for e in w.events]

        async def peer() -> float:
            import nats
            from nats.js.api import StreamConfig

            nc = await nats.connect(url)
            js = nc.jetstream(publish_async_max_pending=4000)
            await js.add_stream(StreamConfig(name="PEER", subjects=["peer.>"]))
            t0 = time.perf_counter()
            for i in range(0, len(bodies), 2000):
                futs = [await js.publish_async("peer.orders", b) for b in bodies[i : i + 2000]]
                await asyncio.gather(*futs)
            took = time.perf_counter() - t0
            await nc.close()
            return took

        peer_s = asyncio.run(peer())
        result = {
            "events": n,
            "events_per_window": per,
            "cpus": os.cpu_count(),
            "nats_server": subprocess.run(["nats-server", "--version"], capture_output=True, text=True).stdout.strip(),
            "sink_target_events_per_s": round(n / sink_s),
            "peer_publish_async_events_per_s": round(n / peer_s),
            "ratio": round(peer_s / sink_s, 3),
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(result, indent=2))
        write_result("sink_nats", result)
    finally:
        server.kill()
        server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
