"""Shipping batches over real sockets: ack, failover, backoff while down, 4xx is not retried forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from agent_testsink import TestSink
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from support import free_port, wait_until

from headrace._chunk import Chunk, decode_batch, encode_batch, encode_chunk
from headrace._ship import Ack, Rejected, Shipper, ShipStopped, pump
from headrace._spool import Spool, SpoolEntry


def chunk(i: int, stream: str = "s") -> Chunk:
    data = f"line {i}\n".encode()
    return Chunk("h", stream, "app", i * 100, i * 100 + len(data), data)


@pytest.fixture
def sink() -> Iterator[TestSink]:
    s = TestSink().start()
    yield s
    s.stop()


def test_ship_acks_and_fails_over(sink: TestSink) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    shipper = Shipper([dead, sink.url], min_backoff=0.01)
    ack = shipper.ship([chunk(1), chunk(2)])
    assert ack.url == sink.url and ack.acked == 2 and ack.duplicates == 0
    assert shipper.ship([chunk(2)]).duplicates == 1
    assert [c.key for c in sink.chunks] == [chunk(1).key, chunk(2).key]


def test_4xx_is_raised_once_not_retried(sink: TestSink) -> None:
    sink.fail_with = 404  # 401/403 are about the token and retried: tests/test_access.py
    shipper = Shipper([sink.url])
    with pytest.raises(Rejected) as e:
        shipper.ship([chunk(1)])
    assert e.value.status == 404 and sink.requests == 1


def test_5xx_and_down_are_retried_until_back(sink: TestSink) -> None:
    sink.fail_with = 503
    shipper = Shipper([sink.url], min_backoff=0.01, max_backoff=0.1)

    def heal() -> None:
        time.sleep(0.5)
        sink.fail_with = None

    threading.Thread(target=heal).start()
    ack = shipper.ship([chunk(7)])
    assert ack.acked == 1 and sink.requests >= 3


def test_stop_ends_retries() -> None:
    stop = threading.Event()
    shipper = Shipper([f"http://127.0.0.1:{free_port()}"], stop=stop, min_backoff=0.01, max_backoff=0.05)
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(ShipStopped):
        shipper.ship([chunk(1)])


def test_pump_drains_spool_and_dead_letters_rejects(sink: TestSink, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(50):
        spool.append(chunk(i))
    spool.sync()
    stop = threading.Event()
    shipper = Shipper([sink.url], stop=stop)
    acked: list[int] = []
    t = threading.Thread(
        target=pump,
        args=(spool, shipper, stop),
        kwargs={"max_chunks": 7, "on_acked": lambda es, a: acked.extend(e.chunk.seq_end for e in es)},
    )
    t.start()
    wait_until(lambda: len(spool) == 0, 10, "spool drained")
    assert [c.seq_end for c in sink.chunks] == [chunk(i).seq_end for i in range(50)] == acked
    sink.fail_with = 400
    spool.append(chunk(99))
    wait_until(lambda: len(spool) == 0, 10, "rejected batch released")
    stop.set()
    t.join(5)
    assert len(list((tmp_path / "spool" / "rejected").glob("*.batch"))) == 1


def test_a_batch_refused_for_one_chunk_is_split_and_only_that_chunk_dead_lettered(
    sink: TestSink, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(20):
        spool.append(chunk(i))
    spool.sync()
    sink.reject_if = lambda c: c.seq_end == chunk(7).seq_end
    stop = threading.Event()
    t = threading.Thread(target=pump, args=(spool, Shipper([sink.url], stop=stop), stop), kwargs={"max_chunks": 20})
    t.start()
    wait_until(lambda: len(spool) == 0, 10, "spool drained")
    stop.set()
    t.join(5)
    assert [c.seq_end for c in sink.chunks] == [chunk(i).seq_end for i in range(20) if i != 7]
    dead = list((tmp_path / "spool" / "rejected").glob("*.batch"))
    assert len(dead) == 1 and [c.seq_end for c in decode_batch(dead[0].read_bytes())] == [chunk(7).seq_end]


def prepared_ahead() -> float:
    return REGISTRY.get_sample_value("headrace_ship_batches_prepared") or 0.0


def spool_of(tmp_path: Path, n: int) -> Spool:
    spool = Spool(tmp_path / "spool")
    for i in range(n):
        spool.append(chunk(i))
    spool.sync()
    return spool


def run_pump(spool: Spool, shipper: Shipper, stop: threading.Event, acked: list[int]) -> threading.Thread:
    t = threading.Thread(
        target=pump,
        args=(spool, shipper, stop),
        kwargs={"max_chunks": 5, "on_acked": lambda es, a: acked.extend(e.chunk.seq_end for e in es)},
    )
    t.start()
    return t


def test_a_collector_refusing_mid_pipeline_gets_every_batch_again_in_order(sink: TestSink, tmp_path: Path) -> None:
    spool = spool_of(tmp_path, 30)
    sink.hold, sink.hold_answer = threading.Event(), 503  # batch 1 recorded, then answered 503
    stop = threading.Event()
    acked: list[int] = []
    shipper = Shipper([sink.url], stop=stop, min_backoff=0.01, max_backoff=0.05, compression="zstd")
    t = run_pump(spool, shipper, stop, acked)
    wait_until(lambda: sink.held == 1 and prepared_ahead() == 1, 10, "batch 1 in flight, batch 2 compressed ahead")
    sink.fail_with = 503
    sink.hold.set()
    time.sleep(0.3)  # refused meanwhile: nothing acked, nothing released, the prepared batch still waits
    assert acked == [] and len(spool) == 30 and prepared_ahead() == 1
    sink.fail_with = None
    wait_until(lambda: len(spool) == 0, 10, "spool drained")
    stop.set()
    spool.wake()
    t.join(5)
    assert not t.is_alive() and prepared_ahead() == 0
    every = [chunk(i).seq_end for i in range(30)]
    assert [c.seq_end for c in sink.chunks] == every == acked
    assert sink.duplicates == 5  # only the batch that was in flight came twice


def test_a_collector_dying_mid_pipeline_fails_over_with_nothing_lost_or_reordered(
    sink: TestSink, tmp_path: Path
) -> None:
    dying = TestSink().start()
    dying.hold = threading.Event()  # batch 1 reaches it, the answer never comes: it dies first
    spool = spool_of(tmp_path, 30)
    stop = threading.Event()
    acked: list[int] = []
    shipper = Shipper([dying.url, sink.url], stop=stop, min_backoff=0.01, max_backoff=0.05, compression="zstd")
    t = run_pump(spool, shipper, stop, acked)
    wait_until(lambda: dying.held == 1 and prepared_ahead() == 1, 10, "batch 1 in flight, batch 2 compressed ahead")
    dying.stop(abruptly=True)
    wait_until(lambda: len(spool) == 0, 10, "spool drained through the second collector")
    stop.set()
    spool.wake()
    t.join(5)
    assert not t.is_alive() and prepared_ahead() == 0
    every = [chunk(i).seq_end for i in range(30)]
    assert [c.seq_end for c in sink.chunks] == every == acked
    assert [c.seq_end for c in dying.chunks] == every[:5]  # the prepared batch never went to the dead one


def test_stop_with_a_batch_prepared_leaves_it_in_the_spool(sink: TestSink, tmp_path: Path) -> None:
    spool = spool_of(tmp_path, 30)
    sink.hold = threading.Event()
    stop = threading.Event()
    acked: list[int] = []
    t = run_pump(spool, Shipper([sink.url], stop=stop, compression="zstd"), stop, acked)
    wait_until(lambda: sink.held == 1 and prepared_ahead() == 1, 10, "batch 1 in flight, batch 2 compressed ahead")
    stop.set()
    spool.wake()
    sink.hold.set()
    t.join(5)
    assert not t.is_alive() and prepared_ahead() == 0
    assert acked == [chunk(i).seq_end for i in range(5)] and len(spool) == 25
    assert [e.chunk.seq_end for e in spool.peek(100, reserve=True)] == [chunk(i).seq_end for i in range(5, 30)]


_text = st.binary(max_size=300)
_chunks = st.lists(
    st.builds(
        lambda s, d, tags: Chunk("h", s, "app", 0, len(d), d, tags),
        st.sampled_from(["a", "b/c", "x.log"]),
        _text,
        st.dictionaries(st.sampled_from(["env", "k"]), st.text(max_size=5), max_size=2),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(_chunks, st.sampled_from(["zstd", "none"]), st.integers(1, 5))
def test_a_prepared_body_is_the_body_ship_makes(chunks: list[Chunk], compression: str, level: int) -> None:
    shipper = Shipper(["http://127.0.0.1:9"], compression=compression, compression_level=level)
    ahead = shipper.prepare(chunks, [encode_chunk(c) for c in chunks])
    lazy = shipper.prepare(chunks, compress_now=False)
    assert ahead.body == lazy.body == encode_batch(chunks)
    small = ahead.compressed()
    assert small == lazy.compressed()
    if small is not None:
        assert len(small) < len(ahead.body)
        assert zstandard.ZstdDecompressor().decompress(small) == ahead.body
    assert decode_batch(ahead.body, validate=False) == chunks  # the body reads back as these chunks


def test_acks_waiting_for_a_slow_recorder_are_recorded_together_in_order(sink: TestSink, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for i in range(40):
        spool.append(Chunk("h", "s", "app", i * 100, i * 100 + 200, b"y" * 200) if i == 17 else chunk(i))
    spool.sync()
    calls: list[tuple[list[int], bool]] = []

    def on_acked(entries: list[SpoolEntry], ack: Ack | None) -> None:
        # Called before the spool releases anything of it: the entries are still its oldest.
        assert [e.chunk.seq_end for e in spool.peek(len(entries))] == [e.chunk.seq_end for e in entries]
        calls.append(([e.chunk.seq_end for e in entries], ack is not None))
        time.sleep(0.15)  # a slow checkpoint save: acks queue up meanwhile

    stop = threading.Event()
    t = threading.Thread(
        target=pump,
        args=(spool, Shipper([sink.url], stop=stop), stop),
        kwargs={"max_chunks": 2, "on_acked": on_acked, "max_chunk_bytes": 100},  # chunk 17 is too large
    )
    t.start()
    wait_until(lambda: len(spool) == 0, 20, "spool drained")
    stop.set()
    spool.wake()
    t.join(5)
    every = [(chunk(i) if i != 17 else Chunk("h", "s", "app", 1700, 1900, b"")).seq_end for i in range(40)]
    assert [s for seqs, _ in calls for s in seqs] == every  # every entry once, in spool order
    assert ([1900], False) in calls  # the invalid chunk alone, as not acked
    assert all(ok for seqs, ok in calls if seqs != [1900])
    assert len(calls) < 20  # 19 batches and one dead letter, recorded in fewer calls
    assert [c.seq_end for c in sink.chunks] == [s for s in every if s != 1900]
