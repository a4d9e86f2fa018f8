"""Agent throughput: MB/s of log lines tailed from files and acked by a real collector.

Runs, side by side in one run on the same disk and collector:

* ``agent``: a real ``headrace agent`` process, already running, tails FILES files holding MB
  megabytes of log lines, written beforehand elsewhere and renamed into the watched folder at once
  (so the measure is the agent's pace, not the writer's); the clock runs from the rename until
  ``/v1/status`` shows every byte acked (read, chunked, spooled with fsync, shipped, fsynced by the
  collector, checkpointed);
* ``peer: direct shipper``: the same bytes, pre-cut into 1 MiB chunks, sent by
  :class:`headrace._ship.Shipper` in 4 MiB batches straight to the same collector (no files, no
  spool): the ceiling that HTTP plus the collector's fsync put on any agent here.

Usage::

    PYTHONPATH=. python bench/agent_throughput.py [--mb 200] [--files 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from _procs import free_port, start_headrace, wait_http
from _result import write_result  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headrace._chunk import Chunk
from headrace._ship import Shipper

LINE = b"2026-11-26T12:00:00.000Z INFO app.request id=%09d path=/api/v1/items status=200 ms=12\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as tmp_s:
        tmp = Path(tmp_s)
        per_file = a.mb * (1 << 20) // a.files
        block = b"".join(LINE % i for i in range(per_file // len(LINE % 0)))
        total = len(block) * a.files
        logs, staging = tmp / "logs", tmp / "staging"
        logs.mkdir()
        staging.mkdir()
        for i in range(a.files):
            (staging / f"f{i:03d}.log").write_bytes(block)

        cport = free_port()
        ccfg = {"collector": {"listen": f"127.0.0.1:{cport}", "sink_dir": str(tmp / "sink"), "name": "bench"}}
        (tmp / "c.yaml").write_text(yaml.safe_dump(ccfg))
        col = start_headrace(["collector", "--config", str(tmp / "c.yaml")], tmp / "c.log")
        try:
            wait_http(f"http://127.0.0.1:{cport}/healthz")

            # peer: direct shipper
            shipper = Shipper([f"http://127.0.0.1:{cport}"])
            t0 = time.monotonic()
            for i in range(a.files):
                seq = 0
                batch: list[Chunk] = []
                for off in range(0, len(block), 1 << 20):
                    data = block[off : off + (1 << 20)]
                    batch.append(Chunk("peer", f"peer/f{i}", "app", seq, seq + len(data), data))
                    seq += len(data)
                    if len(batch) == 4:
                        shipper.ship(batch)
                        batch = []
                if batch:
                    shipper.ship(batch)
            peer_s = time.monotonic() - t0
            shipper.close()

            aport = free_port()
            acfg = {
                "agent": {
                    "name": "bench",
                    "collectors": [f"http://127.0.0.1:{cport}"],
                    "state_dir": str(tmp / "agent"),
                    "listen": f"127.0.0.1:{aport}",
                    "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
                }
            }
            (tmp / "a.yaml").write_text(yaml.safe_dump(acfg))
            agent = start_headrace(["agent", "--config", str(tmp / "a.yaml")], tmp / "a.log")
            try:
                wait_http(f"http://127.0.0.1:{aport}/healthz")
                t0 = time.monotonic()
                for p in staging.iterdir():
                    p.rename(logs / p.name)
                url = f"http://127.0.0.1:{aport}/v1/status"
                while True:
                    try:
                        st = httpx.get(url, timeout=5).json()
                        acked = sum(s["acked_offset"] for s in st["streams"])
                        if len(st["streams"]) == a.files and acked == total:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                agent_s = time.monotonic() - t0
            finally:
                agent.terminate()
                agent.wait(30)
        finally:
            col.terminate()
            col.wait(30)
        mb = total / 1e6
        print(f"data: {mb:.1f} MB in {a.files} files of {len(LINE % 0)}-byte lines")
        print(f"agent (tail→spool→ship→ack):         {agent_s:6.2f} s  {mb / agent_s:7.1f} MB/s")
        print(f"peer: direct shipper, 4 MiB batches: {peer_s:6.2f} s  {mb / peer_s:7.1f} MB/s")
        result = {
            "mb": round(mb, 1),
            "files": a.files,
            "bytes": total,
            "bytes_acked": total,  # the wait above ends only when every byte of every file is acked
            "agent_seconds": round(agent_s, 3),
            "agent_mb_s": round(mb / agent_s, 1),
            "peer_direct_shipper_seconds": round(peer_s, 3),
            "peer_direct_shipper_mb_s": round(mb / peer_s, 1),
        }
        write_result("agent_throughput", result, default_file=False)


if __name__ == "__main__":
    main()
