"""The SQLite source's compiled image converter equals its value-by-value conversion.

For generated tables (every column kind the source maps, decimals with and without precision, the
rowid column) and generated change-log images — values of each kind, wrapped BLOBs and REALs
(``["x", HEX]``, ``["r", TEXT]``), exact REALs, values of other storage classes, unparseable text,
NULLs, non-UTF-8 text as bytes — a ``_Table``'s ``convert`` (the generated function, for an image of
every column in order) returns exactly what ``convert_each`` returns (values, their types, key
order) and warns about the same values. Images of other shapes take ``convert_each`` itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.relay._schema import Column, ColumnType, TableMeta
from headrace.relay.sources.sqlite import ROWID_COLUMN, _Table, sqlite_column

TYPES = [
    ColumnType("long"),
    ColumnType("int"),
    ColumnType("double"),
    ColumnType("float"),
    ColumnType("boolean"),
    ColumnType("bytes"),
    ColumnType("date"),
    ColumnType("time"),
    ColumnType("timestamp"),
    ColumnType("timestamptz"),
    ColumnType("uuid"),
    ColumnType("json"),
    ColumnType("string"),
    ColumnType("enum", symbols=("a", "b")),
    ColumnType("decimal", precision=8, scale=2),
    ColumnType("decimal"),
    ColumnType("interval"),
]

STORED = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.integers(min_value=-3, max_value=3)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=6)
    | st.binary(max_size=6).map(lambda b: ["x", b.hex().upper()])
    | st.floats(allow_nan=False).map(lambda f: ["r", repr(f)])
    | st.sampled_from(
        [
            "2024-02-29",
            "2024-02-30",
            "12:34:56.5",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05+05:30",
            "123e4567-e89b-12d3-a456-426614174000",
            '{"a": [1.50]}',
            "[1,",
            "1.005",
            "-Infinity",
            "123456789.5",
            "é\u0000",
            ["r", "nan"],
            ["q", 1],
            [1, 2, 3],
            b"\xff\xfe",
        ]
    )
)


@st.composite
def tables(draw: st.DrawFn) -> TableMeta:
    n = draw(st.integers(min_value=1, max_value=6))
    names = draw(st.lists(st.text(min_size=1, max_size=3), min_size=n, max_size=n, unique=True))
    cols = [sqlite_column(Column(name, draw(st.sampled_from(TYPES)))) for name in names]
    if draw(st.booleans()) and ROWID_COLUMN not in names:
        cols.insert(0, Column(ROWID_COLUMN, ColumnType("long"), False))
    key = tuple(draw(st.lists(st.sampled_from([c.name for c in cols]), unique=True, max_size=2)))
    return TableMeta("t", tuple(cols), key)


def _typed(row: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(k, type(v).__name__, repr(v)) for k, v in row.items()]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_convert_equals_value_by_value(data: st.DataObject) -> None:
    meta = data.draw(tables())
    fast, ref = _Table(meta), _Table(meta)
    for _ in range(3):
        image = {c.name: data.draw(STORED) for c in meta.columns}
        shape = data.draw(st.integers(0, 8))
        if shape == 0:
            image = dict(reversed(image.items()))  # another order: the general path
        elif shape == 1:
            image.popitem()  # a column fewer (an older shape)
        elif shape == 2:
            image["gone"] = 1  # a column dropped since
        got = fast.convert(dict(image))
        want = ref.convert_each(dict(image))
        assert _typed(got) == _typed(want)
        assert fast.warned == ref.warned


def test_the_compiled_converter_is_used_for_whole_images() -> None:
    meta = TableMeta("t", (Column("a", ColumnType("long")), Column("b", ColumnType("double"))), ("a",))
    t = _Table(meta)
    assert t.convert({"a": 1, "b": ["r", "0.5"]}) == {"a": 1, "b": 0.5}
    assert t._whole is not None
    assert t.convert({"b": 2, "a": "x"}) == {"b": 2.0, "a": "x"}  # another order: value by value


@pytest.mark.parametrize("page_rows", [1, 3, 1000])
def test_poll_windows_convert_page_by_page_the_same_changes(tmp_path, monkeypatch, page_rows: int) -> None:  # type: ignore[no-untyped-def]
    """``_poll``'s windows (converted a page at a time as they are read) hold exactly the changes that
    converting all the poll's rows at once gives, split at the same boundaries: REALs, BLOBs,
    updates and deletes, windows across page boundaries, a window read twice."""
    import sqlite3

    from headrace.relay._config import RelayConfig
    from headrace.relay.sources import sqlite as sq

    monkeypatch.setattr(sq, "PAGE_ROWS", page_rows)
    db = tmp_path / "t.db"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, b BLOB, s TEXT)")
    src = sq.SqliteSource(RelayConfig(source=f"sqlite:///{db}", sqlite={"poll_ms": 5}))
    src.open()
    ends = []
    for i in range(12):
        c.execute("BEGIN")
        for k in range(i % 4 + 1):
            c.execute("INSERT INTO t (r, b, s) VALUES (?, ?, ?)", (i + k / 3, bytes([i, k]), f"é{i}"))
        if i % 3 == 0:
            c.execute("UPDATE t SET r = r * 0.1, s = NULL WHERE id % 2 = 0")
        if i % 5 == 0:
            c.execute("DELETE FROM t WHERE id = (SELECT min(id) FROM t)")
        c.execute("COMMIT")
        ends.append(c.execute("SELECT max(scn) FROM headrace_changes").fetchall()[0][0])
    # the exact REALs are taken from headrace_reals, not from the images' text: make them differ, so
    # a REAL put into the wrong change (or left out) shows
    c.execute("UPDATE headrace_reals SET v = v + 0.25")
    src._cuts = list(ends)
    windows = src._poll(0)
    assert [w.scn for w in windows] == ends
    rows = src.conn.execute(f"SELECT scn, tbl, op, ts_ms, {sq._IMAGES} FROM headrace_changes ORDER BY scn").fetchall()
    whole = src._changes(rows, sq._read_reals(src.conn, 0, ends[-1]))
    got = [c for w in windows for c in w.changes]
    assert [(c.scn, c.op, c.key, c.before, c.after, c.ts_ms, c.table) for c in got] == [
        (c.scn, c.op, c.key, c.before, c.after, c.ts_ms, c.table) for c in whole
    ]
    assert [len(w.changes) for w in windows] == [
        sum(1 for c in whole if prev < c.scn <= w.scn) for prev, w in zip([0, *ends], windows, strict=False)
    ]
    assert [w.ts_ms for w in windows] == [next(c.ts_ms for c in whole if c.scn == w.scn) for w in windows]
    assert [c.after for c in windows[2].changes] == [c.after for c in windows[2].changes]  # read again
    src.close()
