"""The one backoff the daemons' long-running loops share (headrace/_backoff.py)."""

from __future__ import annotations

import pytest

from headrace._backoff import Backoff, Failover


def test_backoff_doubles_to_its_maximum_with_jitter_and_resets_on_success() -> None:
    b = Backoff(0.1, 1.0, jitter=0.1)
    waits = [b.failed() for _ in range(6)]
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(base <= w <= base * 1.1 for w, base in zip(waits, bases, strict=True)), waits
    b.succeeded()
    assert 0.1 <= b.failed() <= 0.11


def test_failover_moves_round_robin_and_lists_the_current_first() -> None:
    f = Failover(["a", "b", "c"])
    assert (f.current, f.in_order(), len(f)) == ("a", ["a", "b", "c"], 3)
    f.failed()
    assert (f.current, f.in_order()) == ("b", ["b", "c", "a"])
    f.failed()
    f.failed()
    assert f.current == "a"  # wrapped around
    with pytest.raises(ValueError, match="at least one"):
        Failover([])
