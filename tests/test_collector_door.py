"""Validation at the collector's door: one hostile chunk never stops a collector or a collector tree.

Real collector processes on real sockets. Every chunk below has a valid CRC, so only the header
checks stand between it and the sink (and, before them, an Avro ``long`` overflow killed the process).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
from collector_helpers import HTTP, assert_exactly_once, done_records, make_chunk, post, snapshot, start_collector
from support import wait_until
from test_collector_forward import start_forwarder

from headrace._chunk import BATCH_CONTENT_TYPE, Chunk
from headrace._spool import Spool

BIG = 1 << 63  # one past the largest Avro long


def raw_batch(*chunks: tuple[bytes, bytes]) -> bytes:
    """A batch of (header bytes, data) pairs, each with a correct CRC: the header is sent as given."""
    out = [b"HRCB", bytes([1]), struct.pack(">I", len(chunks))]
    for header, data in chunks:
        crc = zlib.crc32(data, zlib.crc32(header))
        out += [struct.pack(">I", len(header)), header, struct.pack(">I", len(data)), data, struct.pack(">I", crc)]
    return b"".join(out)


def header(data: bytes, **fields: Any) -> bytes:
    h: dict[str, Any] = {
        "source": "host-a",
        "stream": "app/evil.log",
        "data_type": "app",
        "seq_start": 0,
        "seq_end": len(data),
        "tags": {"env": "test"},
    }
    h.update(fields)
    return json.dumps(h).encode()


DATA = b"one evil line\n"

#: (what, header bytes, expected reason); every one is answered 400 and writes nothing.
HOSTILE: list[tuple[str, bytes, str]] = [
    ("negative seq", header(DATA, seq_start=-len(DATA), seq_end=0), "bad_offsets"),
    ("seq_end < seq_start", header(DATA, seq_start=100, seq_end=100 - len(DATA)), "bad_offsets"),
    ("seq Infinity", header(DATA).replace(b'"seq_start": 0', b'"seq_start": Infinity'), "malformed"),
    ("seq NaN", header(DATA).replace(b'"seq_start": 0', b'"seq_start": NaN'), "malformed"),
    ("seq as string", header(DATA, seq_start="0", seq_end=str(len(DATA))), "bad_offsets"),
    ("seq as float", header(DATA, seq_start=0.0, seq_end=float(len(DATA))), "bad_offsets"),
    ("seq as float 1e3", header(DATA, seq_start=1e3, seq_end=1000 + len(DATA)), "bad_offsets"),
    ("seq as bool", header(b"x", seq_start=False, seq_end=True), "bad_offsets"),
    ("seq null", header(DATA, seq_start=None), "bad_offsets"),
    ("source with newline", header(DATA, source="host-a\n"), "bad_source"),
    ("stream with newline", header(DATA, stream="app/evil.log\n"), "bad_stream"),
    ("data_type with newline", header(DATA, data_type="app\n"), "bad_data_type"),
    ("tag name with newline", header(DATA, tags={"env\n": "x"}), "bad_tags"),
    ("tag value lone surrogate", header(DATA, tags={"env": "\ud800"}), "bad_tags"),
    ("tags as pairs", header(DATA, tags=[["env", "x"]]), "bad_tags"),
    ("source as number", header(DATA, source=7), "bad_source"),
    ("duplicate key", header(DATA)[:-1] + b', "seq_start": 0}', "malformed"),
    ("unknown field", header(DATA, extra=1), "malformed"),
    # last: before the fix, these killed the collector (OverflowError writing the Avro long)
    ("seq 2^63", header(DATA, seq_start=BIG, seq_end=BIG + len(DATA)), "bad_offsets"),
    ("seq_end 2^63", header(DATA, seq_start=BIG - len(DATA), seq_end=BIG), "bad_offsets"),
    ("seq 2^64", header(DATA, seq_start=1 << 64, seq_end=(1 << 64) + len(DATA)), "bad_offsets"),
]


def test_hostile_chunk_headers_are_refused_and_the_collector_lives(daemons: Any, tmp_path: Path) -> None:
    d, url, sink = start_collector(daemons, tmp_path)
    assert post(url, [make_chunk("app/a.log", 0, 10)]).json() == {"acked": 1, "duplicates": 0}
    before = snapshot(sink)
    good = make_chunk("app/a.log", 320, 2)
    failures: list[str] = []  # every case is tried, so a failure lists all findings, not the first
    for what, head, reason in HOSTILE:
        # alone, and after a good chunk in the same batch: nothing of the batch may be written
        for body in (raw_batch((head, DATA)), raw_batch((good.header_bytes(), good.data), (head, DATA))):
            try:
                r = HTTP.post(url + "/v1/chunks", content=body, headers={"content-type": BATCH_CONTENT_TYPE})
            except httpx.TransportError as exc:
                failures.append(f"{what}: {exc!r}")
                continue
            if r.status_code != 400 or r.json().get("error") != reason or not r.json().get("detail"):
                failures.append(f"{what}: {r.status_code} {r.text}")
            if not d.alive():
                failures.append(f"{what}: the collector died")
            elif snapshot(sink) != before:
                failures.append(f"{what}: the sink changed")
    assert not failures, "\n".join(failures)
    assert HTTP.get(url + "/healthz").status_code == 200
    assert post(url, [good]).json() == {"acked": 1, "duplicates": 0}
    assert d.stop() == 0
    assert [(r["seq_start"], r["seq_end"]) for r in done_records(sink)] == [(0, 320), (320, 384)]


def test_a_forwarding_collector_refuses_what_its_root_would(daemons: Any, tmp_path: Path) -> None:
    root, root_url, root_sink = start_collector(daemons, tmp_path, name="root", tokens=["up-token"])
    a, a_url = start_forwarder(daemons, tmp_path, root_url)
    for what, head, reason in HOSTILE:
        r = HTTP.post(a_url + "/v1/chunks", content=raw_batch((head, DATA)))
        assert r.status_code == 400 and r.json()["error"] == reason, (what, r.text)
    status = HTTP.get(a_url + "/v1/status").json()
    assert status["chunks_in"] == 0 and status["store"]["spool_chunks"] == 0
    chunks = [make_chunk("app/a.log", 0, 5)]
    assert post(a_url, chunks).json() == {"acked": 1, "duplicates": 0}
    wait_until(lambda: HTTP.get(a_url + "/v1/status").json()["store"]["forwarded_chunks"] == 1, 30, "forwarding")
    assert (
        root.alive()
        and HTTP.get(root_url + "/v1/status", headers={"authorization": "Bearer up-token"}).json()["rejects"] == {}
    )
    assert a.stop() == 0 and root.stop() == 0
    assert_exactly_once(root_sink, {"app/a.log": 160})


def test_a_spooled_chunk_the_root_refuses_is_set_aside_not_retried(daemons: Any, tmp_path: Path) -> None:
    """A chunk an older forwarder spooled (seq 2^63) is refused upstream: dead-lettered, and the rest flows."""
    root, root_url, root_sink = start_collector(daemons, tmp_path, name="root", tokens=["up-token"])
    a, a_url = start_forwarder(daemons, tmp_path, root_url)
    assert post(a_url, [make_chunk("app/a.log", 0, 5)]).status_code == 200
    wait_until(lambda: HTTP.get(a_url + "/v1/status").json()["store"]["forwarded_chunks"] == 1, 30, "forwarding")
    assert a.stop() == 0
    spool_dir = tmp_path / "fwd" / "forward-spool"
    spool = Spool(spool_dir / "chunks")  # what an older collector wrote: spool.append does not validate
    spool.append(Chunk("host-a", "app/evil.log", "app", BIG, BIG + len(DATA), DATA, {}))
    spool.append(Chunk("host-a", "app/evil.log\n", "app", 0, len(DATA), DATA, {}))
    spool.append(make_chunk("app/a.log", 160, 5))
    spool.sync()
    spool.close()
    a.start()
    a.wait_http(a_url + "/healthz")

    def drained() -> bool:
        return bool(HTTP.get(a_url + "/v1/status").json()["store"]["spool_chunks"] == 0)

    wait_until(drained, 30, "the forwarder to set the refused chunks aside and forward the rest")
    assert post(a_url, [make_chunk("app/a.log", 320, 5)]).status_code == 200
    wait_until(drained, 30, "the forwarder to forward a chunk sent after the refusal")
    status = HTTP.get(a_url + "/v1/status").json()["store"]
    assert status["rejected_upstream_chunks"] >= 1
    metrics = HTTP.get(a_url + "/metrics").text
    assert "headrace_collector_forward_rejected_chunks_total" in metrics
    rejected = sorted((spool_dir / "rejected").glob("*.batch"))
    assert rejected, "the refused batch is kept whole in rejected/"
    notes = [json.loads(p.with_name(p.name + ".json").read_bytes()) for p in rejected]
    assert all(n["status"] == 400 for n in notes)
    assert root.alive() and HTTP.get(root_url + "/healthz").status_code == 200
    assert a.stop() == 0
    assert '"ship_rejected"' in a.output() or "ship_rejected" in a.output()
    assert root.stop() == 0
    assert_exactly_once(root_sink, {"app/a.log": 480})
