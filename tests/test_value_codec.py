"""The row codec carries every value a source gives it exactly (sans-io: no database here).

Each source's own conformance suite checks values from the real server; this checks the shared
representation: text fallbacks, decimals past 28 digits, intervals, durations, JSON text, field names
that collide after sanitising, and the clear error for a value that cannot be encoded.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.errors import UnrepresentableValue
from headrace.relay import (
    JSON_NULL,
    Column,
    ColumnType,
    Interval,
    RowCodec,
    SchemaRegistry,
    TableMeta,
    avro_schema,
)


def codec(*columns: Column, name: str = "t") -> RowCodec:
    return RowCodec(SchemaRegistry().register(TableMeta(name, columns)))


def roundtrip(c: RowCodec, row: dict[str, Any]) -> dict[str, Any]:
    return c.decode(c.encode(row))


def test_text_fallback_carries_what_python_cannot_hold() -> None:
    c = codec(
        Column("d", ColumnType("date", text_fallback=True)),
        Column("ts", ColumnType("timestamptz", text_fallback=True), nullable=False),
        Column("t", ColumnType("time", text_fallback=True)),
        Column("n", ColumnType("decimal", precision=10, scale=2, text_fallback=True)),
        Column("a", ColumnType("array", items=ColumnType("date", text_fallback=True), text_fallback=True)),
    )
    odd = {
        "d": "0044-03-15 BC",
        "ts": "infinity",
        "t": "24:00:00",
        "n": decimal.Decimal("NaN"),
        "a": "{{2024-01-01},{infinity}}",
    }
    out = roundtrip(c, odd)
    assert out["d"] == "0044-03-15 BC" and out["ts"] == "infinity" and out["t"] == "24:00:00"
    assert out["n"].is_nan() and out["a"] == "{{2024-01-01},{infinity}}"
    usual = {
        "d": dt.date(2024, 2, 29),
        "ts": dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        "t": dt.time(23, 59, 59, 999999),
        "n": decimal.Decimal("-12345678.90"),
        "a": [dt.date(1, 1, 1), None, "infinity"],
    }
    assert roundtrip(c, usual) == usual
    assert roundtrip(c, {"ts": "-infinity"}) == {"d": None, "ts": "-infinity", "t": None, "n": None, "a": None}


def test_text_fallback_union_in_the_schema() -> None:
    meta = TableMeta(
        "t",
        (
            Column("d", ColumnType("date", text_fallback=True)),
            Column("k", ColumnType("date", text_fallback=True), nullable=False),
            Column("s", ColumnType("string", text_fallback=True)),  # already text: no second string branch
        ),
    )
    fields = {f["name"]: f["type"] for f in avro_schema(meta)["fields"]}
    assert fields["d"] == ["null", {"type": "int", "logicalType": "date"}, "string"]
    assert fields["k"] == [{"type": "int", "logicalType": "date"}, "string"]
    assert fields["s"] == ["null", "string"]


@given(
    digits=st.integers(min_value=1, max_value=65),
    scale=st.integers(min_value=0, max_value=30),
    data=st.data(),
)
def test_fixed_decimals_past_28_digits_are_exact(digits: int, scale: int, data: st.DataObject) -> None:
    precision = max(digits, scale, 1)
    unscaled = data.draw(st.integers(min_value=-(10**precision) + 1, max_value=10**precision - 1))
    value = decimal.Decimal(unscaled).scaleb(-scale, context=decimal.Context(prec=100))
    c = codec(Column("n", ColumnType("decimal", precision=precision, scale=scale)))
    out = roundtrip(c, {"n": value})["n"]
    assert out == value and out.as_tuple().exponent == -scale


def test_decimal_65_30_and_unconstrained_numeric_text() -> None:
    c = codec(Column("m", ColumnType("decimal", precision=65, scale=30)), Column("u", ColumnType("decimal")))
    big = decimal.Decimal("-" + "9" * 35 + "." + "9" * 30)
    text = "0." + "0" * 500 + "1"
    out = roundtrip(c, {"m": big, "u": text})
    assert out["m"] == big and out["u"] == decimal.Decimal(text)
    assert roundtrip(c, {"u": "NaN"})["u"].is_nan() and roundtrip(c, {"u": "-Infinity"})["u"] == decimal.Decimal("-inf")


def test_a_value_that_cannot_be_encoded_names_its_table_and_column() -> None:
    n = Column("n", ColumnType("decimal", precision=4, scale=0))
    c = codec(Column("id", ColumnType("long"), nullable=False), n)
    with pytest.raises(UnrepresentableValue) as err:
        c.encode({"id": 1, "n": decimal.Decimal("NaN")})  # no text fallback on this column
    assert (err.value.table, err.value.column) == ("t", "n")
    with pytest.raises(UnrepresentableValue) as err:
        c.encode({"id": 2**63, "n": 1})  # past Avro long
    assert err.value.column == "id"
    with pytest.raises(UnrepresentableValue) as err:
        c.encode({"id": 1, "n": decimal.Decimal("12345")})  # more digits than the column's precision
    assert err.value.column == "n"


@given(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
def test_doubles_bit_for_bit(x: float) -> None:
    out = roundtrip(codec(Column("x", ColumnType("double"))), {"x": x})["x"]
    assert struct.pack("<d", out) == struct.pack("<d", x) or (math.isnan(x) and math.isnan(out))


def test_integers_to_their_limits() -> None:
    c = codec(Column("i", ColumnType("int")), Column("l", ColumnType("long")))
    for i, lv in ((-(2**31), -(2**63)), (2**31 - 1, 2**63 - 1), (0, 0)):
        assert roundtrip(c, {"i": i, "l": lv}) == {"i": i, "l": lv}


intervals = st.builds(
    Interval,
    months=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    days=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    microseconds=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@given(intervals)
def test_intervals_round_trip_through_iso_text(iv: Interval) -> None:
    assert Interval.from_iso(str(iv)) == iv
    assert roundtrip(codec(Column("iv", ColumnType("interval"))), {"iv": iv})["iv"] == iv


def test_interval_examples_in_postgresql_iso_style() -> None:
    assert str(Interval(months=178_000_000 * 12)) == "P178000000Y"
    assert str(Interval(-14, 3, -(4 * 3600 + 5 * 60) * 1_000_000 - 6_500_000)) == "P-1Y-2M3DT-4H-5M-6.5S"
    assert str(Interval()) == "PT0S"
    assert Interval.from_iso("P1Y2M3DT4H5M6.5S") == Interval(14, 3, ((4 * 60 + 5) * 60 + 6) * 1_000_000 + 500_000)
    assert Interval(1, 0, 0) != Interval(0, 30, 0)  # a month is not 30 days
    assert Interval(0, 1, 5).to_timedelta() == dt.timedelta(days=1, microseconds=5)
    c = codec(Column("iv", ColumnType("interval")))
    assert roundtrip(c, {"iv": dt.timedelta(days=-1, seconds=5)})["iv"] == Interval(0, -1, 5_000_000)
    assert roundtrip(c, {"iv": "P-1M"})["iv"] == Interval(-1, 0, 0)


def test_durations_span_mysql_time() -> None:
    c = codec(Column("d", ColumnType("duration")))
    for v in (dt.timedelta(hours=-838, minutes=-59, seconds=-59), dt.timedelta(hours=838, microseconds=999999)):
        assert roundtrip(c, {"d": v})["d"] == v


def test_json_travels_as_its_text() -> None:
    c = codec(Column("j", ColumnType("json")))
    text = '{"x": 1.0000000000000000001, "big": 123456789012345678901234567890, "n": null, "f": 0.1, "z": 1.50}'
    out = roundtrip(c, {"j": text})["j"]
    assert out == {
        "x": decimal.Decimal("1.0000000000000000001"),  # a float would make it 1.0
        "big": 123456789012345678901234567890,
        "n": None,
        "f": 0.1,  # a float that prints back as the same text stays a float
        "z": decimal.Decimal("1.50"),
    }
    assert isinstance(out["f"], float) and str(out["z"]) == "1.50"
    assert roundtrip(c, {"j": "null"})["j"] is JSON_NULL  # a JSON null, not SQL NULL
    assert roundtrip(c, {"j": None})["j"] is None
    assert roundtrip(c, {"j": JSON_NULL})["j"] is JSON_NULL
    assert roundtrip(c, {"j": {"a": [1, "b"]}})["j"] == {"a": [1, "b"]}  # a parsed value is serialised


def test_columns_whose_names_collide_after_sanitising_keep_their_own_values() -> None:
    c = codec(
        Column("a-b", ColumnType("long")),
        Column("a_b", ColumnType("long")),
        Column("a b", ColumnType("long")),
        Column("a_b_2", ColumnType("long")),
    )
    row = {"a-b": 1, "a_b": 2, "a b": 3, "a_b_2": 4}
    assert roundtrip(c, row) == row
    names = [f["name"] for f in c.version.schema["fields"]]
    assert len(set(names)) == 4 and "a_b" in names and "a_b_2" in names


def test_uuid_and_bytes_with_trailing_zeros() -> None:
    c = codec(Column("u", ColumnType("uuid")), Column("b", ColumnType("bytes")))
    row = {"u": uuid.UUID(bytes=b"\x01" * 15 + b"\x00"), "b": b"a\x00\x00"}
    assert roundtrip(c, row) == row


def test_subscribe_json_line_marks_a_schema_change_and_prints_new_values() -> None:
    import json

    from headrace.relay import Op
    from headrace.relay.client import ChangeEvent
    from headrace.relay.client._cli import event_json

    after = {"iv": Interval(14, 3, 0), "j": JSON_NULL, "d": "infinity", "n": decimal.Decimal("NaN")}
    e = ChangeEvent(7, "t", Op.INSERT, [1], None, after, 0, True, "ab" * 8, 2, schema_changed=True)
    line = json.loads(event_json(e))
    assert line["schema_changed"] is True and line["schema_version"] == 2
    assert line["after"] == {"iv": "P1Y2M3D", "j": None, "d": "infinity", "n": "NaN"}
    plain = json.loads(event_json(ChangeEvent(8, "t", Op.INSERT, [1], None, {}, 0, True, "ab" * 8, 2)))
    assert "schema_changed" not in plain


def test_text_that_is_no_number_or_uuid_travels_in_fallback_decimal_and_uuid_columns() -> None:
    # SQLite lets any column hold any value: such a value travels as its text, never as null
    c = codec(
        Column("n", ColumnType("decimal", precision=10, scale=2, text_fallback=True)),
        Column("u", ColumnType("decimal", text_fallback=True)),
        Column("id", ColumnType("uuid", text_fallback=True), nullable=False),
    )
    odd = {"n": "abc", "u": "X'00FF'", "id": "not-a-uuid"}
    assert roundtrip(c, odd) == odd
    ok = {"n": decimal.Decimal("1.50"), "u": decimal.Decimal("7"), "id": uuid.UUID(int=5)}
    assert roundtrip(c, ok) == ok
    assert roundtrip(c, {"n": None, "u": None, "id": str(uuid.UUID(int=6))})["id"] == uuid.UUID(int=6)
    fields = {f["name"]: f["type"] for f in c.version.schema["fields"]}
    assert fields["id"] == {"type": "string", "headrace.type": "uuid"}  # one string branch, no logical type
