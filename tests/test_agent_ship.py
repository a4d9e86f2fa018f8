"""Shipping batches over real sockets: ack, failover, backoff while down, 4xx is not retried forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_testsink import TestSink
from support import free_port, wait_until

from headrace._chunk import Chunk, decode_batch
from headrace._ship import Rejected, Shipper, ShipStopped, pump
from headrace._spool import Spool


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
