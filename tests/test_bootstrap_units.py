"""Sans-io parts of the bootstrap server (merge, sort keys, sessions) and the store's transactions."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from headrace.bootstrap import LogWindow, RowOp, Store, merge, snapshot_frame, sort_key
from headrace.bootstrap._sessions import Sessions
from headrace.relay import Event, Op, decode_event, encode_event, encode_key

FP = "0123456789abcdef"


def ev(scn: int, k: object, op: Op, after: bytes | None, table: str = "t", end: bool = False) -> Event:
    return Event(scn, table, op, encode_key([k]), 1000 + scn, FP, b"old" if op is not Op.INSERT else None, after, end)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=30, unique=True))
def test_sort_key_orders_integers_numerically(values: list[int]) -> None:
    keys = sorted(values, key=lambda v: sort_key(encode_key([v])))
    assert keys == sorted(values)


@given(st.lists(st.tuples(st.text(max_size=8), st.integers(-5, 5)), min_size=2, max_size=30, unique=True))
def test_sort_key_orders_composite_text_keys_like_tuples(values: list[tuple[str, int]]) -> None:
    keys = sorted(values, key=lambda v: sort_key(encode_key(list(v))))
    assert keys == sorted(values, key=lambda v: (v[0].encode(), v[1]))


def test_merge_keeps_the_last_change_per_key_and_drops_deleted_rows() -> None:
    windows = [
        [ev(1, 1, Op.INSERT, b"a1"), ev(2, 2, Op.INSERT, b"b1", end=True)],
        [ev(3, 1, Op.UPDATE, b"a2"), ev(4, 2, Op.DELETE, None, end=True)],
        [ev(5, 3, Op.INSERT, b"c1"), ev(6, 3, Op.DELETE, None), ev(7, 3, Op.INSERT, b"c2", end=True)],
    ]
    ops = merge(windows)
    by_key = {decode_event(o.frame)[0].key if o.frame else o.sort_key: o for o in ops.values()}
    assert len(ops) == 3
    assert ops[("t", sort_key(encode_key([2])))].frame is None
    one, _ = decode_event(by_key[encode_key([1])].frame)  # type: ignore[arg-type]
    assert (one.op, one.after, one.before, one.scn, one.window_end) == (Op.READ, b"a2", None, 3, False)
    three, _ = decode_event(by_key[encode_key([3])].frame)  # type: ignore[arg-type]
    assert three.after == b"c2"
    assert snapshot_frame(ev(9, 9, Op.UPDATE, b"z")) == encode_event(
        Event(9, "t", Op.READ, encode_key([9]), 1009, FP, None, b"z")
    )


def test_sessions_hold_compaction_at_the_lowest_recent_scn() -> None:
    now = [0.0]
    s = Sessions(10.0, lambda: now[0])
    assert s.keep_from() == 0  # just started: sessions from before a restart may still report
    now[0] = 11.0
    assert s.keep_from() is None
    s.touch("a", 500)
    s.touch("b", 300)
    assert s.keep_from() == 300
    now[0] = 19.0
    s.touch("a", 600)
    now[0] = 22.0  # b not seen for 11 s
    assert s.keep_from() == 600


def test_store_apply_is_compare_and_set_and_compaction_moves_the_floor(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.init_positions(0)
    w = [ev(1, 1, Op.INSERT, b"x", end=True)]
    store.append([LogWindow(1, 1, 0, 1, frozenset({"t"}), encode_event(w[0]))], 5)
    assert store.state()["log_scn"] == 5
    ops = merge([w]).values()
    assert store.apply(ops, 1, expect=0)
    assert not store.apply([RowOp("t", sort_key(encode_key([1])), 1, None)], 1, expect=0)  # stale: refused
    assert store.row_count() == 1
    assert store.compact(1, older_than_ms=10**15) == 1
    st_ = store.state()
    assert (st_["applied_scn"], st_["log_floor"], store.log_windows(0, 10)) == (1, 1, [])
    store.close()


def test_snapshot_pages_are_in_source_then_key_order_and_resume_after_the_cursor(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.init_positions(0)
    keys = [-5, 3, 10, 2**40, 7, 100]
    windows = [
        [ev(i + 1, k, Op.INSERT, str(k).encode(), table=tbl, end=True)]
        for i, k in enumerate(keys)
        for tbl in ("b", "a")
    ]
    store.apply(merge(windows).values(), 99)
    seen = []
    after = None
    while True:
        rows, state = store.snapshot_page(["a", "b"], after, 4)
        assert state["applied_scn"] == 99
        seen += [(s, decode_event(f)[0].after) for s, _k, f in rows]
        if len(rows) < 4:
            break
        after = (rows[-1][0], rows[-1][1])
    expected = [(t, str(k).encode()) for t in ("a", "b") for k in sorted(keys)]
    assert seen == expected
    store.close()
