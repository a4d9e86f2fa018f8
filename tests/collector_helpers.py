"""Shared helpers of the collector tests: deterministic chunks, starting collectors, reading done/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import httpx
from support import Daemon, free_port, write_config

from headrace._chunk import BATCH_CONTENT_TYPE, Chunk, encode_batch
from headrace._container import scan_container

TOKEN = "s3cret-token"

#: One client for the tests' plain requests: building an httpx.Client (its SSL context) takes ~100 ms here.
HTTP = httpx.Client(timeout=30)


def line_data(stream: str, start: int, n_lines: int) -> bytes:
    """Deterministic newline-terminated content for the lines starting at byte ``start`` (fixed 32-byte lines)."""
    first = start // 32
    return b"".join(f"{stream[-6:]:>6} line {i:015d}....\n".encode() for i in range(first, first + n_lines))


def make_chunk(stream: str, start: int, n_lines: int, source: str = "host-a") -> Chunk:
    data = line_data(stream, start, n_lines)
    assert len(data) == 32 * n_lines
    return Chunk(source, stream, "app", start, start + len(data), data, {"env": "test"})


def start_collector(
    daemons: Callable[..., Daemon], tmp_path: Path, name: str = "col", **settings: Any
) -> tuple[Daemon, str, Path]:
    port = free_port()
    sink = tmp_path / f"{name}-sink"
    cfg = {"listen": f"127.0.0.1:{port}", "sink_dir": str(sink), "name": name, "roll_seconds": 3600, **settings}
    path = write_config(tmp_path / f"{name}.yaml", {"collector": cfg})
    d = daemons(["collector", "--config", str(path)], name).start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz")
    return d, url, sink


def restart(d: Daemon, url: str) -> None:
    d.start()
    d.wait_http(url + "/healthz")


def post(url: str, chunks: list[Chunk], token: str | None = None, client: httpx.Client | None = None) -> httpx.Response:
    headers = {"content-type": BATCH_CONTENT_TYPE}
    if token:
        headers["authorization"] = f"Bearer {token}"
    c = client or HTTP
    return c.post(url + "/v1/chunks", content=encode_batch(chunks), headers=headers, timeout=30)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def done_records(sink: Path) -> Iterator[dict[str, Any]]:
    for path in sorted((sink / "done").glob("*.avro")):
        with open(path, "rb") as f:
            yield from fastavro.reader(f)  # type: ignore[misc]


def assert_done_files_whole(sink: Path) -> None:
    for path in sorted((sink / "done").glob("*.avro")):
        data = path.read_bytes()
        scan = scan_container(data)
        assert scan.header_end is not None and scan.valid_end == len(data) and scan.blocks > 0, path


def stream_bytes(sink: Path) -> dict[str, list[tuple[int, int, bytes]]]:
    out: dict[str, list[tuple[int, int, bytes]]] = {}
    for r in done_records(sink):
        out.setdefault(r["stream"], []).append((r["seq_start"], r["seq_end"], r["data"]))
    return out


def assert_exactly_once(sink: Path, expected_end: dict[str, int]) -> None:
    """Every stream's bytes ``[0, end)`` are in done/ exactly once, with the right content."""
    got = stream_bytes(sink)
    assert sorted(got) == sorted(expected_end)
    for stream, pieces in got.items():
        pieces.sort()
        pos = 0
        for start, end, data in pieces:
            assert start == pos, f"{stream}: gap or overlap at {pos} (next piece starts at {start})"
            assert data == line_data(stream, start, (end - start) // 32)
            pos = end
        assert pos == expected_end[stream], stream
