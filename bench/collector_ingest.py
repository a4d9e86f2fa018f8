"""Collector ingest throughput: MB/s of chunk data acked, with concurrent posters of 1 MiB batches.

Runs, side by side in one run on the same disk:

* ``collector/<codec>``: a real ``headrace collector`` process; POSTERS threads each post batches of
  16 × 64 KiB chunks (1 MiB) of log lines for their own stream and wait for each ack (so every
  acked byte is fsynced in an Avro sink file, group-committed);
* ``peer: HTTP only``: the same posters against a bare Starlette/uvicorn app that reads the body
  and answers 200 without decoding or writing it (the HTTP ceiling of this machine and client);
* ``peer: write+fsync``: the disk's ceiling for the same pattern without HTTP, Avro or dedupe:
  POSTERS threads each append 1 MiB to one shared file and fsync it, one fsync per batch.

Usage::

    PYTHONPATH=. python bench/collector_ingest.py [--seconds 8] [--posters 4] [--codec null --codec deflate]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml
from _procs import cpu_seconds, free_port
from _result import write_result  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headrace._chunk import BATCH_CONTENT_TYPE, Chunk, encode_batch

CHUNK = 64 << 10
PER_BATCH = 16
LINE = b"2026-11-26T12:00:00.000Z INFO app.request id=%08d path=/api/v1/items status=200 ms=12\n"


def line_block(size: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += LINE % i
        i += 1
    cut = out.rfind(b"\n", 0, size) + 1
    return bytes(out[:cut])


def serve_echo(port: int) -> None:
    """The HTTP-only peer: read the body, answer like a collector, write nothing."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chunks(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"acked": PER_BATCH, "duplicates": 0})

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/v1/chunks", chunks, methods=["POST"]), Route("/healthz", health)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def run_collector(codec: str, seconds: float, posters: int, workdir: Path) -> dict[str, float]:
    port = free_port()
    if codec == "echo":
        cmd = [sys.executable, __file__, "--serve-echo", str(port)]
    else:
        cmd = [sys.executable, "-m", "headrace", "collector", "--config", str(workdir / f"collector-{codec}.yaml")]
        cmd += ["--log-level", "warning"]
    cfg = {
        "collector": {
            "listen": f"127.0.0.1:{port}",
            "sink_dir": str(workdir / f"sink-{codec}"),
            "codec": codec,
            "roll_bytes": 64 << 20,
        }
    }
    cfg_path = workdir / f"collector-{codec}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = open(workdir / f"collector-{codec}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"collector did not start; see {log.name}")
        time.sleep(0.05)

    block = line_block(CHUNK)
    acked_bytes = [0] * posters
    requests = [0] * posters
    stop_at = 0.0  # set just before the posters start

    def poster(i: int) -> None:
        pos = 0
        with httpx.Client(headers={"content-type": BATCH_CONTENT_TYPE}, timeout=60) as client:
            while not requests[i] or time.monotonic() < stop_at:  # at least one batch, however loaded
                chunks = []
                for _ in range(PER_BATCH):
                    chunks.append(Chunk("bench", f"app/p{i}.log", "app", pos, pos + len(block), block))
                    pos += len(block)
                r = client.post(url + "/v1/chunks", content=encode_batch(chunks))
                r.raise_for_status()
                assert r.json()["duplicates"] == 0
                acked_bytes[i] += len(block) * PER_BATCH
                requests[i] += 1

    started = time.monotonic()
    stop_at = started + seconds
    cpu_before = cpu_seconds(proc.pid)
    threads = [threading.Thread(target=poster, args=(i,)) for i in range(posters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(proc.pid) - cpu_before
    metrics = httpx.get(url + "/metrics").text
    proc.terminate()
    proc.wait(60)
    log.close()

    def sample(name: str) -> float:
        for line in metrics.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    commits = sample("headrace_collector_commit_requests_count") or 1
    fsyncs = sample("headrace_collector_fsync_seconds_count") or 1
    return {
        "mb_s": sum(acked_bytes) / elapsed / 1e6,
        "req_s": sum(requests) / elapsed,
        "cpu_ms_per_mb": 1000 * cpu / (sum(acked_bytes) / 1e6),
        "requests_per_commit": sample("headrace_collector_commit_requests_sum") / commits,
        "fsync_ms": 1000 * sample("headrace_collector_fsync_seconds_sum") / fsyncs,
    }


def run_peer(seconds: float, posters: int, workdir: Path) -> dict[str, float]:
    block = line_block(CHUNK) * PER_BATCH
    fd = os.open(workdir / "peer.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lock = threading.Lock()
    written = [0] * posters
    stop_at = time.monotonic() + seconds

    def writer(i: int) -> None:
        while not written[i] or time.monotonic() < stop_at:
            with lock:
                os.write(fd, block)
            os.fsync(fd)
            written[i] += len(block)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(posters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    os.close(fd)
    return {"mb_s": sum(written) / elapsed / 1e6, "req_s": sum(written) / len(block) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--posters", type=int, default=4)
    ap.add_argument("--codec", action="append", choices=["null", "deflate"])
    ap.add_argument("--dir", help="where to write (default: a temporary folder, removed afterwards)")
    ap.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    codecs = args.codec or ["null", "deflate"]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        print(
            f"{args.posters} posters, batches of {PER_BATCH} x {CHUNK >> 10} KiB, {args.seconds:.0f} s each, in {work}"
        )
        print(
            f"{'run':<22}{'MB/s acked':>12}{'batches/s':>11}{'req/commit':>12}{'fsync ms':>10}{'server CPU ms/MB':>18}"
        )
        found: dict[str, dict[str, float]] = {}
        for codec in codecs:
            r = found[f"collector_{codec}"] = run_collector(codec, args.seconds, args.posters, work)
            print(
                f"{'collector/' + codec:<22}{r['mb_s']:>12.1f}{r['req_s']:>11.1f}"
                f"{r['requests_per_commit']:>12.2f}{r['fsync_ms']:>10.2f}{r['cpu_ms_per_mb']:>18.2f}"
            )
        e = found["peer_http_only"] = run_collector("echo", args.seconds, args.posters, work)
        print(f"{'peer: HTTP only':<22}{e['mb_s']:>12.1f}{e['req_s']:>11.1f}{'':>22}{e['cpu_ms_per_mb']:>18.2f}")
        p = found["peer_write_fsync"] = run_peer(args.seconds, args.posters, work)
        print(f"{'peer: write+fsync':<22}{p['mb_s']:>12.1f}{p['req_s']:>11.1f}{'1.00':>12}{'':>10}")
        found_all = {"seconds": args.seconds, "posters": args.posters, **found}
        write_result("collector_ingest", found_all, default_file=False)


if __name__ == "__main__":
    main()
