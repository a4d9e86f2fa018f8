"""The binlog assembler's compiled row converter equals converting value by value.

For generated tables (every converter of :mod:`headrace.relay.sources._mysqltypes`, keys, nullable
columns) and generated row images — values of the types the binlog decoder gives, of the types a
snapshot gives, of wrong types and unparseable text, NULLs, images whose columns differ from the
event's first — :meth:`BinlogAssembler.rows` buffers exactly the changes (table, key, images, value
types) that :meth:`BinlogAssembler._convert` value by value gives, or raises the same error. And
every ``PASSTHROUGH`` converter returns a value of its type as it is.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.relay._event import Op
from headrace.relay.sources._mysqlstream import BinlogAssembler, TableInfo
from headrace.relay.sources._mysqltypes import PASSTHROUGH, mysql_column

ANY_TEXT = st.text(max_size=6) | st.binary(max_size=6) | st.sampled_from([b"\xff\xfe", "", "x"])
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, places=3) | st.sampled_from(
    [Decimal("NaN"), Decimal("-0"), Decimal("1E+5")]
)
DATETIMES = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
# (DATA_TYPE, COLUMN_TYPE, extra info_schema fields) → values of it (right and wrong types)
TYPES: list[tuple[str, str, dict[str, Any], st.SearchStrategy[Any]]] = [
    ("int", "int(11)", {}, INTS | st.sampled_from([b"12", "-3", "x", b"", 1.5])),
    ("bigint", "bigint(20)", {}, INTS | st.sampled_from([b"9", "1e3"])),
    ("bigint", "bigint(20) unsigned", {}, INTS | DECIMALS | st.sampled_from([b"7", "abc", 2.5])),
    ("tinyint", "tinyint(1)", {}, st.integers(-128, 127) | st.sampled_from([b"1", "0", "x"])),
    ("decimal", "decimal(12,3)", {"NUMERIC_PRECISION": 12, "NUMERIC_SCALE": 3}, DECIMALS | ANY_TEXT | INTS),
    ("double", "double", {}, st.floats() | st.sampled_from([b"1.5", "nan", "x", 3, b"\xff"])),
    ("float", "float", {}, st.floats(width=32) | st.sampled_from([b"-0", 7])),
    ("varchar", "varchar(10)", {}, ANY_TEXT | INTS),
    ("text", "text", {}, ANY_TEXT),
    ("json", "json", {}, ANY_TEXT | st.sampled_from([{"a": [1.5]}, [1, "x"], 3])),
    ("blob", "blob", {}, ANY_TEXT | st.binary(max_size=4).map(bytearray)),
    ("binary", "binary(4)", {"CHARACTER_OCTET_LENGTH": 4}, ANY_TEXT),
    ("date", "date", {}, st.dates() | DATETIMES | st.sampled_from(["2024-00-10", "0000-00-00", b"2024-01-02", 5])),
    ("datetime", "datetime(6)", {}, DATETIMES | st.sampled_from(["2024-01-02 03:04:05.5", "bad", b"x"])),
    ("timestamp", "timestamp(3)", {}, DATETIMES | DATETIMES.map(lambda d: d.replace(tzinfo=dt.UTC))),
    ("time", "time(6)", {}, st.timedeltas() | st.times() | st.sampled_from(["-838:59:59", "bad", b"1:02:03"])),
    ("enum", "enum('a','b')", {}, st.integers(-1, 3) | st.sampled_from(["a", b"b"])),
    ("set", "set('a','b','c')", {}, st.frozensets(st.sampled_from("abc")) | st.integers(0, 7) | st.just("a,b")),
    ("bit", "bit(8)", {"NUMERIC_PRECISION": 8}, st.binary(max_size=2) | st.integers(0, 255)),
    ("uuid", "uuid", {}, st.uuids() | st.binary(min_size=16, max_size=16) | st.sampled_from(["nope", b"\x01"])),
    ("inet6", "inet6", {}, st.binary(min_size=16, max_size=16) | st.sampled_from(["::1"])),
]


@st.composite
def tables(draw: st.DrawFn) -> tuple[TableInfo, list[int]]:
    n = draw(st.integers(min_value=1, max_value=5))
    names = draw(st.lists(st.text(min_size=1, max_size=3), min_size=n, max_size=n, unique=True))
    kinds = draw(st.lists(st.integers(0, len(TYPES) - 1), min_size=n, max_size=n))
    cols = {}
    for name, k in zip(names, kinds, strict=True):
        data_type, column_type, extra, _ = TYPES[k]
        row = {"COLUMN_NAME": name, "DATA_TYPE": data_type, "COLUMN_TYPE": column_type, "IS_NULLABLE": "YES"}
        row |= {"NUMERIC_PRECISION": None, "NUMERIC_SCALE": None} | extra
        cols[name] = mysql_column(row)
    key = tuple(draw(st.lists(st.sampled_from(names), unique=True, max_size=2)))
    return TableInfo("t", cols, key), kinds


@st.composite
def images(draw: st.DrawFn, info: TableInfo, kinds: list[int]) -> dict[str, Any]:
    names = list(info.columns)
    values = {n: draw(st.none() | TYPES[k][3]) for n, k in zip(names, kinds, strict=True)}
    shape = draw(st.integers(0, 20))
    if shape == 0 and len(values) > 1:  # a column missing (a row unlike the event's first)
        del values[names[-1]]
    elif shape == 1:  # a column the table no longer has
        values["gone"] = draw(ANY_TEXT)
    elif shape == 2:  # another order
        values = dict(reversed(values.items()))
    return values


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "error", (type(exc), str(exc))


def _reference(asm: BinlogAssembler, op: Op, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for r in rows:
        if op is Op.UPDATE:
            meta, before = asm._convert("t", r["before_values"], None)
            _, after = asm._convert("t", r["after_values"], None)
            out.append((meta, op, tuple(after[k] for k in meta.key), before, after))
        else:
            meta, row = asm._convert("t", r["values"], None)
            key = tuple(row[k] for k in meta.key)
            out.append((meta, op, key, None, row) if op is Op.INSERT else (meta, op, key, row, None))
    return out


def _typed(x: Any) -> Any:
    """``x`` with each value's type (NaN compares by repr)."""
    if isinstance(x, dict):
        return [(k, type(v).__name__, repr(v)) for k, v in x.items()]
    if isinstance(x, tuple):
        return [(type(v).__name__, repr(v)) for v in x]
    return x


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_rows_equal_value_by_value_conversion(data: st.DataObject) -> None:
    info, kinds = data.draw(tables())
    op = data.draw(st.sampled_from([Op.INSERT, Op.UPDATE, Op.DELETE]))
    n = data.draw(st.integers(min_value=1, max_value=4))
    if op is Op.UPDATE:
        rows = [
            {"before_values": data.draw(images(info, kinds)), "after_values": data.draw(images(info, kinds))}
            for _ in range(n)
        ]
    else:
        rows = [{"values": data.draw(images(info, kinds))} for _ in range(n)]
    fast = BinlogAssembler(lambda t: info, "db")
    ref = BinlogAssembler(lambda t: info, "db")
    got = _outcome(lambda: fast.rows(op, "t", rows))
    want = _outcome(lambda: _reference(ref, op, rows))
    assert got[0] == want[0]
    if got[0] == "error":
        assert got[1] == want[1]
        return
    txn = fast.commit(100, 1)
    assert txn is not None
    changes = list(txn.changes)
    assert len(changes) == len(want[1])
    for c, (meta, wop, key, before, after) in zip(changes, want[1], strict=True):
        assert (c.scn, c.table, c.op) == (txn.scn, meta, wop)
        assert (_typed(c.key), _typed(c.before), _typed(c.after)) == (_typed(key), _typed(before), _typed(after))


PASS_VALUES: dict[type, st.SearchStrategy[Any]] = {
    int: INTS,
    float: st.floats(),
    str: st.text(),
    bytes: st.binary(),
    Decimal: DECIMALS,
    dt.date: st.dates(),
    dt.datetime: DATETIMES | DATETIMES.map(lambda d: d.replace(tzinfo=dt.UTC)),
    dt.timedelta: st.timedeltas(),
    uuid.UUID: st.uuids(),
}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_passthrough_converters_return_a_value_of_their_type_as_it_is(data: st.DataObject) -> None:
    convert, t = data.draw(st.sampled_from(sorted(PASSTHROUGH.items(), key=lambda kv: kv[0].__name__)))
    v = data.draw(PASS_VALUES[t])
    assert type(v) is t
    out = convert(v)
    assert type(out) is t
    assert out is v or out == v or (isinstance(v, float) and math.isnan(v) and math.isnan(out))
