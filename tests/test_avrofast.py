"""The compiled Avro row writer/reader (the relay's and the client's hot path) agree with fastavro.

For generated tables of every column kind (nullable or not, with and without text fallbacks, arrays,
marker columns, names that need sanitising) and generated rows with edge values (NaN with payloads,
±Inf, -0.0, 64-bit limits, ints out of range, surrogates, text in fallback columns, huge decimals),
the compiled writer either refuses (then :meth:`RowCodec.encode` takes the fastavro path) or writes
exactly the bytes ``fastavro.schemaless_writer`` writes, and the compiled reader returns exactly the
values of the fastavro path; :meth:`RowCodec.encode`/``decode`` as a whole equal the reference paths,
errors included.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.errors import UnrepresentableValue
from headrace.relay import JSON_NULL, Column, ColumnType, Interval, RowCodec, SchemaRegistry, TableMeta
from headrace.relay._schema import UNCHANGED_MARKER, UNREPRESENTABLE_MARKER

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGE_INTS = st.sampled_from([0, 1, -1, 63, -64, 64, -65, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 2**63, -(2**63) - 1])
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.integers(min_value=0, max_value=2**64 - 1).map(lambda b: struct.unpack("<d", b.to_bytes(8, "little"))[0]),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, 3.4028236e38, 1e-50]),
)
TEXT = st.text(max_size=20) | st.sampled_from(["", "\ud800", "é" * 70, "x" * 200])
DATES = st.dates()
TIMES = st.times()
NAIVE = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
ZONES = st.just(dt.UTC) | st.builds(
    dt.timezone, st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
)
AWARE = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=ZONES)
JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)

SCALAR_KINDS = ["boolean", "int", "long", "float", "double", "string", "bytes", "date", "time", "timestamp"]
SCALAR_KINDS += ["timestamptz", "uuid", "json", "interval", "duration", "enum", "decimal"]


@st.composite
def column_types(draw: st.DrawFn, depth: int = 0) -> ColumnType:
    kind = draw(st.sampled_from([*SCALAR_KINDS, "array"] if depth == 0 else SCALAR_KINDS))
    fallback = draw(st.booleans())
    if kind == "decimal":
        if draw(st.booleans()):
            precision = draw(st.integers(min_value=1, max_value=80))
            scale = draw(st.integers(min_value=0, max_value=min(precision, 30)))
            return ColumnType("decimal", precision=precision, scale=scale, text_fallback=fallback)
        return ColumnType("decimal", text_fallback=fallback)
    if kind == "array":
        return ColumnType("array", items=draw(column_types(depth=1)), text_fallback=fallback)
    return ColumnType(kind, text_fallback=fallback)


def values(t: ColumnType) -> st.SearchStrategy[Any]:
    """Values a source may give for a column of type ``t`` (and some it should not)."""
    k = t.kind
    base: st.SearchStrategy[Any]
    if k == "boolean":
        base = st.booleans() | st.sampled_from([0, 1])
    elif k in ("int", "long"):
        base = LONG | EDGE_INTS | st.booleans() | st.sampled_from([decimal.Decimal(7), 2.0])
    elif k in ("float", "double"):
        base = FLOATS | st.integers(min_value=-(2**53), max_value=2**53) | st.sampled_from([decimal.Decimal("1.5")])
    elif k in ("string", "enum"):
        base = TEXT | st.sampled_from([5, decimal.Decimal("2.50")])
    elif k == "bytes":
        base = st.binary(max_size=20) | st.binary(max_size=5).map(bytearray) | TEXT
    elif k == "date":
        base = DATES | NAIVE
    elif k == "time":
        base = TIMES | st.times(timezones=ZONES)
    elif k == "timestamp":
        base = NAIVE | AWARE
    elif k == "timestamptz":
        base = AWARE | NAIVE
    elif k == "uuid":
        base = st.uuids() | st.uuids().map(str)
    elif k == "json":
        base = JSONS | st.just(JSON_NULL) | st.sampled_from(['{"a": 1.50}', "null", "[1,2]"])
    elif k == "interval":
        base = (
            st.sampled_from(["P1Y2M3DT4H5M6S", "PT0S", "-P1D"])
            | st.builds(dt.timedelta, days=st.integers(-999, 999), microseconds=st.integers(0, 10**6)).map(lambda d: d)
            | st.just(Interval(1, 2, 3))
        )
    elif k == "duration":
        base = st.builds(dt.timedelta, microseconds=st.integers(-(10**12), 10**12)) | LONG
    elif k == "decimal":
        base = st.decimals(allow_nan=True, allow_infinity=True, places=None) | st.sampled_from(
            ["1.5", "-0.000", "NaN", "1e5", decimal.Decimal("9" * 70), 3, 2.5]
        )
    else:  # array
        assert t.items is not None
        base = st.lists(st.none() | values(t.items), max_size=4)
    if t.text_fallback:
        base = base | TEXT
    return base


@st.composite
def tables(draw: st.DrawFn) -> TableMeta:
    n = draw(st.integers(min_value=1, max_value=6))
    names = draw(
        st.lists(st.sampled_from(["id", "a", "a b", "1x", "a_b", "é", "v"]), min_size=n, max_size=n, unique=True)
    )
    cols = [Column(name, draw(column_types()), draw(st.booleans())) for name in names]
    meta = TableMeta("t-x", tuple(cols), key=(names[0],))
    for marker in (UNCHANGED_MARKER, UNREPRESENTABLE_MARKER):
        if draw(st.booleans()):
            meta, _ = meta.with_marker(marker)
    return meta


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types, floats bit for bit, recursively."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo
    return bool(a == b)


def _outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except (UnrepresentableValue, ValueError, TypeError, ArithmeticError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(meta=tables(), data=st.data())
def test_compiled_writer_and_reader_equal_fastavro(meta: TableMeta, data: st.DataObject) -> None:
    codec = RowCodec(SchemaRegistry().register(meta))
    assert codec._fast_encode is not None and codec._fast_decode is not None
    for _ in range(5):
        row = {c.name: data.draw(st.none() | values(c.type)) for c in meta.columns if data.draw(st.integers(0, 9))}
        ref = _outcome(codec.encode_reference, row)
        assert _outcome(codec.encode, row) == ref
        try:
            fast = codec._fast_encode(row)
        except Exception:  # refusing is allowed: encode() then takes the fastavro path
            fast = None
        if fast is not None:
            assert ref == ("ok", fast), (row, meta)
        if ref[0] != "ok":
            continue
        encoded = ref[1]
        want = _outcome(codec.decode_reference, encoded)
        got = _outcome(codec.decode, encoded)
        assert got[0] == want[0] and (_same(got[1], want[1]) if got[0] == "ok" else got == want), (row, meta)
        try:
            fast_values = codec._fast_decode(encoded)
        except Exception:  # refusing is allowed: decode() then takes the fastavro path
            continue
        assert want[0] == "ok" and _same(fast_values, want[1]), (row, meta)


def test_compiled_paths_take_the_common_kinds_themselves() -> None:
    """The hot kinds are written and read without fastavro (the fast path does not just refuse)."""
    meta = TableMeta(
        "events",
        (
            Column("id", ColumnType("long"), False),
            Column("payload", ColumnType("string")),
            Column("amount", ColumnType("double")),
            Column("n", ColumnType("int")),
            Column("ok", ColumnType("boolean")),
            Column("doc", ColumnType("json")),
            Column("blob", ColumnType("bytes")),
            Column("when", ColumnType("date", text_fallback=True)),
            Column("at", ColumnType("timestamptz")),
            Column("local", ColumnType("timestamp")),
            Column("t", ColumnType("time")),
            Column("total", ColumnType("decimal", precision=40, scale=3)),
            Column("ref", ColumnType("uuid")),
            Column("tags", ColumnType("array", items=ColumnType("string"), text_fallback=True)),
            Column("ns", ColumnType("array", items=ColumnType("long"))),
        ),
        key=("id",),
    )
    codec = RowCodec(SchemaRegistry().register(meta))
    assert codec._fast_encode is not None and codec._fast_decode is not None
    # no field is left to fastavro's one-field writer or reader
    assert "_sw" not in codec._fast_encode.__code__.co_names
    assert "_sr" not in codec._fast_decode.__code__.co_names
    row = {"id": 2**62, "payload": "é" * 100, "amount": -0.0, "n": -5, "ok": True, "doc": {"a": [1]}, "blob": b"\0"}
    row |= {"at": dt.datetime(1900, 1, 1, tzinfo=dt.UTC), "local": dt.datetime(2024, 1, 1), "t": dt.time(23, 59)}
    row["total"] = decimal.Decimal("-" + "9" * 37 + ".5")
    row |= {"ref": uuid.UUID(int=2**128 - 1), "tags": ["a", None, "é"], "ns": [-(2**63), 0, 2**63 - 1]}
    for extra in (
        {"when": "infinity"},
        {"when": None},
        {"when": dt.date(2024, 2, 29)},
        {"tags": [], "ns": None, "ref": None},
        {"tags": "{not an array}", "ns": []},
    ):
        encoded = codec._fast_encode({**row, **extra})
        assert encoded == codec.encode_reference({**row, **extra})
        assert _same(codec._fast_decode(encoded), codec.decode_reference(encoded))
    # bytes cut short or too long are refused by the compiled reader
    encoded = codec.encode(row)
    for bad in (encoded[:-1], encoded + b"\0"):
        try:
            codec._fast_decode(bad)
        except Exception:
            continue
        raise AssertionError(f"the compiled reader took {bad!r}")
    assert uuid  # the module is used by the strategies
