"""TLS overhead on the log path: the same bytes shipped to a collector over HTTP and over HTTPS (mTLS).

A :class:`headrace._ship.Shipper` sends MB megabytes, cut into 1 MiB chunks, in 4 MiB batches to a
real ``headrace collector`` process (each batch acked after the collector's fsync), once over plain
HTTP and once over HTTPS with a client certificate required (certificates from ``trustme``, ECDSA
P-256, TLS 1.3). Reported per run: wall time, MB/s, and the CPU seconds the collector process and
this (shipping) process used.

Usage::

    PYTHONPATH=. python bench/tls_overhead.py [--mb 200]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trustme
import yaml
from _procs import cpu_seconds, free_port
from _result import write_result  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headrace._chunk import Chunk
from headrace._ship import Shipper
from headrace._tls import ClientTLS, client_context

LINE = b"2026-11-26T12:00:00.000Z INFO app.request id=%09d path=/api/v1/items status=200 ms=12\n"


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(
    tmp: Path, name: str, block: bytes, files: int, tls: dict[str, object] | None, client: ClientTLS | None
) -> dict[str, float]:
    port = free_port()
    cfg: dict[str, object] = {"listen": f"127.0.0.1:{port}", "sink_dir": str(tmp / f"sink-{name}"), "name": "bench"}
    if tls:
        cfg["tls"] = tls
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump({"collector": cfg}))
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    col = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headrace",
            "collector",
            "--config",
            str(tmp / f"{name}.yaml"),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        verify = client_context(client) if client else True
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", verify=verify, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        shipper = Shipper([url], tls=client)
        c0, s0, t0 = cpu_seconds(col.pid), self_cpu(), time.monotonic()
        for i in range(files):
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
        wall = time.monotonic() - t0
        col_cpu, ship_cpu = cpu_seconds(col.pid) - c0, self_cpu() - s0
        shipper.close()
    finally:
        col.terminate()
        col.wait(30)
        log.close()
    mb = len(block) * files / 1e6
    print(f"{name:<6} {wall:6.2f} s  {mb / wall:7.1f} MB/s  collector CPU {col_cpu:5.2f} s  ", end="")
    print(f"shipper CPU {ship_cpu:5.2f} s")
    return {
        "mb": round(mb, 1),
        "seconds": round(wall, 3),
        "mb_s": round(mb / wall, 1),
        "collector_cpu_s": round(col_cpu, 2),
        "shipper_cpu_s": round(ship_cpu, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    a = ap.parse_args()
    files = 10
    with tempfile.TemporaryDirectory(dir=".") as tmp_s:
        tmp = Path(tmp_s)
        per_file = a.mb * (1 << 20) // files
        block = b"".join(LINE % i for i in range(per_file // len(LINE % 0)))
        ca = trustme.CA()
        server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("client.bench")
        paths = {}
        for name, pem in {
            "ca": ca.cert_pem.bytes(),
            "s.crt": b"".join(p.bytes() for p in server.cert_chain_pems),
            "s.key": server.private_key_pem.bytes(),
            "c.crt": b"".join(p.bytes() for p in client.cert_chain_pems),
            "c.key": client.private_key_pem.bytes(),
        }.items():
            (tmp / name).write_bytes(pem)
            paths[name] = str(tmp / name)
        tls = {"cert": paths["s.crt"], "key": paths["s.key"], "client_ca": paths["ca"], "require_client_cert": True}
        ctls = ClientTLS(ca=paths["ca"], cert=paths["c.crt"], key=paths["c.key"])
        print(f"data: {len(block) * files / 1e6:.1f} MB, 1 MiB chunks, 4 MiB batches")
        result = {"http": run(tmp, "http", block, files, None, None)}
        result["https"] = run(tmp, "https", block, files, tls, ctls)
        write_result("tls_overhead", result, default_file=False)


if __name__ == "__main__":
    main()
