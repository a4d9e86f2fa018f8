"""A full disk (issue 11, item 6) on the collector's sink and on the agent's spool, for real.

Each test mounts a small tmpfs (``mount -t tmpfs -o size=…``; root needed, else skipped) as the
daemon's folder and fills it with a ballast file, so writes fail with a genuine ``ENOSPC``; the
space "returns" when the test deletes the ballast.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_testsink import TestSink
from collector_helpers import HTTP, done_records, make_chunk, post
from support import Daemon, free_port, wait_until, write_config


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    mounts: list[Path] = []

    def mount(path: Path, size: int) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (root needed): {r.stderr.decode().strip()}")
        mounts.append(path)
        return path

    yield mount
    for p in reversed(mounts):
        subprocess.run(["umount", "-l", str(p)], capture_output=True)


def fill(path: Path, leave: int = 0) -> int:
    """Write ``path`` until its filesystem is full, then give back ``leave`` bytes; its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block = b"\0" * 4096
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    size = path.stat().st_size
    if leave:
        os.truncate(path, max(0, size - leave))
    return path.stat().st_size


def health(url: str) -> httpx.Response:
    return HTTP.get(url + "/healthz", timeout=5)


def leftovers(root: Path) -> list[str]:
    """Temporary files a failed atomic write left behind (the old bug: a zero-byte one in torn/)."""
    return [str(p) for p in root.rglob(".*.tmp-*")]


# -- collector ----------------------------------------------------------------------------------------


def test_collector_disk_full_then_restart_while_still_full(
    tmp_path: Path, daemons: Callable[..., Daemon], tmpfs: Callable[[Path, int], Path]
) -> None:
    sink = tmpfs(tmp_path / "sink", 8 << 20)
    ballast = sink / "ballast"
    fill(ballast, leave=256 << 10)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    torn_cap = 16 << 10
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "sink_dir": str(sink),
        "name": "col",
        "roll_seconds": 3600,
        "torn_max_bytes": torn_cap,
    }
    d = daemons(["collector", "--config", str(write_config(tmp_path / "col.yaml", {"collector": cfg}))], "col")
    d.start()
    d.wait_http(url + "/healthz")

    # 1. Fill it up while running: the write that fails is answered 503 disk_full (no ack), no exit.
    chunks = [make_chunk("s", i * 32 * 256, 256) for i in range(400)]  # 8 KiB each, 3.2 MiB in all
    acked: set[int] = set()
    refused = None
    for i, c in enumerate(chunks):
        r = post(url, [c])
        if r.status_code != 200:
            refused = r
            break
        acked.add(i)
    assert refused is not None and refused.status_code == 503, "the disk never filled up"
    assert refused.json()["error"] == "disk_full"
    r = wait_until(lambda: (r := health(url)).status_code == 503 and r, 10, "healthz 503")
    assert "disk full" in r.json()["reason"]
    assert d.alive()

    # 2. A crash leaves a torn tail in open/; restart while the disk is still full, three times.
    d.kill9()
    open_files = sorted((sink / "open").glob("*.avro"))
    os.truncate(ballast, ballast.stat().st_size - (64 << 10))  # room for the test's own torn tail
    if open_files:
        with open(open_files[-1], "ab") as f:
            f.write(os.urandom(6000))
    fill(sink / "ballast2")
    for _ in range(3):
        d.start()
        # Up and answering (503 if the recovery itself is waiting for space; 200 if cutting the
        # tail freed enough for it): no crash loop either way.
        wait_until(lambda: d.alive() and health(url).status_code in (200, 503), 20, "answering after restart")
        r = post(url, [chunks[len(acked)]])
        assert r.status_code == 503 and r.json()["error"] == "disk_full"  # nothing acked
        r = health(url)
        assert r.status_code == 503 and "disk full" in r.json()["reason"], r.text
        assert d.alive(), d.output()
        wait_until(lambda: not leftovers(sink), 5, "no temporary file left (a retry may be writing one now)")
        assert sum(p.stat().st_size for p in (sink / "torn").iterdir()) <= torn_cap
        d.kill9()
    assert "Traceback" not in d.output()

    # 3. Another start while full (its recovery may itself wait for space, or succeed because
    # cutting and removing crash remains freed some): 503 disk_full either way, then space returns
    # and it takes requests again without a restart.
    (sink / "index.json").unlink()
    fill(sink / "ballast3")
    d.start()
    wait_until(lambda: d.alive() and health(url).status_code in (200, 503), 20, "answering after restart")
    # a chunk not acked yet: it needs space (an acked one could be answered as a duplicate, 200,
    # when the recovery succeeded: nothing to write)
    r = post(url, [chunks[len(acked)]])
    assert r.status_code == 503 and r.json()["error"] == "disk_full", r.text
    assert health(url).status_code == 503
    for p in sink.glob("ballast*"):
        p.unlink()
    wait_until(lambda: health(url).status_code == 200, 20, "healthy once space returned")
    for c in chunks:  # the agent's view: everything not acked is sent again (acked ones too, harmlessly)
        assert post(url, [c]).status_code == 200
    assert d.stop() == 0
    assert not leftovers(sink)
    assert sum(p.stat().st_size for p in (sink / "torn").iterdir()) <= torn_cap
    got = sorted((r["seq_start"], r["seq_end"], r["data"]) for r in done_records(sink) if r["stream"] == "s")
    pos, data = 0, b""
    for start, end, piece in got:
        assert start == pos, f"gap or overlap at {pos}: the next record starts at {start}"
        pos, data = end, data + piece
    assert data == b"".join(c.data for c in chunks), "every chunk exactly once"


# -- agent --------------------------------------------------------------------------------------------


def test_agent_spool_disk_full_keeps_acked_records_and_recovers(
    tmp_path: Path, daemons: Callable[..., Daemon], tmpfs: Callable[[Path, int], Path]
) -> None:
    sink = TestSink().start()
    try:
        state = tmpfs(tmp_path / "state", 1 << 20)
        logs = tmp_path / "logs"
        logs.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cfg: dict[str, Any] = {
            "name": "host-a",
            "collectors": [sink.url],
            "state_dir": str(state),
            "listen": f"127.0.0.1:{port}",
            "sources": [{"path": str(logs / "*.log"), "data_type": "files"}],
            "spool_segment_bytes": 32 << 10,
            "rescan_seconds": 0.5,
            "partial_line_seconds": 0.3,
            "max_backoff_seconds": 0.2,
            "supervise": {"backoff_seconds": 0.1, "max_backoff_seconds": 0.5, "settle_seconds": 1.0},
        }
        path = write_config(tmp_path / "agent.yaml", {"agent": cfg})
        d = daemons(["agent", "--config", str(path)], "agent")
        d.start()
        d.wait_http(url + "/healthz")

        def log_api(text: str) -> httpx.Response:
            return HTTP.post(url + "/v1/log", content=json.dumps({"data_type": "app", "records": [text]}))

        assert log_api("first").status_code == 200
        wait_until(lambda: sink.data_by_stream().get("_api/app") == b"first\n", 20, "first record")
        sink.fail_with = 503  # the collector is down: what is acked now stays in the spool
        fill(state / "ballast", leave=96 << 10)
        acked = [b"first\n"]
        refused = None
        for i in range(2000):
            text = f"record {i:05d} " + "x" * 200
            r = log_api(text)
            if r.status_code != 200:
                refused = r
                break
            acked.append(text.encode() + b"\n")
        assert refused is not None and refused.status_code == 503, "the spool's disk never filled up"
        assert refused.json()["error"] == "disk_full"
        r = wait_until(lambda: (r := health(url)).status_code == 503 and r, 10, "healthz 503")
        assert "disk full" in r.json()["reason"]
        lines = b"".join(b"file line %04d\n" % i for i in range(200))
        (logs / "a.log").write_bytes(lines)  # the reader cannot spool it: it dies, waits, retries
        r = wait_until(lambda: "agent-reader" in (r := health(url)).json().get("reason", "") and r, 20, "reader down")
        assert r.status_code == 503 and "disk full" in r.json()["reason"]
        d.kill9()  # a restart while the disk is still full: the agent comes up and keeps what it acked
        d.start()
        wait_until(lambda: health(url).status_code in (200, 503), 20, "answering after the restart")
        r = wait_until(lambda: "agent-reader" in (r := health(url)).json().get("reason", "") and r, 20, "reader down")
        assert "disk full" in r.json()["reason"]
        sink.fail_with = None  # the collector is back, but acks cannot be recorded on a full disk
        big = "y" * (64 << 10)
        r = log_api(big)  # still full: refused, nothing spooled
        assert r.status_code == 503 and r.json()["error"] == "disk_full"
        assert d.alive()

        (state / "ballast").unlink()  # space returns
        wait_until(lambda: health(url).status_code == 200, 30, "healthy again")
        stream = str(logs / "a.log").lstrip("/")

        def delivered() -> bool:
            got = sink.data_by_stream()  # asserts no gap and no overlap in any stream
            return got.get("_api/app") == b"".join(acked) and got.get(stream) == lines

        wait_until(delivered, 30, "every acked record and every line, exactly once")
        assert d.stop() == 0
        assert not leftovers(state)
    finally:
        sink.stop()


def test_torn_tails_are_capped_oldest_first_and_not_copied_twice(tmp_path: Path) -> None:
    """The bound on ``torn/`` without a full disk: recoveries of cut files within ``torn_max_bytes``."""
    from headrace.collectors._sink import SinkFiles

    sink = SinkFiles(tmp_path / "sink", "col", torn_max_bytes=10_000)
    sink.lock()
    try:
        assert sink._keep_torn("a.tail", b"a" * 4000)
        assert sink._keep_torn("b.tail", b"b" * 4000)
        assert sink._keep_torn("b.tail", b"b" * 4000)  # the same cut again: kept once
        os.utime(sink.torn_dir / "a.tail", ns=(1, 1))  # a is the oldest
        assert sink._keep_torn("c.tail", b"c" * 4000)  # a goes to make room
        assert sorted(p.name for p in sink.torn_dir.iterdir()) == ["b.tail", "c.tail"]
        assert not sink._keep_torn("huge.tail", b"h" * 20_000)  # larger than the cap: not kept
        (sink.torn_dir / ".x.tail.tmp-123").write_bytes(b"")  # what an old failed write left
        sink.recover()
        assert not leftovers(sink.root)
        assert sum(p.stat().st_size for p in sink.torn_dir.iterdir()) <= 10_000
    finally:
        sink.unlock()


def test_forwarding_collector_spool_disk_full(
    tmp_path: Path, daemons: Callable[..., Daemon], tmpfs: Callable[[Path, int], Path]
) -> None:
    """The forwarder's spool on a full disk: 503 disk_full (nothing acked), health red, then green."""
    spool = tmpfs(tmp_path / "fwd-spool", 1 << 20)
    root_port = free_port()
    root_url = f"http://127.0.0.1:{root_port}"  # the root is down at first: everything stays spooled
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "sink_dir": str(tmp_path / "fwd"),
        "spool_dir": str(spool),
        "name": "fwd",
        "upstream": [root_url],
        "upstream_max_backoff": 0.2,
    }
    fwd = daemons(["collector", "--config", str(write_config(tmp_path / "fwd.yaml", {"collector": cfg}))], "fwd")
    fwd.start()
    fwd.wait_http(url + "/healthz")
    fill(spool / "ballast", leave=128 << 10)
    chunks = [make_chunk("s", i * 32 * 64, 64) for i in range(200)]  # 2 KiB each
    acked = 0
    for c in chunks:
        r = post(url, [c])
        if r.status_code != 200:
            break
        acked += 1
    assert r.status_code == 503 and r.json()["error"] == "disk_full"
    assert 0 < acked < len(chunks)
    h = health(url)
    assert h.status_code == 503 and "disk full" in h.json()["reason"]
    (spool / "ballast").unlink()
    wait_until(lambda: health(url).status_code == 200, 10, "healthy once space returned")
    for c in chunks[acked:]:
        assert post(url, [c]).status_code == 200
    root_sink = tmp_path / "root-sink"
    root_cfg = {"listen": f"127.0.0.1:{root_port}", "sink_dir": str(root_sink), "name": "root"}
    root = daemons(
        ["collector", "--config", str(write_config(tmp_path / "root.yaml", {"collector": root_cfg}))], "root"
    )
    root.start()
    root.wait_http(root_url + "/healthz")
    status = lambda: HTTP.get(url + "/v1/status").json()["store"]["spool_chunks"]  # noqa: E731
    wait_until(lambda: status() == 0, 30, "everything forwarded")
    assert fwd.stop() == 0 and root.stop() == 0
    got = sorted((r["seq_start"], r["data"]) for r in done_records(root_sink))
    assert b"".join(d for _, d in got) == b"".join(c.data for c in chunks)


def test_collector_whose_recovery_needs_space_starts_and_waits(
    tmp_path: Path, daemons: Callable[..., Daemon], tmpfs: Callable[[Path, int], Path]
) -> None:
    """A first start on a full disk: the sink's recovery must save a new dedupe index and cannot.
    The collector starts anyway, answers 503, and recovers by itself once space returns."""
    sink = tmpfs(tmp_path / "sink", 256 << 10)
    fill(sink / "ballast")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cfg = {"listen": f"127.0.0.1:{port}", "sink_dir": str(sink), "name": "col"}
    d = daemons(["collector", "--config", str(write_config(tmp_path / "col.yaml", {"collector": cfg}))], "col")
    d.start()
    r = wait_until(lambda: (r := health(url)).status_code == 503 and r, 20, "up, recovery waiting for space")
    assert "waiting for space" in r.json()["reason"], r.text
    chunk = make_chunk("s", 0, 4)
    r = post(url, [chunk])
    assert r.status_code == 503 and r.json()["error"] == "disk_full"
    assert not leftovers(sink)
    (sink / "ballast").unlink()
    wait_until(lambda: health(url).status_code == 200, 15, "recovered once space returned")
    assert post(url, [chunk]).json() == {"acked": 1, "duplicates": 0}
    assert d.stop() == 0
    assert [r["data"] for r in done_records(sink)] == [chunk.data]
