"""Sans-io checks of the row-binlog value decoder and the MySQL converters (no server: the byte layouts
documented in MySQL's sources; the MariaDB conformance test checks the same code against a real server)."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from headrace.relay.sources._mysqlrows import (
    T_DATE,
    T_DATETIME2,
    T_JSON,
    T_NEWDECIMAL,
    T_SET,
    T_STRING,
    T_TIME2,
    T_TIMESTAMP2,
    T_YEAR,
    BinlogColumn,
    _json_text,
    decode_rows,
)
from headrace.relay.sources._mysqltypes import inet6_text, mysql_column

ONE_PRESENT = b"\x01"


def one(col: BinlogColumn, data: bytes) -> object:
    [row] = decode_rows([col], b"\x00" + data, ONE_PRESENT)  # null bitmap: not null
    return row["values"][col.name]


def test_decimal_layout_from_mysql_docs() -> None:
    # strings/decimal.cc, decimal2bin(): 1234567890.1234 as DECIMAL(14,4), and its negation
    c = BinlogColumn("d", T_NEWDECIMAL, meta=(14, 4))
    assert one(c, bytes.fromhex("810DFB38D204D2")) == Decimal("1234567890.1234")
    assert one(c, bytes.fromhex("7EF204C72DFB2D")) == Decimal("-1234567890.1234")
    # 65 digits: no 28-digit context anywhere
    c65 = BinlogColumn("d", T_NEWDECIMAL, meta=(65, 30))
    body = bytearray(b"\x00" * 30)  # 35 integer digits: 8 in 4 bytes + 3×4; 30 fraction digits: 3×4 + 3 in 2 bytes
    body[0] ^= 0x80
    v = one(c65, bytes(body))
    assert v == Decimal(0) and str(v) == "0E-30"
    nines = bytearray(
        (99999999).to_bytes(4, "big") + (999999999).to_bytes(4, "big") * 6 + (999).to_bytes(2, "big")
    )  # fmt: skip
    nines[0] ^= 0x80
    assert one(c65, bytes(nines)) == Decimal("9" * 35 + "." + "9" * 30)
    neg = bytes(x ^ 0xFF for x in nines)
    assert one(c65, neg) == Decimal("-" + "9" * 35 + "." + "9" * 30)  # (unary minus would round to 28 digits)


def time2(seconds: int, micros: int, fsp: int) -> bytes:
    """my_time_packed_to_binary (sql-common/my_time.c) for a signed time."""
    sign = -1 if seconds < 0 or micros < 0 else 1
    s, us = abs(seconds), abs(micros)
    hms = (s // 3600) << 12 | (s // 60 % 60) << 6 | s % 60
    packed = sign * ((hms << 24) + us)
    intpart = packed >> 24  # C: arithmetic shift (floor) ...
    frac = packed - int(packed / (1 << 24)) * (1 << 24)  # ... and % truncating toward zero
    if fsp == 0:
        return (intpart + 0x800000).to_bytes(3, "big")
    if fsp <= 2:
        return (intpart + 0x800000).to_bytes(3, "big") + (int(frac / 10000) & 0xFF).to_bytes(1, "big")
    if fsp <= 4:
        return (intpart + 0x800000).to_bytes(3, "big") + (int(frac / 100) & 0xFFFF).to_bytes(2, "big")
    return (packed + 0x800000000000).to_bytes(6, "big")


def test_time2_negative_fractions() -> None:
    for fsp, (sec, us), want in [
        (1, (0, -500000), dt.timedelta(microseconds=-500000)),
        (3, (-1, -500000), -dt.timedelta(seconds=1, microseconds=500000)),
        (
            6,
            (-838 * 3600 - 59 * 60 - 59, -999999),
            -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999),
        ),
        (0, (838 * 3600 + 59 * 60 + 59, 0), dt.timedelta(hours=838, minutes=59, seconds=59)),
        (0, (-1, 0), dt.timedelta(seconds=-1)),
    ]:
        assert one(BinlogColumn("t", T_TIME2, fsp=fsp), time2(sec, us, fsp)) == want, (fsp, sec, us)


def test_zero_and_partial_dates_are_the_servers_text() -> None:
    d = BinlogColumn("d", T_DATE)
    assert one(d, (0).to_bytes(3, "little")) == "0000-00-00"
    assert one(d, (2024 << 9 | 0 << 5 | 10).to_bytes(3, "little")) == "2024-00-10"
    assert one(d, (9999 << 9 | 12 << 5 | 31).to_bytes(3, "little")) == dt.date(9999, 12, 31)
    ym = 2024 * 13 + 0
    raw = ((ym << 5 | 10) << 17) + 0x8000000000
    assert one(BinlogColumn("t", T_DATETIME2, fsp=2), raw.to_bytes(5, "big") + b"\x00") == "2024-00-10 00:00:00.00"
    zero_ts = BinlogColumn("t", T_TIMESTAMP2, fsp=3)
    assert one(zero_ts, b"\x00" * 6) == "0000-00-00 00:00:00.000"
    assert one(zero_ts, (1).to_bytes(4, "big") + (5).to_bytes(2, "big")) == dt.datetime(
        1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.UTC
    )


def test_binary_padding_year_zero_and_empty_set() -> None:
    b = BinlogColumn("b", T_STRING, length=16)
    assert one(b, b"\x0f" + b"\x01" * 15) == b"\x01" * 15 + b"\x00"
    assert one(BinlogColumn("y", T_YEAR), b"\x00") == 0
    s = BinlogColumn("s", T_SET, meta=(1, 0), set_values=["a", "b"])
    assert one(s, b"\x00") == "" and one(s, b"\x03") == "a,b"


def test_mysql8_binary_json_serialised_exactly() -> None:
    v = {b"a": [1, 1.5, Decimal("1.0000000000000000001"), None, True], b"k": "\u00e9", b"n": 1e300}
    assert _json_text(v) == '{"a": [1, 1.5, 1.0000000000000000001, null, true], "k": "é", "n": 1e+300}'
    col = BinlogColumn("j", T_JSON, length=4)
    assert one(col, b"\x00\x00\x00\x00") == "null"  # an empty binary JSON value: MySQL reads it as null


def test_inet6_text_is_mariadbs() -> None:
    for text, want in [
        ("::", "::"),
        ("::1", "::1"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ("::1.2.3.4", "::1.2.3.4"),
        ("::0.0.1.0", "::100"),
        ("1:0:2:3:4:5:6:7", "1::2:3:4:5:6:7"),  # a single zero group is compressed (RFC 5952 would not)
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("::ffff:0:0", "::ffff:0.0.0.0"),
    ]:
        import ipaddress

        assert inet6_text(ipaddress.IPv6Address(text).packed) == want


def test_converters_accept_binlog_and_select_forms() -> None:
    def conv(**row: object) -> object:
        base = {"COLUMN_NAME": "c", "IS_NULLABLE": "YES", "NUMERIC_PRECISION": None, "NUMERIC_SCALE": None}
        return mysql_column({**base, **row})

    u = conv(DATA_TYPE="uuid", COLUMN_TYPE="uuid")
    assert u.convert(b"\xa0" * 15) == uuid.UUID(bytes=b"\xa0" * 15 + b"\x00")
    assert u.convert("a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a000") == uuid.UUID(bytes=b"\xa0" * 15 + b"\x00")
    b = conv(DATA_TYPE="binary", COLUMN_TYPE="binary(4)", CHARACTER_OCTET_LENGTH=4)
    assert b.convert(b"\x01") == b"\x01\x00\x00\x00"
    t = conv(DATA_TYPE="time", COLUMN_TYPE="time(1)")
    assert t.column.type.kind == "duration"
    assert t.convert("-838:59:59.9") == -dt.timedelta(hours=838, minutes=59, seconds=59.9)
    d = conv(DATA_TYPE="date", COLUMN_TYPE="date")
    assert d.column.type.text_fallback and d.convert("0000-00-00") == "0000-00-00"
    assert d.convert("2024-02-29") == dt.date(2024, 2, 29)
    ts = conv(DATA_TYPE="timestamp", COLUMN_TYPE="timestamp(6)")
    assert ts.convert("2038-01-19 03:14:07.999999") == dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=dt.UTC)
    e = conv(DATA_TYPE="enum", COLUMN_TYPE="enum('a','it''s')")
    assert e.column.type.symbols == ("a", "it's") and e.convert(2) == "it's" and e.convert(0) == ""
    bit = conv(DATA_TYPE="bit", COLUMN_TYPE="bit(64)", NUMERIC_PRECISION=64)
    assert bit.convert(b"\xff" * 8) == Decimal(2**64 - 1) and bit.column.type.kind == "decimal"


def test_a_value_no_converter_takes_names_table_and_column() -> None:
    import pytest

    from headrace.errors import UnrepresentableValue
    from headrace.relay._event import Op
    from headrace.relay.sources._mysqlstream import BinlogAssembler, TableInfo

    def boom(v: object) -> object:
        raise ValueError("no")

    good = mysql_column({"COLUMN_NAME": "id", "DATA_TYPE": "int", "COLUMN_TYPE": "int", "IS_NULLABLE": "NO"})
    bad = mysql_column({"COLUMN_NAME": "v", "DATA_TYPE": "int", "COLUMN_TYPE": "int", "IS_NULLABLE": "YES"})
    bad = type(bad)(bad.column, boom, bad.row)
    asm = BinlogAssembler(lambda t: TableInfo(t, {"id": good, "v": bad}, ("id",)), "db")
    with pytest.raises(UnrepresentableValue, match=r"table 't' column 'v'.*no"):
        asm.rows(Op.INSERT, "t", [{"values": {"id": 1, "v": 2}}])
