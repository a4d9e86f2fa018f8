"""Wire compression: bytes on the wire and CPU seconds, agent -> collector, zstd levels vs none.

For each mode (``none``, ``zstd`` level 1, ``zstd`` level 3) on the same corpus: a fresh real
``headrace collector`` and ``headrace agent`` process; the agent is started on an empty folder,
then the corpus files are renamed in at once; the clock and the CPU counters (``utime + stime``
from ``/proc/<pid>/stat`` of each process, taken when the files are renamed in and when
``/v1/status`` shows every byte acked) measure only the shipping of the corpus. Bytes on the wire
are the request bodies the collector accepted (``headrace_collector_wire_bytes_total``).

The corpus is seeded and varied (no line repeats verbatim): nginx-style access lines (client IPs,
paths with ids, query strings, user agents, referrers, sizes, latencies), JSON application logs
(request ids, user ids, durations, messages with arguments), syslog lines (sshd, kernel, cron,
systemd) and Python tracebacks now and then.

Usage::

    PYTHONPATH=. python bench/wire_compression.py [--mb 64] [--files 8] [--out bench/results/wire_compression]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml
from _procs import cpu_seconds, free_port, start_headrace, wait_http  # bench/ is sys.path[0] when run as a script

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "curl/8.5.0",
    "python-httpx/0.28.1",
    "Go-http-client/2.0",
    "kube-probe/1.31",
]
PATHS = [
    "/api/v1/orders/{id}",
    "/api/v1/users/{id}/profile",
    "/api/v2/search?q={word}&page={n}",
    "/static/js/app.{hex}.js",
    "/images/products/{id}_{n}.webp",
    "/healthz",
    "/login?next=%2Faccount%2F{id}",
    "/api/v1/cart/{id}/items",
]
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "shoes",
    "shirt",
    "lamp",
    "coffee",
    "table",
    "chair",
    "phone",
    "cable",
    "router",
    "printer",
    "desk",
]
MESSAGES = [
    ("order placed", {"order_id": "int", "items": "n", "total_cents": "int"}),
    ("payment authorized", {"order_id": "int", "provider": ["stripe", "adyen", "paypal"], "amount_cents": "int"}),
    ("cache miss", {"key": "key", "backend": ["redis-1", "redis-2", "redis-3"]}),
    ("slow query", {"table": ["orders", "users", "items", "events"], "rows": "int", "ms": "float"}),
    ("user login", {"user_id": "int", "method": ["password", "sso", "webauthn"], "ok": ["true", "false"]}),
    ("retrying upstream call", {"upstream": ["inventory", "pricing", "shipping"], "attempt": "n", "error": "err"}),
]
ERRORS = ["ConnectionResetError", "TimeoutError", "KeyError('sku')", "ValueError('bad quantity')", "HTTP 503"]
SYSLOG = [
    "sshd[{pid}]: Accepted publickey for deploy from {ip} port {port} ssh2: ED25519 SHA256:{b64}",
    "sshd[{pid}]: Connection closed by invalid user {word} {ip} port {port} [preauth]",
    "kernel: [{up}] TCP: request_sock_TCP: Possible SYN flooding on port {port}. Sending cookies.",
    "CRON[{pid}]: (root) CMD (/usr/local/bin/backup --incremental --target s3://bk-{hex}/)",
    "systemd[1]: Started session-{n}.scope - Session {n} of User deploy.",
    "kernel: [{up}] EXT4-fs (nvme0n1p{n}): mounted filesystem {uuid} r/w with ordered data mode.",
]


def _ip(rng: random.Random) -> str:
    return f"{rng.choice([10, 172, 192, 81, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        id=rng.randrange(1, 10_000_000),
        n=rng.randrange(1, 40),
        word=rng.choice(WORDS),
        hex=f"{rng.getrandbits(40):010x}",
        pid=rng.randrange(300, 65000),
        ip=_ip(rng),
        port=rng.randrange(1024, 65535),
        b64="".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(43)),
        up=f"{rng.uniform(1000, 900000):.6f}",
        uuid=uuid.UUID(int=rng.getrandbits(128)),
    )


def _value(kind: Any, rng: random.Random) -> Any:
    if isinstance(kind, list):
        return rng.choice(kind)
    return {
        "int": rng.randrange(1, 100_000_000),
        "n": rng.randrange(1, 12),
        "float": round(rng.expovariate(0.01), 2),
        "key": f"sku:{rng.randrange(10**6)}:{rng.choice(WORDS)}",
        "err": rng.choice(ERRORS),
    }[kind]


def corpus_lines(seed: int, size: int) -> bytes:
    """About ``size`` bytes of varied, realistic log lines (deterministic for ``seed``)."""
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    t = 1_765_000_000.0 + seed * 3600
    while total < size:
        t += rng.expovariate(200)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
        kind = rng.random()
        if kind < 0.45:
            method = rng.choice(["GET", "GET", "GET", "POST", "PUT", "DELETE"])
            status = rng.choice([200, 200, 200, 201, 204, 301, 304, 404, 500])
            referer = rng.choice(["-", "https://shop.example.com/", "https://www.google.com/"])
            line = (
                f'{_ip(rng)} - - [{ts}] "{method} {_fill(rng.choice(PATHS), rng)} HTTP/1.1" {status} '
                f'{rng.randrange(0, 250_000)} "{referer}" "{rng.choice(AGENTS)}" rt={rng.expovariate(20):.3f}\n'
            )
        elif kind < 0.85:
            msg, fields = rng.choice(MESSAGES)
            rec = {
                "ts": ts,
                "level": rng.choice(["info", "info", "info", "debug", "warn", "error"]),
                "logger": rng.choice(["shop.api", "shop.payments", "shop.cache", "shop.db", "shop.auth"]),
                "msg": msg,
                "request_id": str(uuid.UUID(int=rng.getrandbits(128))),
                **{k: _value(v, rng) for k, v in fields.items()},
            }
            line = json.dumps(rec) + "\n"
        elif kind < 0.99:
            line = f"{ts} web-{rng.randrange(1, 40):02d} {_fill(rng.choice(SYSLOG), rng)}\n"
        else:
            frames = "".join(
                f'  File "/srv/shop/{rng.choice(WORDS)}/{rng.choice(WORDS)}.py", line {rng.randrange(1, 900)}, '
                f"in {rng.choice(WORDS)}_{rng.choice(WORDS)}\n    {rng.choice(WORDS)} = {rng.choice(WORDS)}(order)\n"
                for _ in range(rng.randrange(2, 9))
            )
            line = f"{ts} ERROR unhandled exception\nTraceback (most recent call last):\n{frames}{rng.choice(ERRORS)}\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()


def wire_bytes(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("headrace_collector_wire_bytes_total{"):
            out[line.split('encoding="')[1].split('"')[0]] = float(line.split()[-1])
    return out


def run_mode(corpus: dict[str, bytes], compression: str, level: int, workdir: Path) -> dict[str, Any]:
    total = sum(map(len, corpus.values()))
    logs, staging = workdir / "logs", workdir / "staging"
    logs.mkdir()
    staging.mkdir()
    for name, data in corpus.items():
        (staging / name).write_bytes(data)
    cport, aport = free_port(), free_port()
    curl, aurl = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{aport}"
    ccfg = {"collector": {"listen": f"127.0.0.1:{cport}", "sink_dir": str(workdir / "sink"), "name": "bench"}}
    (workdir / "c.yaml").write_text(yaml.safe_dump(ccfg))
    acfg = {
        "agent": {
            "name": "bench",
            "collectors": [curl],
            "state_dir": str(workdir / "agent"),
            "listen": f"127.0.0.1:{aport}",
            "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
            "compression": compression,
            "compression_level": level,
        }
    }
    (workdir / "a.yaml").write_text(yaml.safe_dump(acfg))
    col = start_headrace(["collector", "--config", str(workdir / "c.yaml")], workdir / "c.log")
    agent = None
    try:
        wait_http(curl + "/healthz")
        agent = start_headrace(["agent", "--config", str(workdir / "a.yaml")], workdir / "a.log")
        wait_http(aurl + "/healthz")
        cpu0 = (cpu_seconds(agent.pid), cpu_seconds(col.pid))
        t0 = time.monotonic()
        for p in staging.iterdir():
            p.rename(logs / p.name)
        while True:
            st = httpx.get(aurl + "/v1/status", timeout=5).json()
            if len(st["streams"]) == len(corpus) and sum(s["acked_offset"] for s in st["streams"]) == total:
                break
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        cpu1 = (cpu_seconds(agent.pid), cpu_seconds(col.pid))
        wire = wire_bytes(curl)
    finally:
        for proc in (agent, col):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    wire_total = sum(wire.values())
    return {
        "mode": "none" if compression == "none" else f"zstd-{level}",
        "data_bytes": total,
        "wire_bytes": int(wire_total),
        "wire_by_encoding": {k: int(v) for k, v in wire.items()},
        "ratio": round(total / wire_total, 2),
        "seconds": round(seconds, 2),
        "agent_cpu_s": round(cpu1[0] - cpu0[0], 2),
        "collector_cpu_s": round(cpu1[1] - cpu0[1], 2),
        "cpu_s": round(cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="runs per mode; the one with the least CPU is kept")
    ap.add_argument("--out", default="bench/results/wire_compression")
    a = ap.parse_args()
    per_file = a.mb * (1 << 20) // a.files
    corpus = {f"f{i:02d}.log": corpus_lines(i, per_file) for i in range(a.files)}
    total = sum(map(len, corpus.values()))
    lines = sum(d.count(b"\n") for d in corpus.values())
    modes = [("none", 3), ("zstd", 1), ("zstd", 3)]
    results: list[dict[str, Any]] = []
    for compression, level in modes:
        runs = []
        for _ in range(a.repeat):
            with tempfile.TemporaryDirectory(dir=".") as tmp:
                runs.append(run_mode(corpus, compression, level, Path(tmp)))
        results.append(min(runs, key=lambda r: r["cpu_s"]))
    base = results[0]
    text = [
        f"corpus: {total / 1e6:.1f} MB, {lines} lines in {a.files} files (access, JSON app, syslog, tracebacks; "
        f"mean {total / lines:.0f} B/line); agent -> collector on 127.0.0.1, 4 MiB batches",
        f"{'mode':8} {'wire MB':>9} {'ratio':>6} {'saved':>6} {'agent cpu s':>11} {'coll cpu s':>10} "
        f"{'total cpu s':>11} {'extra cpu s/GB saved':>21} {'wall s':>7}",
    ]
    for r in results:
        saved = base["wire_bytes"] - r["wire_bytes"]
        extra = (r["cpu_s"] - base["cpu_s"]) / (saved / 1e9) if saved > 0 else 0.0
        r["extra_cpu_s_per_gb_saved"] = round(extra, 2)
        text.append(
            f"{r['mode']:8} {r['wire_bytes'] / 1e6:9.2f} {r['ratio']:6.2f} {saved / base['wire_bytes']:6.1%} "
            f"{r['agent_cpu_s']:11.2f} {r['collector_cpu_s']:10.2f} {r['cpu_s']:11.2f} {extra:21.2f} "
            f"{r['seconds']:7.2f}"
        )
    report = "\n".join(text)
    print(report)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"mb": a.mb, "files": a.files, "lines": lines, "data_bytes": total, "repeat": a.repeat}
    out.with_suffix(".json").write_text(json.dumps({"corpus": meta, "results": results}, indent=2) + "\n")
    out.with_suffix(".txt").write_text(report + "\n")


if __name__ == "__main__":
    main()
