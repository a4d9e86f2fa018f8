"""The capture layer's ``on_unrepresentable`` policies on the real encoder (sans-io): which change
and column an error names, nulling and marking several columns (NOT NULL ones included), and one
marked schema version per table rather than one per row."""

from __future__ import annotations

from typing import Any

import pytest

from headrace.errors import UnrepresentableValue
from headrace.relay._capture import UNREPRESENTABLE_COLUMN, PolicyCodecs
from headrace.relay._codec import RowCodec, encode_window
from headrace.relay._event import Event, Op, iter_frames
from headrace.relay._schema import Column, ColumnType, SchemaRegistry, TableMeta
from headrace.relay.sources import ChangeWindow, RowChange

META = TableMeta(
    "t",
    (
        Column("id", ColumnType("long"), False),
        Column("a", ColumnType("long"), False),  # NOT NULL
        Column("b", ColumnType("long")),
        Column("s", ColumnType("string")),
    ),
    ("id",),
)


def _change(scn: int, after: dict[str, Any], before: dict[str, Any] | None = None) -> RowChange:
    return RowChange(scn, META, Op.UPDATE if before else Op.INSERT, (after["id"],), before, after)


def _rows(codecs: PolicyCodecs, changes: list[RowChange]) -> list[tuple[Event, Any, Any]]:
    ew = encode_window(ChangeWindow(changes[-1].scn, 0, changes), codecs)
    assert ew is not None
    out = []
    for e in iter_frames(ew.data):
        sv = codecs.registry.get(e.fingerprint)
        assert sv is not None
        codec = RowCodec(sv)
        out.append((e, codec.decode(e.before) if e.before else None, codec.decode(e.after) if e.after else None))
    return out


def test_stop_names_table_column_and_scn() -> None:
    codecs = PolicyCodecs(SchemaRegistry(None), "stop")
    good = _change(1, {"id": 1, "a": 1, "b": 2, "s": "x"})
    bad = _change(2, {"id": 2, "a": 1, "b": "poison", "s": "x"})
    with pytest.raises(UnrepresentableValue) as info:
        encode_window(ChangeWindow(2, 0, [good, bad]), codecs)
    assert (info.value.table, info.value.column, info.value.scn) == ("t", "b", 2)
    assert codecs.failed_change is bad
    # a null in a NOT NULL column (a source that could not convert a value) is named too
    codecs.failed_change = None
    with pytest.raises(UnrepresentableValue) as info:
        encode_window(ChangeWindow(3, 0, [_change(3, {"id": 3, "a": None, "b": 1, "s": "x"})]), codecs)
    assert (info.value.column, info.value.scn) == ("a", 3)


def test_null_with_marker_nulls_each_offending_column_and_reuses_one_marked_schema() -> None:
    codecs = PolicyCodecs(SchemaRegistry(None), "null_with_marker")
    changes = [
        _change(1, {"id": 1, "a": 1, "b": 2, "s": "ok"}),
        _change(2, {"id": 2, "a": None, "b": "poison", "s": "two bad"}),
        _change(3, {"id": 2, "a": 5, "b": 6, "s": "fixed"}, before={"id": 2, "a": None, "b": "poison", "s": "x"}),
        _change(4, {"id": 4, "a": 4, "b": "poison", "s": "one bad"}),
        _change(5, {"id": 5, "a": 5, "b": 5, "s": "ok again"}),
    ]
    rows = _rows(codecs, changes)
    assert [e.scn for e, _, _ in rows] == [1, 2, 3, 4, 5] and rows[-1][0].window_end
    (e1, _, a1), (e2, _, a2), (e3, b3, a3), (e4, _, a4), (e5, _, a5) = rows
    assert a1 == {"id": 1, "a": 1, "b": 2, "s": "ok"}
    assert a2 == {"id": 2, "a": None, "b": None, "s": "two bad", UNREPRESENTABLE_COLUMN: ["a", "b"]}
    assert b3 == {"id": 2, "a": None, "b": None, "s": "x", UNREPRESENTABLE_COLUMN: ["a", "b"]}
    assert a3 == {"id": 2, "a": 5, "b": 6, "s": "fixed", UNREPRESENTABLE_COLUMN: None}
    assert a4 == {"id": 4, "a": 4, "b": None, "s": "one bad", UNREPRESENTABLE_COLUMN: ["b"]}
    assert a5 == {"id": 5, "a": 5, "b": 5, "s": "ok again"}
    # rows that encode keep the table's schema; marked rows share one version (a, b nullable + marker)
    assert e1.fingerprint == e5.fingerprint != e2.fingerprint
    assert e2.fingerprint == e3.fingerprint == e4.fingerprint
    assert [sv.version for sv in codecs.registry.versions("t")] == [1, 2]
    marked = codecs.registry.get(e2.fingerprint)
    assert marked is not None and marked.meta is not None
    assert [(c.name, c.nullable) for c in marked.meta.columns] == [
        ("id", False),
        ("a", True),
        ("b", True),
        ("s", True),
        (UNREPRESENTABLE_COLUMN, True),
    ]
    # the source's own images are left as they were
    assert changes[1].after == {"id": 2, "a": None, "b": "poison", "s": "two bad"}
    assert codecs.nulled_summary() == [
        {"table": "t", "column": "a", "count": 2, "last_scn": 3},
        {"table": "t", "column": "b", "count": 3, "last_scn": 4},
    ]


def test_null_with_marker_still_stops_on_errors_it_cannot_name_a_column_for() -> None:
    codecs = PolicyCodecs(SchemaRegistry(None), "null_with_marker")
    dropped = TableMeta("gone", (), ())  # e.g. a table dropped before the relay read its change
    with pytest.raises(ValueError):
        encode_window(ChangeWindow(7, 0, [RowChange(7, dropped, Op.INSERT, (1,), None, {"x": 1})]), codecs)
    assert codecs.failed_change is not None and codecs.failed_change.scn == 7
