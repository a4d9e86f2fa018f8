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
