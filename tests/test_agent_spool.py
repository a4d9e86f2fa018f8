"""The on-disk spool: FIFO order, byte cap, ack release, resume after a torn tail (kill -9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace._chunk import Chunk
from headrace._spool import Spool, SpoolFull


def chunk(i: int, size: int = 100, stream: str = "s") -> Chunk:
    data = (f"{i:08d}".encode() * (size // 8 + 1))[: size - 1] + b"\n"
    return Chunk("h", stream, "app", i * size, (i + 1) * size, data)


def test_fifo_peek_ack_and_reopen(tmp_path: Path) -> None:
    sp = Spool(tmp_path, cap_bytes=1 << 20, segment_bytes=1000)
    for i in range(30):
        sp.append(chunk(i), cursor=str(i).encode())
    sp.sync()
    got = sp.peek(max_chunks=10)
    assert [e.chunk for e in got] == [chunk(i) for i in range(10)]
    assert sp.peek(max_chunks=10) == got  # peeking does not consume
    sp.ack(10)
    assert len(sp) == 20
    assert sp.last_cursors() == {("h", "s"): b"29"}
    segments_before = len(list(tmp_path.glob("*.sealed")))
    sp.close()
    sp2 = Spool(tmp_path, cap_bytes=1 << 20, segment_bytes=1000)
    assert [e.chunk for e in sp2.peek(max_chunks=100)] == [chunk(i) for i in range(10, 30)]
    sp2.ack(20)
    assert len(sp2) == 0 and sp2.used_bytes() < 1000
    assert len(list(tmp_path.glob("*.sealed"))) < segments_before
    sp2.close()
    sp3 = Spool(tmp_path, cap_bytes=1 << 20, segment_bytes=1000)
    assert len(sp3) == 0 and sp3.last_cursors() == {}


def test_cap_is_enforced_and_acks_release_room(tmp_path: Path) -> None:
    sp = Spool(tmp_path, cap_bytes=5000, segment_bytes=2000)
    n = 0
    with pytest.raises(SpoolFull):
        while True:
            sp.append(chunk(n))
            n += 1
    assert 0 < sp.used_bytes() <= 5000
    assert sp.room() < 300
    sp.ack(5)
    assert sp.room() >= 5 * 100
    sp.append(chunk(n))
    assert [e.chunk.seq_end for e in sp.peek(1000)] == [chunk(i).seq_end for i in range(5, n + 1)]


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    sp = Spool(tmp_path, segment_bytes=1 << 20)
    for i in range(5):
        sp.append(chunk(i))
    sp.close()
    (seg,) = tmp_path.glob("*.open")
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 7)  # the last record is cut short, as by a crash mid-write
    sp2 = Spool(tmp_path, segment_bytes=1 << 20)
    assert [e.chunk for e in sp2.peek(100)] == [chunk(i) for i in range(4)]
    sp2.append(chunk(4))  # appending continues after the cut
    sp2.close()
    assert [e.chunk for e in Spool(tmp_path).peek(100)] == [chunk(i) for i in range(5)]


def test_kill9_while_appending_keeps_every_synced_record(tmp_path: Path) -> None:
    # A real process appends and syncs, printing each synced index; we SIGKILL it mid-stream.
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_agent_spool import chunk
from headrace._spool import Spool
sp = Spool({str(tmp_path)!r}, cap_bytes=1 << 30, segment_bytes=50_000)
i = 0
while True:
    sp.append(chunk(i, 1000)); sp.sync()
    print(i, flush=True)
    i += 1
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ)
    assert proc.stdout is not None
    last = -1
    for line in proc.stdout:
        last = int(line)
        if last >= 300:
            break
    proc.kill()
    proc.wait()
    entries = Spool(tmp_path, cap_bytes=1 << 30, segment_bytes=50_000).peek(max_chunks=10**6, max_bytes=1 << 30)
    got = [e.chunk.seq_end for e in entries]
    assert got == [chunk(i, 1000).seq_end for i in range(len(got))]
    assert len(got) >= last + 1


def test_concurrent_writer_and_acker_see_every_chunk_once_in_order(tmp_path: Path) -> None:
    import threading

    sp = Spool(tmp_path, cap_bytes=20_000, segment_bytes=3_000)
    n = 800
    got: list[int] = []

    def write() -> None:
        for i in range(n):
            while sp.room() < 200:
                sp.wait_room(200, 1.0)
            sp.append(chunk(i))
            if i % 7 == 0:
                sp.sync()
        sp.sync()

    t = threading.Thread(target=write)
    t.start()
    while len(got) < n:
        if not sp.wait_nonempty(5.0):
            break
        entries = sp.peek(max_chunks=13)
        got += [e.chunk.seq_end for e in entries]
        sp.ack(len(entries))
        assert sp.used_bytes() <= 20_000
    t.join()
    assert got == [chunk(i).seq_end for i in range(n)]
    sp.close()
    reopened = Spool(tmp_path, cap_bytes=20_000, segment_bytes=3_000)
    assert len(reopened) == 0 and len(list(tmp_path.glob("*.sealed"))) <= 1


def test_torn_tail_at_every_offset_keeps_exactly_the_whole_records(tmp_path: Path) -> None:
    src = tmp_path / "src"
    sp = Spool(src, segment_bytes=1 << 20)
    ends = []
    for i in range(3):
        sp.append(chunk(i, 40))
        ends.append(sum(p.stat().st_size for p in src.glob("*.open")))
    sp.close()
    (seg,) = src.glob("*.open")
    data = seg.read_bytes()
    for cut in range(len(data) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(data[:cut])
        whole = sum(1 for e in ends if e <= cut)
        entries = Spool(d).peek(100)
        assert [e.chunk for e in entries] == [chunk(i, 40) for i in range(whole)], cut
        assert (d / seg.name).stat().st_size == (ends[whole - 1] if whole else 0)
