"""The compiled Avro writer (headrace/relay/_avro_write.py) writes fastavro's bytes, or leaves the row to fastavro.

Sans-io. Every column kind the relay's schemas have (nullable or not, with and without a text
fallback, arrays of them) gets generated values — the edge ones included: 64-bit limits, NaN and
signed zeros, decimals at their precision, NaN decimals in the text branch, BC dates as text, naive
and aware timestamps, empty and NULL-holding arrays, lone surrogates — and the row encoded by
:class:`RowCodec` (compiled writer first) must equal fastavro's own ``schemaless_writer`` of the
same prepared record, or raise the same error class.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import uuid
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import UnrepresentableValue
from headrace.relay import Column, ColumnType, Interval, RowCodec, SchemaRegistry, TableMeta
from headrace.relay._avro_write import compile_writer, zigzag

KINDS: list[tuple[ColumnType, Any]] = []


def _ints(bits: int) -> st.SearchStrategy[int]:
    lim = 1 << (bits - 1)
    return st.one_of(
        st.integers(-lim, lim - 1),
        st.sampled_from([0, -1, 1, 63, -64, 64, 8191, 8192, -8193, lim - 1, -lim]),
        st.integers(-(lim << 2), lim << 2),  # out of range: left to fastavro
    )


_text = st.text(st.characters(codec="utf-8"), max_size=40)
_any_text = st.text(max_size=10)  # lone surrogates included: not UTF-8, an error either way
_floats = st.floats(allow_nan=True, allow_infinity=True)
_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**9), max_value=10**9)
_dates = st.dates(min_value=dt.date(1, 1, 1))
_naive = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
_aware = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC))

SCALAR: list[tuple[ColumnType, st.SearchStrategy[Any]]] = [
    (ColumnType("long"), _ints(64)),
    (ColumnType("int"), _ints(32)),
    (ColumnType("boolean"), st.booleans()),
    (ColumnType("double"), st.one_of(_floats, st.sampled_from([0.0, -0.0, float("nan")]), st.integers(-5, 5))),
    (ColumnType("float"), st.one_of(st.floats(width=32), st.sampled_from([1e300, -0.0]))),
    (ColumnType("string"), st.one_of(_text, _any_text)),
    (ColumnType("bytes"), st.binary(max_size=40)),
    (ColumnType("decimal", 12, 2), st.one_of(_decimals, st.sampled_from([decimal.Decimal("9999999999.99")]))),
    (
        ColumnType("decimal", 12, 2, text_fallback=True),
        st.one_of(_decimals, st.sampled_from([decimal.Decimal("NaN"), "NaN", decimal.Decimal("-0.00")])),
    ),
    (ColumnType("decimal"), st.one_of(_decimals, st.sampled_from(["1e400", "-0.000"]))),
    (ColumnType("date"), _dates),
    (ColumnType("date", text_fallback=True), st.one_of(_dates, st.sampled_from(["infinity", "0044-03-15 BC"]))),
    (ColumnType("time"), st.times()),
    (ColumnType("time", text_fallback=True), st.one_of(st.times(), st.just("24:00:00"))),
    (ColumnType("timestamp"), _naive),
    (ColumnType("timestamp", text_fallback=True), st.one_of(_naive, st.just("-infinity"))),
    (ColumnType("timestamptz"), st.one_of(_aware, _naive, st.integers(-(10**15), 10**15))),
    (ColumnType("timestamptz", text_fallback=True), st.one_of(_aware, st.just("infinity"))),
    (ColumnType("uuid"), st.uuids()),
    (ColumnType("uuid", text_fallback=True), st.one_of(st.uuids(), st.just("not a uuid"))),
    (ColumnType("json"), st.sampled_from(['{"a": [1, 2.50, null]}', "null", "1e400"])),
    (ColumnType("interval"), st.sampled_from(["P1Y2M3DT4H5M6.5S", "PT0S", Interval(1, 2, 3)])),
    (ColumnType("duration"), st.one_of(st.integers(-(10**12), 10**12), st.timedeltas())),
    (ColumnType("enum", symbols=("a", "b")), st.sampled_from(["a", "b"])),
    # text fallbacks of the primitive kinds (SQLite: a value that does not fit its column travels as text)
    (ColumnType("long", text_fallback=True), st.one_of(_ints(64), _text)),
    (ColumnType("int", text_fallback=True), st.one_of(_ints(32), _text)),
    (ColumnType("double", text_fallback=True), st.one_of(_floats, _text)),
    (ColumnType("boolean", text_fallback=True), st.one_of(st.booleans(), _text)),
    (ColumnType("bytes", text_fallback=True), st.one_of(st.binary(max_size=10), _text)),
]


def _array_of(t: ColumnType, s: st.SearchStrategy[Any]) -> tuple[ColumnType, st.SearchStrategy[Any]]:
    arr = ColumnType("array", items=t, text_fallback=True)
    return arr, st.one_of(st.lists(st.one_of(st.none(), s), max_size=5), st.just("{{1,2},{3,4}}"))


ARRAYS = [_array_of(t, s) for t, s in SCALAR if t.kind in ("string", "long", "date", "decimal", "timestamptz")]
ALL = SCALAR + ARRAYS


def _reference(c: RowCodec, row: dict[str, Any]) -> bytes | type[BaseException]:
    """fastavro's bytes for the row as RowCodec prepares it (the compiled writer switched off)."""
    fast, c._fast = c._fast, None
    try:
        return c.encode(row)
    except Exception as exc:
        return type(exc)
    finally:
        c._fast = fast


def _compiled(c: RowCodec, row: dict[str, Any]) -> bytes | type[BaseException]:
    try:
        return c.encode(row)
    except Exception as exc:
        return type(exc)


@st.composite
def tables(draw: st.DrawFn) -> tuple[RowCodec, list[dict[str, Any]]]:
    picks = draw(st.lists(st.sampled_from(range(len(ALL))), min_size=1, max_size=6))
    cols = []
    strategies = []
    for i, p in enumerate(picks):
        t, s = ALL[p]
        nullable = draw(st.booleans())
        cols.append(Column(f"c{i}", t, nullable=nullable))
        strategies.append(st.one_of(st.none(), s) if nullable else s)
    codec = RowCodec(SchemaRegistry().register(TableMeta("t", tuple(cols), key=("c0",))))
    rows = [{c.name: draw(s) for c, s in zip(cols, strategies, strict=True)} for _ in range(draw(st.integers(1, 4)))]
    return codec, rows


@settings(max_examples=600)
@given(tables())
def test_compiled_writer_agrees_with_fastavro(table: tuple[RowCodec, list[dict[str, Any]]]) -> None:
    codec, rows = table
    assert codec._fast is not None  # every kind compiles
    for row in rows:
        assert _compiled(codec, row) == _reference(codec, row), row


def test_every_kind_compiles_and_round_trips() -> None:
    cols = tuple(Column(f"c{i}", t) for i, (t, _s) in enumerate(ALL))
    codec = RowCodec(SchemaRegistry().register(TableMeta("all", cols, key=("c0",))))
    assert codec._fast is not None
    row: dict[str, Any] = {c.name: None for c in cols}
    assert codec.decode(codec.encode(row)) == row


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-64, b"\x7f"), (64, b"\x80\x01"), (8192, b"\x80\x80\x01")],
)
def test_zigzag_is_the_avro_long_encoding(value: int, expected: bytes) -> None:
    assert zigzag(value) == expected


@given(st.integers(-(1 << 63), (1 << 63) - 1))
def test_zigzag_matches_fastavro(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema({"type": "record", "name": "r", "fields": [
        {"name": "v", "type": "long"}]}), {"v": n})  # fmt: skip
    assert zigzag(n) == buf.getvalue()


def test_a_value_fastavro_refuses_is_refused_the_same_way() -> None:
    codec = RowCodec(SchemaRegistry().register(TableMeta("t", (Column("n", ColumnType("decimal", 4, 2)),), key=("n",))))
    with pytest.raises(UnrepresentableValue):
        codec.encode({"n": decimal.Decimal("123456.78")})  # more digits than numeric(4, 2) holds


def test_unknown_schema_constructs_are_left_to_fastavro() -> None:
    assert compile_writer({"type": "record", "name": "r", "fields": [{"name": "m", "type": {"type": "map",
        "values": "long"}}]}) is None  # fmt: skip
    assert compile_writer({"type": "enum", "name": "e", "symbols": ["a"]}) is None
    assert compile_writer({"type": "record", "name": "r", "fields": [{"name": "u", "type": "string"}]}) is not None
    assert uuid  # imported for the strategies' types


def test_typical_rows_take_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary values of every kind never reach fastavro (the speed is the compiled writer's)."""
    typical = {
        "long": 1 << 40, "int": -5, "boolean": True, "double": 0.5, "float": 1.5, "string": "héllo", "bytes": b"\x00",
        "decimal": decimal.Decimal("12.50"), "date": dt.date(2024, 2, 29), "time": dt.time(1, 2, 3, 4),
        "timestamp": dt.datetime(2024, 1, 1, 12), "timestamptz": dt.datetime(1960, 1, 1, tzinfo=dt.UTC),
        "uuid": uuid.UUID(int=7), "json": "[1]", "interval": "PT1S", "duration": 5, "enum": "a",
    }  # fmt: skip
    cols = tuple(Column(f"c{i}", t) for i, (t, _s) in enumerate(ALL))
    row = {
        c.name: [typical[c.type.items.kind], None] if c.type.items is not None else typical[c.type.kind] for c in cols
    }
    codec = RowCodec(SchemaRegistry().register(TableMeta("all", cols, key=("c0",))))
    expected = _reference(codec, row)
    assert isinstance(expected, bytes)

    def refuse(*_a: Any) -> None:
        raise AssertionError("fastavro was called")

    monkeypatch.setattr(fastavro, "schemaless_writer", refuse)
    assert codec.encode(row) == expected
