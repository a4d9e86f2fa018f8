"""End to end: real relay processes over HTTP on SQLite files written by another process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import relay_workload as wl
from relay_support import collect, start_relay, write_workload

from headrace.relay.client import Subscriber


def _flatten(windows: list[Any]) -> list[tuple[str, str, list[Any], Any, Any]]:
    return [(e.table, e.op.value, e.key, e.before, e.after) for w in windows for e in w.events]


def test_ten_thousand_transactions_arrive_once_in_order_whole_and_typed(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    _relay, url = start_relay(daemons, tmp_path, db)
    n_txn = 10_000
    writer = write_workload(db, seed=7, start=0, count=n_txn)
    expected_txns = wl.expected_events(7, n_txn)
    expected = [e for txn in expected_txns for e in txn]
    sub = Subscriber([url], wait_ms=1000, max_bytes=4 << 20)
    t0 = time.monotonic()
    windows = collect(sub, len(expected), timeout=120)
    assert writer.wait(60) == 0
    elapsed = time.monotonic() - t0
    got = _flatten(windows)
    # every change once, in commit order, with values (and their types) equal to what was written
    assert len(got) == len(expected)
    for i, (g, x) in enumerate(zip(got, expected, strict=True)):
        assert g == x, f"event {i}: {g!r} != {x!r}"
        for side in (3, 4):
            if x[side] is not None:
                assert {k: type(v) for k, v in g[side].items()} == {k: type(v) for k, v in x[side].items()}
    # SCNs strictly increase, every window is marked at its end only, windows never split a transaction
    scns = [e.scn for w in windows for e in w.events]
    assert scns == sorted(set(scns))
    for w in windows:
        assert [e.window_end for e in w.events] == [False] * (len(w.events) - 1) + [True]
        assert w.scn == w.events[-1].scn
    ends = set()
    pos = 0
    for w in windows:
        pos += len(w.events)
        ends.add(pos)
    txn_ends = set()
    pos = 0
    for txn in expected_txns:
        pos += len(txn)
        txn_ends.add(pos)
    assert ends <= txn_ends, "a window ended inside a transaction"
    print(f"{len(got)} events in {len(windows)} windows, {elapsed:.1f}s")
