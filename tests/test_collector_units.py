"""The collector's sans-io cores: dedupe index, roll policy, container scan of torn files, sink recovery."""

from __future__ import annotations

import io
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace._chunk import SINK_SCHEMA, Chunk, chunk_to_record
from headrace._container import scan_container
from headrace.collectors._dedupe import DedupeIndex, IndexCorrupt
from headrace.collectors._roll import RollPolicy
from headrace.collectors._sink import SinkFiles


def chunk(start: int, end: int, stream: str = "app/x.log", source: str = "h") -> Chunk:
    data = bytes((start + i) % 251 for i in range(end - start))
    return Chunk(source, stream, "app", start, end, data, {"k": "v"})


# -- dedupe ---------------------------------------------------------------------------------------


def test_resend_is_duplicate_and_new_chunk_is_written() -> None:
    idx = DedupeIndex()
    a = idx.admit(chunk(0, 10))
    assert a.pieces == [chunk(0, 10)] and not a.duplicate
    assert idx.admit(chunk(0, 10)).duplicate
    assert idx.admit(chunk(0, 10)).pieces == []
    b = idx.admit(chunk(10, 20))
    assert b.pieces == [chunk(10, 20)]
    assert idx.ranges("h", "app/x.log") == [(0, 20)]
    # another stream or source is independent
    assert idx.admit(chunk(0, 10, stream="app/y.log")).pieces == [chunk(0, 10, stream="app/y.log")]
    assert idx.admit(chunk(0, 10, source="g")).pieces == [chunk(0, 10, source="g")]


def test_recut_resend_writes_only_the_new_bytes() -> None:
    idx = DedupeIndex()
    idx.admit(chunk(0, 10))
    a = idx.admit(chunk(5, 25))  # re-cut: overlaps what is written
    assert a.pieces == [chunk(10, 25)]
    assert a.trimmed_bytes == 5
    assert a.pieces[0].data == chunk(5, 25).data[5:]


def test_gap_from_failover_is_filled_later_and_not_dropped() -> None:
    idx = DedupeIndex()
    idx.admit(chunk(0, 10))
    idx.admit(chunk(20, 30))  # 10..20 went to another collector (or is still on its way)
    assert idx.ranges("h", "app/x.log") == [(0, 10), (20, 30)]
    a = idx.admit(chunk(10, 20))
    assert a.pieces == [chunk(10, 20)] and not a.duplicate
    # a chunk spanning written and unwritten parts is cut into the unwritten pieces only
    idx2 = DedupeIndex()
    idx2.admit(chunk(10, 20))
    idx2.admit(chunk(30, 40))
    a = idx2.admit(chunk(0, 50))
    assert [(p.seq_start, p.seq_end) for p in a.pieces] == [(0, 10), (20, 30), (40, 50)]
    assert all(p.data == chunk(p.seq_start, p.seq_end).data for p in a.pieces)
    assert idx2.ranges("h", "app/x.log") == [(0, 50)]


def test_empty_chunk_is_neither_written_nor_duplicate() -> None:
    a = DedupeIndex().admit(chunk(5, 5))
    assert a.pieces == [] and not a.duplicate


def test_ranges_are_bounded_by_forgetting_the_oldest() -> None:
    idx = DedupeIndex(max_ranges=3)
    for i in range(5):
        idx.admit(chunk(i * 100, i * 100 + 10))
    assert idx.ranges("h", "app/x.log") == [(200, 210), (300, 310), (400, 410)]
    # a forgotten range is written again (a duplicate the archive builder removes), never lost
    assert idx.admit(chunk(0, 10)).pieces == [chunk(0, 10)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=30))
def test_admit_writes_every_byte_exactly_once(spans: list[tuple[int, int]]) -> None:
    idx = DedupeIndex()
    written: list[int] = []
    for start, length in spans:
        for p in idx.admit(chunk(start, start + length)).pieces:
            assert p.data == chunk(p.seq_start, p.seq_end).data
            written.extend(range(p.seq_start, p.seq_end))
    expected = sorted({o for s, n in spans for o in range(s, s + n)})
    assert sorted(written) == expected  # each offset once, none missing


def test_idle_streams_are_forgotten_and_written_again() -> None:
    idx = DedupeIndex()
    idx.admit(chunk(0, 10), now_ms=1_000)
    idx.admit(chunk(0, 10, stream="busy"), now_ms=1_000)
    idx.admit(chunk(10, 20, stream="busy"), now_ms=5_000)
    idx.admit(chunk(0, 10, stream="busy"), now_ms=6_000)  # a duplicate does not count as new bytes
    back, _ = DedupeIndex.loads(idx.dumps(1))  # the times survive a restart
    assert back.forget_before(5_000) == 1
    assert back.ranges("h", "app/x.log") == [] and back.ranges("h", "busy") == [(0, 20)]
    assert back.admit(chunk(0, 10)).pieces == [chunk(0, 10)]


def test_index_round_trip_and_corrupt() -> None:
    idx = DedupeIndex()
    idx.admit(chunk(0, 10))
    idx.admit(chunk(20, 30, stream="a/b"))
    back, through = DedupeIndex.loads(idx.dumps(7))
    assert through == 7
    assert back.ranges("h", "app/x.log") == [(0, 10)]
    assert back.ranges("h", "a/b") == [(20, 30)]
    for bad in (b"", b"{", b'{"format": 99}', b'{"format": 1, "through": 1, "streams": [[1]]}'):
        with pytest.raises(IndexCorrupt):
            DedupeIndex.loads(bad)


# -- roll policy ----------------------------------------------------------------------------------


def test_roll_policy() -> None:
    p = RollPolicy(roll_bytes=100, roll_seconds=10)
    assert not p.due(10**9, None, 1000.0)  # no open file, nothing to roll
    assert p.deadline(None) is None
    assert not p.due(99, 100.0, 109.9)
    assert p.due(100, 100.0, 100.0)  # by size
    assert p.due(0, 100.0, 110.0)  # by age
    assert p.deadline(100.0) == 110.0


# -- container scan -------------------------------------------------------------------------------


def container(blocks: list[list[Chunk]], codec: str = "null") -> tuple[bytes, list[int]]:
    """An Avro container file with one block per list; returns the bytes and each block's end offset."""
    buf = io.BytesIO()
    w = fastavro.write.Writer(buf, fastavro.parse_schema(SINK_SCHEMA), codec=codec)
    ends = [buf.tell()]  # header end
    for block in blocks:
        for c in block:
            w.write(chunk_to_record(c, 1))
        w.flush()
        ends.append(buf.tell())
    return buf.getvalue(), ends


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard"])
def test_torn_tail_at_every_offset_keeps_exactly_the_whole_blocks(codec: str) -> None:
    blocks = [[chunk(0, 10), chunk(10, 30)], [chunk(30, 35)], [chunk(35, 60), chunk(0, 5, stream="s2")]]
    data, ends = container(blocks, codec)
    header_end = ends[0]
    for cut in range(len(data) + 1):
        scan = scan_container(data[:cut])
        whole = [i for i, e in enumerate(ends[1:]) if e <= cut]
        if cut < header_end:
            assert scan.header_end is None and scan.valid_end == 0, cut
            continue
        expected_end = ends[len(whole)]
        assert scan.header_end == header_end
        assert scan.valid_end == expected_end, cut
        assert scan.blocks == len(whole)
        assert scan.spans == [(c.source, c.stream, c.seq_start, c.seq_end, 1) for i in whole for c in blocks[i]]
        # the kept prefix reads back with a standard Avro reader
        records = list(fastavro.reader(io.BytesIO(data[: scan.valid_end])))
        assert [r["seq_end"] for r in records] == [c.seq_end for i in whole for c in blocks[i]]


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard"])
def test_block_encoder_writes_files_any_avro_reader_reads(codec: str) -> None:
    from headrace._container import BlockEncoder

    enc = BlockEncoder(SINK_SCHEMA, codec, {"headrace.collector": "c1"})
    blocks = [[chunk(0, 10), chunk(10, 300)], [chunk(0, 1 << 16, stream="big")]]
    data = enc.header + b"".join(enc.block([chunk_to_record(c, 7) for c in b]) for b in blocks)
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.metadata["headrace.collector"] == "c1" and reader.codec == codec
    assert [fastavro_chunk(r) for r in reader] == [c for b in blocks for c in b]
    scan = scan_container(data)
    assert scan.valid_end == len(data) and scan.blocks == 2 and scan.records == 3


def fastavro_chunk(r: dict[str, object]) -> Chunk:
    from headrace._chunk import chunk_from_record

    assert r["received_ms"] == 7
    return chunk_from_record(r)


def test_garbage_tail_is_cut() -> None:
    data, ends = container([[chunk(0, 10)], [chunk(10, 20)]])
    for tail in (b"\x00" * 4096, b"\xff" * 40, data[ends[0] : ends[1]][:-1] + b"X"):
        scan = scan_container(data + tail)
        assert scan.valid_end == len(data) and scan.blocks == 2 and scan.problem
    # a block whose sync marker is right but whose payload is damaged is not kept
    damaged = bytearray(data)
    damaged[ends[1] + 3] ^= 0xFF
    assert scan_container(bytes(damaged)).valid_end <= ends[1]
    assert scan_container(b"not avro at all").header_end is None


# -- sink recovery on real files ------------------------------------------------------------------


def test_recovery_cuts_torn_tail_moves_to_done_and_rebuilds_index(tmp_path: Path) -> None:
    sink = SinkFiles(tmp_path, "c1")
    sink.lock()
    _index, _ = sink.recover()
    sink.append([chunk_to_record(chunk(0, 10), 1)], now=0.0)
    sink.append([chunk_to_record(chunk(10, 20), 1)], now=0.0)
    path = tmp_path / "open" / "0000000001-c1.avro"
    whole = path.read_bytes()
    sink.abandon()
    sink.unlock()
    with open(path, "ab") as f:
        f.write(b"\x06\x80\x01partial block")  # a crash in the middle of a third block
    sink2 = SinkFiles(tmp_path, "c1")
    sink2.lock()
    index2, report = sink2.recover()
    assert report.recovered == ["0000000001-c1.avro"]
    assert report.torn_bytes == len(b"\x06\x80\x01partial block")
    assert not list((tmp_path / "open").iterdir())
    assert (tmp_path / "done" / "0000000001-c1.avro").read_bytes() == whole
    assert index2.ranges("h", "app/x.log") == [(0, 20)]
    assert index2.admit(chunk(0, 10)).duplicate
    # the next file continues the numbering
    sink2.append([chunk_to_record(chunk(20, 30), 1)], now=0.0)
    assert sink2.open_name == "0000000002-c1.avro"
    assert sink2.roll(index2.dumps) == "0000000002-c1.avro"
    assert DedupeIndex.loads((tmp_path / "index.json").read_bytes())[1] == 2
    sink2.unlock()


def test_recovery_removes_file_without_whole_block_and_lock_is_exclusive(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(parents=True)
    (tmp_path / "open" / "0000000003-c1.avro").write_bytes(b"Obj\x01\x02")  # torn header
    sink = SinkFiles(tmp_path, "c1")
    sink.lock()
    _, report = sink.recover()
    assert report.removed == ["0000000003-c1.avro"]
    assert not list((tmp_path / "done").iterdir())
    sink.append([chunk_to_record(chunk(0, 1), 1)], now=0.0)
    assert sink.open_name == "0000000004-c1.avro"
    from headrace.errors import FatalError

    with pytest.raises(FatalError, match="another collector"):
        SinkFiles(tmp_path, "c2").lock()
    sink.abandon()
    sink.unlock()


def test_missing_index_is_rebuilt_from_done(tmp_path: Path) -> None:
    sink = SinkFiles(tmp_path, "c1")
    sink.lock()
    index, _ = sink.recover()
    for c in (chunk(0, 10), chunk(0, 7, stream="b")):
        index.admit(c)
        sink.append([chunk_to_record(c, 1)], now=0.0)
    sink.roll(index.dumps)
    sink.unlock()
    (tmp_path / "index.json").unlink()
    sink2 = SinkFiles(tmp_path, "c1")
    sink2.lock()
    index2, report = sink2.recover()
    assert report.index_rebuilt
    assert index2.ranges("h", "app/x.log") == [(0, 10)] and index2.ranges("h", "b") == [(0, 7)]
    sink2.unlock()


def test_stale_index_is_completed_from_newer_done_files(tmp_path: Path) -> None:
    sink = SinkFiles(tmp_path, "c1")
    sink.lock()
    index, _ = sink.recover()
    index.admit(chunk(0, 10))
    sink.append([chunk_to_record(chunk(0, 10), 1)], now=0.0)
    sink.roll(index.dumps)
    old = (tmp_path / "index.json").read_bytes()  # e.g. restored from a backup
    index.admit(chunk(10, 20))
    sink.append([chunk_to_record(chunk(10, 20), 1)], now=0.0)
    sink.roll(index.dumps)
    sink.unlock()
    (tmp_path / "index.json").write_bytes(old)
    sink2 = SinkFiles(tmp_path, "c1")
    sink2.lock()
    index2, report = sink2.recover()
    assert report.index_rebuilt
    assert index2.ranges("h", "app/x.log") == [(0, 20)]
    assert DedupeIndex.loads((tmp_path / "index.json").read_bytes())[1] == 2
    sink2.append([chunk_to_record(chunk(20, 30), 1)], now=0.0)
    assert sink2.open_name == "0000000003-c1.avro"
    sink2.abandon()
    sink2.unlock()


# -- group commit ---------------------------------------------------------------------------------


class _GateStore:
    """A store whose commit blocks until the test opens the gate, recording each group it gets."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()
        self.entered = threading.Event()
        self.groups: list[int] = []
        self.closed = False

    def commit(self, batches: list[list[Chunk]]) -> list[object]:
        from headrace.collectors._commit import Ack

        self.entered.set()
        self.gate.wait(10)
        self.groups.append(len(batches))
        return [Ack(len(b), 0) for b in batches]

    def deadline(self) -> None:
        return None

    def maintain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abandon(self) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {}


def test_group_commit_serves_every_waiting_request_with_one_commit() -> None:
    import asyncio

    from headrace.collectors._commit import Ack, GroupCommit

    async def scenario() -> tuple[list[Ack], list[int], bool]:
        store = _GateStore()
        gc = GroupCommit(store)  # type: ignore[arg-type]
        gc.start()
        first = asyncio.create_task(gc.submit([chunk(0, 1)]))
        while not store.entered.is_set():  # the first group is taken and blocked in commit
            await asyncio.sleep(0.01)
        rest = [asyncio.create_task(gc.submit([chunk(i, i + 1)] * 2)) for i in range(5)]
        await asyncio.sleep(0.05)
        assert not first.done() and gc.waiting == 5  # nobody is acked before the commit returns
        store.gate.set()
        acks = await asyncio.gather(first, *rest)
        await gc.close()
        return acks, store.groups, store.closed

    acks, groups, closed = asyncio.run(scenario())
    assert groups == [1, 5]  # the five requests that arrived meanwhile share one commit (one fsync)
    assert acks == [Ack(1, 0)] + [Ack(2, 0)] * 5
    assert closed


def test_a_failed_write_acks_nothing_and_refuses_everything_after() -> None:
    # A failing disk cannot be caused for real here; the store raises the OSError a full or broken disk would.
    import asyncio

    from headrace.collectors._commit import GroupCommit, SinkFailed

    class Broken(_GateStore):
        abandoned = False

        def commit(self, batches: list[list[Chunk]]) -> list[object]:
            raise OSError(28, "No space left on device")

        def abandon(self) -> None:
            self.abandoned = True

    async def scenario() -> tuple[list[BaseException | object], Broken, GroupCommit, list[bool]]:
        store = Broken()
        called: list[bool] = []
        gc = GroupCommit(store, on_failure=lambda: called.append(True))  # type: ignore[arg-type]
        gc.start()
        results = await asyncio.gather(*(gc.submit([chunk(0, 1)]) for _ in range(3)), return_exceptions=True)
        try:
            await gc.submit([chunk(1, 2)])
            results.append("accepted")
        except SinkFailed as exc:
            results.append(exc)
        await gc.close()
        return results, store, gc, called

    results, store, gc, called = asyncio.run(scenario())
    assert all(isinstance(r, SinkFailed) for r in results) and len(results) == 4
    assert gc.failed and "No space left" in gc.failed
    assert store.abandoned and called == [True] and not store.closed


def test_config_refuses_forwarding_to_itself_and_bad_urls() -> None:
    from pydantic import ValidationError

    from headrace.collectors import CollectorConfig

    with pytest.raises(ValidationError, match="own listen address"):
        CollectorConfig(listen="0.0.0.0:7070", upstream=["http://localhost:7070"])
    with pytest.raises(ValidationError, match="not an http"):
        CollectorConfig(upstream=["ftp://x:1"])
    with pytest.raises(ValidationError, match="name"):
        CollectorConfig(name="../evil")
    assert CollectorConfig(listen="127.0.0.1:7070", upstream=["http://127.0.0.1:7071"]).upstream
