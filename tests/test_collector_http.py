"""The collector daemon over real sockets: bad input, duplicates, rolling, kill -9 recovery, config errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import (
    HTTP,
    TOKEN,
    assert_done_files_whole,
    assert_exactly_once,
    done_records,
    make_chunk,
    post,
    restart,
    snapshot,
    start_collector,
    stream_bytes,
)
from support import free_port, mapped_packages, rss_mib, wait_until, write_config

from headrace._chunk import encode_batch

# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_reason_and_sink_untouched(daemons: Any, tmp_path: Path) -> None:
    d, url, sink = start_collector(daemons, tmp_path, tokens=[TOKEN], max_body_bytes=64 << 10)
    assert post(url, [make_chunk("app/a.log", 0, 10)], TOKEN).json() == {"acked": 1, "duplicates": 0}
    before = snapshot(sink)
    assert any(k.startswith("open/") for k in before)  # a non-empty sink file is open

    good = make_chunk("app/a.log", 320, 5)
    body = encode_batch([good])
    bad_crc = bytearray(body)
    bad_crc[-10] ^= 0x01  # a data byte: the CRC no longer matches
    auth = {"authorization": f"Bearer {TOKEN}"}

    def named(**kw: str | int) -> bytes:
        c = make_chunk("app/a.log", 320, 1)
        for k, v in kw.items():
            setattr(c, k, v)
        return encode_batch([good, c])  # one good chunk with it: nothing of the batch may be written

    cases: list[tuple[str, dict[str, str], bytes | Iterator[bytes], int, str]] = [
        ("garbage body", auth, b"GET / HTTP/1.0\r\n\r\n", 400, "malformed"),
        ("truncated batch", auth, body[:-7], 400, "malformed"),
        ("trailing bytes", auth, body + b"x", 400, "malformed"),
        ("bad crc", auth, bytes(bad_crc), 400, "bad_crc"),
        ("oversize with length", auth, encode_batch([make_chunk("app/a.log", 320, 3000)]), 413, "body_too_large"),
        ("oversize chunked", auth, iter([b"x" * 16384] * 8), 413, "body_too_large"),
        ("no token", {}, body, 401, "unauthorized"),
        ("wrong token", {"authorization": "Bearer nope"}, body, 401, "unauthorized"),
        ("basic auth", {"authorization": f"Basic {TOKEN}"}, body, 401, "unauthorized"),
        ("stream ../", auth, named(stream="../../etc/passwd"), 400, "bad_stream"),
        ("stream inner ..", auth, named(stream="app/../../x"), 400, "bad_stream"),
        ("stream absolute", auth, named(stream="/etc/passwd"), 400, "bad_stream"),
        ("stream NUL", auth, named(stream="app/a\x00.log"), 400, "bad_stream"),
        ("data_type ../", auth, named(data_type="../app"), 400, "bad_data_type"),
        ("data_type absolute", auth, named(data_type="/app"), 400, "bad_data_type"),
        ("data_type NUL", auth, named(data_type="app\x00"), 400, "bad_data_type"),
        ("source ../", auth, named(source=".."), 400, "bad_source"),
        ("offsets disagree with length", auth, named(seq_end=999), 400, "bad_offsets"),
    ]
    for what, headers, content, status, reason in cases:
        r = HTTP.post(url + "/v1/chunks", content=content, headers=headers, timeout=10)
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"] == reason, what
        assert r.json()["detail"], what
        assert snapshot(sink) == before, f"{what}: the sink changed"

    # An oversize body is refused from its Content-Length, without waiting for the body: a client
    # that announces 10 GB and sends nothing gets its 413 at once.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/chunks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 10000000000\r\n\r\n".encode()
        )
        answer = b""
        while b"body_too_large" not in answer and (part := sock.recv(65536)):
            answer += part
    assert answer.startswith(b"HTTP/1.1 413") and b"body_too_large" in answer
    assert snapshot(sink) == before

    status_body = HTTP.get(url + "/v1/status", headers=auth).json()  # with tokens set, status needs one
    for reason in ("malformed", "bad_crc", "body_too_large", "unauthorized", "bad_stream", "bad_data_type"):
        assert status_body["rejects"][reason] >= 1
    assert status_body["rejects"]["unauthorized"] == 3
    metrics = HTTP.get(url + "/metrics", headers=auth).text
    assert 'headrace_collector_rejects_total{reason="bad_crc"} 1.0' in metrics
    assert d.stop() == 0
    log = d.output()
    assert '"reason": "bad_stream"' in log and "batch rejected" in log
    # after all that, only the one good chunk is in the sink
    assert [r["seq_end"] for r in done_records(sink)] == [320]


# -- duplicates, restart, status ------------------------------------------------------------------


def test_duplicates_acked_and_written_once_across_restarts(daemons: Any, tmp_path: Path) -> None:
    d, url, sink = start_collector(daemons, tmp_path)
    batch = [make_chunk("app/a.log", i * 320, 10) for i in range(5)] + [make_chunk("app/b.log", 0, 3)]
    assert post(url, batch).json() == {"acked": 6, "duplicates": 0}
    assert post(url, batch).json() == {"acked": 6, "duplicates": 6}
    # the same chunk twice in one batch, and concurrently from several clients
    twice = [make_chunk("app/c.log", 0, 4), make_chunk("app/c.log", 0, 4)]
    assert post(url, twice).json() == {"acked": 2, "duplicates": 1}
    results: list[dict[str, int]] = []
    extra = [make_chunk("app/d.log", 0, 7)]
    threads = [threading.Thread(target=lambda: results.append(post(url, extra).json())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["duplicates"] for r in results) == [0, 1, 1, 1, 1, 1]

    status = HTTP.get(url + "/v1/status").json()
    assert status["chunks_in"] == 6 + 6 + 2 + 6 and status["duplicates"] == 6 + 1 + 5
    assert status["store"]["open_records"] == 6 + 1 + 1
    metrics = HTTP.get(url + "/metrics").text
    assert "headrace_collector_fsync_seconds_count" in metrics
    assert d.stop() == 0  # SIGTERM: the open file is closed into done/
    assert not list((sink / "open").iterdir())

    restart(d, url)
    assert post(url, batch).json() == {"acked": 6, "duplicates": 6}
    # a re-send cut differently: it overlaps what is written and carries 5 new lines
    recut = make_chunk("app/a.log", 45 * 32, 10)
    assert post(url, [recut]).json() == {"acked": 1, "duplicates": 0}
    d.kill9()  # the dedupe index must also survive a crash (rebuilt from the recovered open file)
    (open_file,) = (sink / "open").iterdir()
    whole = open_file.read_bytes()
    with open(open_file, "ab") as f:
        f.write(b"\x02\x90\x03" + b"half a block")  # as if the crash had cut a block write short
    restart(d, url)
    assert (sink / "done" / open_file.name).read_bytes() == whole  # the torn tail is cut, the rest kept
    assert [p.read_bytes() for p in (sink / "torn").iterdir()] == [b"\x02\x90\x03half a block"]
    assert post(url, [*batch, recut]).json() == {"acked": 7, "duplicates": 7}
    assert post(url, [make_chunk("app/a.log", 55 * 32, 1)]).json() == {"acked": 1, "duplicates": 0}
    assert d.stop() == 0
    assert_done_files_whole(sink)
    assert_exactly_once(sink, {"app/a.log": 56 * 32, "app/b.log": 3 * 32, "app/c.log": 4 * 32, "app/d.log": 7 * 32})


# -- rolling --------------------------------------------------------------------------------------


def test_roll_by_size_and_by_age(daemons: Any, tmp_path: Path) -> None:
    d, url, sink = start_collector(daemons, tmp_path, roll_bytes=20_000, roll_seconds=1.5)
    pos = 0
    for _ in range(10):
        assert post(url, [make_chunk("app/a.log", pos, 250)]).status_code == 200  # 8 KB each
        pos += 250 * 32
    done = sorted((sink / "done").glob("*.avro"))
    assert len(done) >= 3  # 80 KB in files of about 20-28 KB
    for p in done:
        assert p.stat().st_size >= 20_000
    # by age: a small batch is closed into done/ without any further traffic
    assert post(url, [make_chunk("app/a.log", pos, 1)]).status_code == 200
    pos += 32
    wait_until(lambda: not list((sink / "open").iterdir()), 10, "the open file to roll by age")
    assert_done_files_whole(sink)
    assert_exactly_once(sink, {"app/a.log": pos})
    names = [p.name for p in sorted((sink / "done").glob("*.avro"))]
    assert names == [f"{i:010d}-col.avro" for i in range(1, len(names) + 1)]
    assert d.stop() == 0


# -- crash ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["deflate", "zstandard"])
def test_kill9_and_sigterm_during_concurrent_posting_lose_and_duplicate_nothing(
    daemons: Any, tmp_path: Path, codec: str
) -> None:
    d, url, sink = start_collector(daemons, tmp_path, roll_bytes=300_000, codec=codec)
    streams = [f"app/s{i}.log" for i in range(4)]
    acked_end = dict.fromkeys(streams, 0)  # what the "agent" may checkpoint
    stop = threading.Event()

    def poster(stream: str) -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                start = acked_end[stream]
                # re-cut re-sends: each batch starts at the acked offset with a varying chunk size
                chunks = [make_chunk(stream, start + k * 3200, 100) for k in range(8)]
                try:
                    r = post(url, chunks, client=client)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    acked_end[stream] = chunks[-1].seq_end

    threads = [threading.Thread(target=poster, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(list((sink / "done").glob("*.avro"))) >= 2, 60, "some rolls")
        wait_until(lambda: sum(acked_end.values()) > 1_500_000, 60, "more acks")
        d.kill9()
        acked_at_kill = dict(acked_end)
        time.sleep(0.3)  # posters fail against the dead collector meanwhile
        restart(d, url)
        wait_until(lambda: all(acked_end[s] > acked_at_kill[s] + 50_000 for s in streams), 60, "progress after restart")
        # SIGTERM while the posters keep posting: in-flight requests finish, and what they were acked is kept
        assert d.stop() == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not list((sink / "open").iterdir())
    assert_done_files_whole(sink)
    # every acked byte is there once; bytes written but not acked before the kill were re-sent and
    # deduplicated, so each stream is one contiguous run that ends at or after its acked offset
    got = stream_bytes(sink)
    ends = {s: max(e for _, e, _ in got[s]) for s in streams}
    assert all(ends[s] >= acked_end[s] for s in streams)
    assert_exactly_once(sink, ends)


# -- configuration --------------------------------------------------------------------------------


def test_running_collector_loads_neither_pyarrow_nor_sqlalchemy(daemons: Any, tmp_path: Path) -> None:
    """The collector daemon needs neither: they belong to the batch jobs (archive, demux, load)."""
    d, url, _ = start_collector(daemons, tmp_path, codec="deflate")
    assert post(url, [make_chunk("app/a.log", 0, 10)]).status_code == 200
    assert d.proc is not None
    loaded = mapped_packages(d.proc.pid)
    assert not loaded, f"the collector process loaded {loaded}"
    print(f"collector RSS after a batch: {rss_mib(d.proc.pid):.0f} MiB")


def test_misspelled_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", {"collector": {"sink_dir": str(tmp_path), "roll_byts": 5}})
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "collector", "--config", str(path)], capture_output=True, timeout=60
    )
    assert r.returncode == 2
    assert b"collector.roll_byts" in r.stderr and b"unknown key" in r.stderr
    assert not list(tmp_path.glob("*/open"))


def test_second_collector_on_same_sink_dir_refuses(daemons: Any, tmp_path: Path) -> None:
    _, _, sink = start_collector(daemons, tmp_path)
    path = write_config(
        tmp_path / "two.yaml", {"collector": {"sink_dir": str(sink), "listen": f"127.0.0.1:{free_port()}"}}
    )
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "collector", "--config", str(path)], capture_output=True, timeout=60
    )
    assert r.returncode != 0
    assert b"another collector is using sink_dir" in r.stderr
