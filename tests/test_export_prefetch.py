"""``headrace._prefetch.prefetch`` (the export's reader thread, seeding's page fetch): items in order,
the producer's errors raised to the consumer, and closing early stops the producer and closes its
iterator before returning."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace._prefetch import prefetch as _prefetch


def prefetch(items: Any, ahead: int) -> Any:
    return _prefetch(items, ahead, "headrace-export-read")


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "headrace-export-read"]


@given(items=st.lists(st.integers()), ahead=st.integers(1, 4))
def test_items_arrive_in_order(items: list[int], ahead: int) -> None:
    assert list(prefetch(items, ahead)) == items
    assert not _threads()


def test_a_producer_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def gen() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad row")

    got: list[int] = []
    with pytest.raises(ValueError, match="bad row"):
        for x in prefetch(gen(), 1):
            got.append(x)
    assert got == [1, 2]
    assert not _threads()


def test_closing_early_stops_the_producer_and_closes_its_iterator_first() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def gen() -> Iterator[int]:
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = prefetch(gen(), 2)
    assert next(it) == 0
    it.close()
    assert closed.is_set(), "the producer's iterator was closed before close() returned"
    assert len(produced) < 10, "the producer stopped a few items ahead"
    assert not _threads()


def test_a_consumer_error_stops_the_producer() -> None:
    closed = threading.Event()

    def gen() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    it = prefetch(gen(), 2)
    with pytest.raises(RuntimeError):
        for x in it:
            if x == 3:
                raise RuntimeError("writer failed")
    it.close()  # what write_parts does in its finally
    assert closed.is_set() and not _threads()
