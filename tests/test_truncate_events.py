"""Truncate events (op ``t``) past the source: wire frames, server-side filters, the bootstrap store.

The PostgreSQL source's side (a TRUNCATE becomes one event per table in its window) is tested on a
real server in ``test_pg_shapes.py``.
"""

from __future__ import annotations

from pathlib import Path

from headrace.bootstrap import LogWindow, Store, merge
from headrace.bootstrap._applier import apply_once
from headrace.relay import Event, Op, decode_event, encode_event, encode_key, parse_filter
from headrace.relay._event import peek_header

FP = "0123456789abcdef"


def ev(scn: int, table: str, op: Op, key: list[object], after: bytes | None = None, end: bool = False) -> Event:
    return Event(scn, table, op, encode_key(key), 1000 + scn, FP, None, after, end)


def trunc(scn: int, table: str, end: bool = False) -> Event:
    return Event(scn, table, Op.TRUNCATE, encode_key([]), 1000 + scn, FP, None, None, end)


def test_truncate_frame_round_trips_and_passes_every_key_filter() -> None:
    frame = encode_event(trunc(7, "orders", end=True))
    e, _ = decode_event(frame)
    assert (e.op, e.key, e.before, e.after, e.window_end) == (Op.TRUNCATE, b"[]", None, None, True)
    h = peek_header(frame)
    for text in ("mod:4:0", "mod:4:1", "mod:4:2", "mod:4:3", "range:10:20", "range::", "range:a:b"):
        assert parse_filter(text).matches(h), text
    assert parse_filter("mod:4:0", frozenset({"orders"})).matches(h)
    assert not parse_filter("mod:4:0", frozenset({"customers"})).matches(h)


def _rows(store: Store, table: str) -> list[bytes | None]:
    rows, _ = store.snapshot_page([table], None, 100)
    return [decode_event(f)[0].after for _s, _k, f in rows]


def test_bootstrap_store_applies_a_truncate_in_window_order(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.init_positions(0)
    windows = [
        [ev(1, "a", Op.INSERT, [1], b"a1"), ev(1, "a", Op.INSERT, [2], b"a2"), ev(1, "b", Op.INSERT, [1], b"b1", True)],
        # one transaction: a row before the truncate (gone), the truncate, a row after it (kept)
        [ev(2, "a", Op.INSERT, [3], b"a3"), trunc(2, "a"), ev(2, "a", Op.INSERT, [4], b"a4", True)],
    ]
    frames = [b"".join(encode_event(e) for e in w) for w in windows]
    store.append([LogWindow(1, 1, 0, 3, frozenset({"a", "b"}), frames[0])], 1)
    assert apply_once(store, 10) == 1
    assert _rows(store, "a") == [b"a1", b"a2"]
    store.append([LogWindow(2, 2, 0, 3, frozenset({"a"}), frames[1])], 2)
    assert apply_once(store, 10) == 1
    assert _rows(store, "a") == [b"a4"] and _rows(store, "b") == [b"b1"]
    assert store.state()["applied_scn"] == 2
    # several windows folded into one apply: the truncate still cuts exactly what came before it
    ops = merge(
        [[ev(3, "b", Op.INSERT, [2], b"b2", True)], [trunc(4, "b", True)], [ev(5, "b", Op.INSERT, [3], b"b3", True)]]
    )
    assert store.apply(ops.values(), 5, expect=2)
    assert _rows(store, "b") == [b"b3"] and _rows(store, "a") == [b"a4"]
    store.close()


def test_sqlite_delete_without_where_arrives_row_by_row(tmp_path: Path) -> None:
    """SQLite has no TRUNCATE; its "truncate optimisation" of ``DELETE FROM t`` is off while the
    capture triggers exist, so every row arrives as its own delete event (no ``t`` event)."""
    import sqlite3
    import threading
    import time

    from headrace.relay._config import RelayConfig
    from headrace.relay.sources.sqlite import SqliteSource

    db = tmp_path / "a.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    src = SqliteSource(RelayConfig(source=f"sqlite:///{db}", sqlite={"poll_ms": 5}))
    src.open()
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(3)])
    conn.execute("DELETE FROM t")
    changes = []
    deadline = time.monotonic() + 20
    for w in src.read(None, threading.Event()):
        if w is not None:
            changes += list(w.changes)
        if len(changes) >= 6 or time.monotonic() > deadline:
            break
    assert [(c.op, c.key) for c in changes[3:]] == [(Op.DELETE, (0,)), (Op.DELETE, (1,)), (Op.DELETE, (2,))]
    src.close()
    conn.close()
