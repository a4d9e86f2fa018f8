"""zstd on the wire: agent -> collector and collector -> collector, fallback to identity, bombs, corrupt frames.

Real collectors and agents as processes on real sockets. An "old collector" is a collector with
``accept_compression: false``, which ignores ``Content-Encoding`` exactly as collectors did before
compression existed (a zstd body is then read as a batch: 400 ``malformed``, bad magic).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import zstandard
from collector_helpers import HTTP, assert_exactly_once, make_chunk, start_collector
from support import free_port, rss_mib, wait_until, write_config

from headrace._chunk import BATCH_CONTENT_TYPE, encode_batch
from headrace._ship import Shipper

OLD_COLLECTOR_ANSWER = {"error": "malformed", "detail": "not a headrace chunk batch (bad magic)"}


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of ``name`` (with ``labels``) from ``url``'s /metrics, 0 when absent."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in HTTP.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


def zstd_post(url: str, body: bytes, **headers: str) -> httpx.Response:
    return HTTP.post(
        url + "/v1/chunks",
        content=body,
        headers={"content-type": BATCH_CONTENT_TYPE, "content-encoding": "zstd", **headers},
        timeout=30,
    )


def realistic_lines(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    paths = ["/api/v1/items", "/api/v1/users/{}", "/login", "/static/app.{}.js", "/api/v2/search?q={}"]
    out = []
    for i in range(n):
        p = rng.choice(paths).format(rng.getrandbits(24))
        out.append(
            f"2026-12-06T20:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{rng.randrange(1000):03d}Z "
            f"{rng.choice(['INFO', 'WARN', 'DEBUG', 'ERROR'])} 10.{rng.randrange(256)}.{rng.randrange(256)}.7 "
            f'"GET {p} HTTP/1.1" {rng.choice([200, 200, 304, 404, 500])} {rng.randrange(90000)} '
            f"trace={rng.getrandbits(64):016x} ms={rng.expovariate(0.05):.1f}\n"
        )
    return "".join(out).encode()


def start_agent(daemons: Any, tmp_path: Path, collector: str, logs: Path, **extra: Any) -> tuple[Any, str]:
    port = free_port()
    cfg = {
        "name": "host-a",
        "collectors": [collector],
        "state_dir": str(tmp_path / "agent-state"),
        "listen": f"127.0.0.1:{port}",
        "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
        "max_backoff_seconds": 0.2,
        **extra,
    }
    path = write_config(tmp_path / "agent.yaml", {"agent": cfg})
    d = daemons(["agent", "--config", str(path)], "agent").start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz")
    return d, url


def caught_up(agent_url: str, files: dict[Path, bytes]) -> bool:
    streams = {s["path"]: s for s in HTTP.get(agent_url + "/v1/status", timeout=5).json()["streams"]}
    return all(
        str(p) in streams and streams[str(p)]["acked_offset"] == len(data) and streams[str(p)]["lag_bytes"] == 0
        for p, data in files.items()
    )


def sink_streams(sink: Path) -> dict[str, bytes]:
    from collector_helpers import stream_bytes

    out = {}
    for stream, pieces in stream_bytes(sink).items():
        pieces.sort()
        pos = 0
        for start, end, _ in pieces:
            assert start == pos, f"{stream}: gap or overlap at {pos}"
            pos = end
        out[stream] = b"".join(d for _, _, d in pieces)
    return out


def run_agent_to(daemons: Any, tmp_path: Path, col_url: str, **agent_extra: Any) -> tuple[Any, dict[Path, bytes]]:
    logs = tmp_path / "logs"
    logs.mkdir()
    files = {logs / f"f{i}.log": realistic_lines(i, 4000 + 1500 * i) for i in range(3)}
    for p, data in files.items():
        p.write_bytes(data)
    agent, agent_url = start_agent(daemons, tmp_path, col_url, logs, **agent_extra)
    wait_until(lambda: caught_up(agent_url, files), 60, "the agent to have every byte acked")
    return agent, files


def test_agent_to_collector_compressed_delivers_every_line_exactly_once(daemons: Any, tmp_path: Path) -> None:
    col, col_url, sink = start_collector(daemons, tmp_path)
    agent, files = run_agent_to(daemons, tmp_path, col_url)
    zstd_bytes = metric(col_url, "headrace_collector_wire_bytes_total", encoding="zstd")
    data_bytes = metric(col_url, "headrace_collector_bytes_total")
    assert metric(col_url, "headrace_collector_wire_bytes_total", encoding="identity") == 0
    assert data_bytes == sum(map(len, files.values()))
    assert 0 < zstd_bytes < data_bytes / 2, (zstd_bytes, data_bytes)  # varied lines still compress well
    assert agent.stop() == 0 and col.stop() == 0
    got = sink_streams(sink)
    assert got == {str(p).lstrip("/"): data for p, data in files.items()}


def test_old_collector_gets_identity_from_the_agent(daemons: Any, tmp_path: Path) -> None:
    col, col_url, sink = start_collector(daemons, tmp_path, accept_compression=False)
    # What a collector from before compression answers to a zstd body, byte for byte the same reason.
    body = zstandard.ZstdCompressor().compress(encode_batch([make_chunk("s", 0, 10)]))
    r = zstd_post(col_url, body)
    assert (r.status_code, r.json()) == (400, OLD_COLLECTOR_ANSWER)
    agent, files = run_agent_to(daemons, tmp_path, col_url)
    assert metric(col_url, "headrace_collector_wire_bytes_total", encoding="identity") > 0
    assert metric(col_url, "headrace_collector_wire_bytes_total", encoding="zstd") == 0
    # One refusal, then the agent remembers: identity straight away for the rest.
    assert metric(col_url, "headrace_collector_rejects_total", reason="malformed") == 2  # ours + the agent's one
    assert '"ship_compression_refused"' in agent.output()
    assert agent.stop() == 0 and col.stop() == 0
    assert sink_streams(sink) == {str(p).lstrip("/"): data for p, data in files.items()}


def test_shipper_remembers_fallback_per_collector_and_retries_later(daemons: Any, tmp_path: Path) -> None:
    _, old_url, _ = start_collector(daemons, tmp_path, name="old", accept_compression=False)
    _, new_url, _ = start_collector(daemons, tmp_path, name="new")

    def refusals() -> float:
        return metric(old_url, "headrace_collector_rejects_total", reason="malformed")

    sticky = Shipper([old_url], compression="zstd", identity_retry_seconds=3600)
    for i in range(3):
        ack = sticky.ship([make_chunk("sticky", 320 * i, 10)])
        assert ack.acked == 1
    assert refusals() == 1  # only the first batch was tried compressed
    assert not sticky.wants_zstd(old_url) and sticky.wants_zstd(new_url)  # remembered per collector

    retrying = Shipper([old_url], compression="zstd", identity_retry_seconds=0)
    for i in range(2):
        retrying.ship([make_chunk("retry", 320 * i, 10)])
    assert refusals() == 3  # the retry time passed: zstd tried again each time
    sticky.close()
    retrying.close()

    new = Shipper([new_url], compression="zstd")
    new.ship([make_chunk("n", 0, 50)])
    assert metric(new_url, "headrace_collector_wire_bytes_total", encoding="zstd") > 0
    new.close()


def test_forwarder_compresses_upstream_and_falls_back_for_an_old_root(daemons: Any, tmp_path: Path) -> None:
    for accept in (True, False):
        sub = tmp_path / f"accept-{accept}"
        sub.mkdir()
        _root, root_url, root_sink = start_collector(daemons, sub, name="root", accept_compression=accept)
        port = free_port()
        fwd_cfg = {
            "listen": f"127.0.0.1:{port}",
            "sink_dir": str(sub / "fwd"),
            "name": "fwd",
            "upstream": [root_url],
            "upstream_max_backoff": 0.2,
            "upstream_compression_level": 1,
        }
        fwd = daemons(
            ["collector", "--config", str(write_config(sub / "fwd.yaml", {"collector": fwd_cfg}))], f"fwd-{accept}"
        ).start()
        fwd_url = f"http://127.0.0.1:{port}"
        fwd.wait_http(fwd_url + "/healthz")
        sent: dict[str, int] = {}
        shipper = Shipper([fwd_url], compression="zstd")
        for i in range(20):
            stream = f"s{i % 4}"
            shipper.ship([make_chunk(stream, sent.get(stream, 0), 50)])
            sent[stream] = sent.get(stream, 0) + 50 * 32
        shipper.close()
        assert metric(fwd_url, "headrace_collector_wire_bytes_total", encoding="zstd") > 0
        total = sum(sent.values())
        wait_until(
            lambda u=root_url, t=total: metric(u, "headrace_collector_bytes_total") >= t,  # type: ignore[misc]
            30,
            "the root to have every forwarded byte",
        )
        root_zstd = metric(root_url, "headrace_collector_wire_bytes_total", encoding="zstd")
        assert (root_zstd > 0) == accept
        assert _root.stop() == 0
        assert_exactly_once(root_sink, sent)


def test_zstd_bombs_are_refused_with_bounded_memory(daemons: Any, tmp_path: Path) -> None:
    limit = 8 << 20
    col, url, sink = start_collector(daemons, tmp_path, max_body_bytes=limit)
    assert col.proc is not None
    before = rss_mib(col.proc.pid)
    # 1 GiB of zeros in 40 KB, declaring its size: refused from the frame header.
    cctx = zstandard.ZstdCompressor(level=1)
    zeros = bytes(1 << 20)
    comp = cctx.compressobj(size=1 << 30)
    bomb = b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush()
    assert len(bomb) < 100_000
    for _ in range(5):
        r = zstd_post(url, bomb)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text
    # The same without a declared size: refused, nothing decompressed.
    comp = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    sizeless = b"".join(comp.compress(zeros) for _ in range(1024)) + comp.flush()
    r = zstd_post(url, sizeless)
    assert r.status_code == 400 and r.json()["error"] == "bad_encoding", r.text
    # A frame that declares 1 KiB, followed by the 1 GiB one: decompression stops at the declared size.
    liar = zstandard.ZstdCompressor().compress(bytes(1024)) + bomb
    r = zstd_post(url, liar)
    assert r.status_code == 400 and r.json()["error"] == "bad_encoding", r.text
    # Declared just under the limit, chunked (no Content-Length): accepted into memory only up to the limit.
    near = zstandard.ZstdCompressor().compress(bytes(limit - 16))
    r = HTTP.post(
        url + "/v1/chunks",
        content=iter([near[:10], near[10:]]),
        headers={"content-type": BATCH_CONTENT_TYPE, "content-encoding": "zstd"},
    )
    assert r.status_code == 400 and r.json()["error"] == "malformed"  # zeros are not a batch
    assert rss_mib(col.proc.pid) - before < 40, (before, rss_mib(col.proc.pid))
    assert col.alive() and HTTP.get(url + "/v1/status").json()["chunks_in"] == 0
    assert not list((sink / "done").glob("*")) and not list((sink / "open").glob("*.avro"))


def test_corrupt_or_unknown_encodings_write_nothing(daemons: Any, tmp_path: Path) -> None:
    col, url, sink = start_collector(daemons, tmp_path)
    good = zstandard.ZstdCompressor().compress(encode_batch([make_chunk("s", 0, 100)]))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    cases = {
        "corrupt": bytes(flipped),
        "truncated": good[:-5],
        "trailing garbage": good + b"junk",
        "two frames": good + good,
        "not zstd": encode_batch([make_chunk("s", 0, 100)]),
        "empty": b"",
    }
    for what, body in cases.items():
        r = zstd_post(url, body)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert r.json()["error"] in {"bad_encoding", "bad_crc", "malformed"}, (what, r.text)
    for enc in ("gzip", "br", "zstd, gzip", "x" * 300):
        r = zstd_post(url, good, **{"content-encoding": enc})
        assert r.status_code == 415 and r.headers["accept-encoding"] == "zstd", (enc, r.text)
    status = HTTP.get(url + "/v1/status").json()
    assert status["chunks_in"] == 0 and col.alive()
    # The valid frame still goes through afterwards, identity too.
    assert zstd_post(url, good).json() == {"acked": 1, "duplicates": 0}
    r = HTTP.post(url + "/v1/chunks", content=encode_batch([make_chunk("s", 3200, 10)]))
    assert r.json() == {"acked": 1, "duplicates": 0}
    assert col.stop() == 0
    assert_exactly_once(sink, {"s": 3200 + 320})
