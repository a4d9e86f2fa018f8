"""MySQL/MariaDB column types: ``information_schema.COLUMNS`` → relay column kind, and value conversion.

Sans-io: :func:`mysql_column` takes one ``information_schema.COLUMNS`` row and returns the relay
:class:`~headrace.relay._schema.Column` and a function that turns a *wire value* — what
:mod:`._mysqlrows` decoded from the row binlog, or the text a ``SELECT`` returned for the same
column (the snapshot) — into the Python value the relay encodes. Both paths go through the same
converter, so a row read by the snapshot and the same row read from the binlog encode to the same
bytes. Every legal value is delivered exactly (docs/type-mapping.md, "MySQL / MariaDB"):

=================================  ====================  ============================================
MySQL / MariaDB                    relay column kind     Python value
=================================  ====================  ============================================
TINYINT(1), BOOLEAN                ``boolean`` + text    ``bool`` for 0/1; any other value (the column
                                                         holds −128…127) as its text, e.g. ``'2'``
TINYINT, SMALLINT, MEDIUMINT, INT  ``int``               ``int``
INT UNSIGNED, BIGINT, YEAR         ``long``              ``int`` (YEAR 0000 → 0)
BIGINT UNSIGNED, BIT(64)           ``decimal`` (20, 0)   ``decimal.Decimal`` (Avro long stops at 2^63−1)
DECIMAL(p, s), NUMERIC             ``decimal`` (p, s)    ``decimal.Decimal``, all 65 digits
FLOAT / DOUBLE                     ``float``/``double``  ``float``, bit for bit
CHAR, VARCHAR, *TEXT               ``string``            ``str`` (CHAR: trailing spaces removed, as
                                                         ``SELECT`` shows them)
BINARY(n)                          ``bytes``             ``bytes``, padded with 0x00 to n
VARBINARY, *BLOB                   ``bytes``             ``bytes``
DATE                               ``date`` + text       ``datetime.date``; zero/partial dates as the
                                                         server's text (``0000-00-00``, ``2024-00-10``)
TIME(n)                            ``duration``          ``datetime.timedelta`` (−838:59:59 … 838:59:59)
DATETIME(n)                        ``timestamp`` + text  naive ``datetime.datetime``; zero dates as text
                                                         (``0000-00-00 00:00:00.000`` with n digits)
TIMESTAMP(n)                       ``timestamptz`` + text aware ``datetime.datetime`` (UTC); the zero
                                                         timestamp as text
JSON (MariaDB: LONGTEXT + check)   ``json``              ``str``: the JSON text exactly as stored
ENUM('a', …)                       ``enum``              ``str`` (the label; '' for the error value)
SET('a', …)                        ``string``            ``str``: members in definition order,
                                                         comma-joined ('' for the empty set)
BIT(1…63)                          ``long``              ``int``
UUID (MariaDB 10.7+)               ``uuid``              ``uuid.UUID``
INET6 / INET4 (MariaDB)            ``string``            ``str``: the server's text form
GEOMETRY and its subtypes          ``bytes``             ``bytes``: the server's internal form
anything else                      ``string``            ``str``
=================================  ====================  ============================================

"+ text" marks ``ColumnType(text_fallback=True)``: the Avro union gains ``string`` for values the
Python type cannot hold. MariaDB stores JSON as LONGTEXT with a ``json_valid`` check constraint;
``information_schema`` then still says ``longtext``, so a caller passes ``json_columns`` (from
``CHECK_CONSTRAINTS``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .._schema import Column, ColumnType
from ._mysqlrows import BinlogColumn

__all__ = [
    "PASSTHROUGH",
    "MysqlColumn",
    "binlog_only_column",
    "inet6_text",
    "matches_binlog",
    "mysql_column",
    "pack_scn",
    "unpack_scn",
]

Convert = Callable[[Any], Any]

_POS_BITS = 32
_POS_MASK = (1 << _POS_BITS) - 1


def pack_scn(file_index: int, position: int) -> int:
    """SCN of a binlog position: ``file_index << 32 | position`` (file ``binlog.000042`` has index 42)."""
    if not 0 <= position <= _POS_MASK or not 0 <= file_index < (1 << 31):
        raise ValueError(f"binlog position {file_index}:{position} does not fit an SCN")
    return (file_index << _POS_BITS) | position


def unpack_scn(scn: int) -> tuple[int, int]:
    """``(file_index, position)`` of an SCN made by :func:`pack_scn`."""
    return scn >> _POS_BITS, scn & _POS_MASK


@dataclass(frozen=True, slots=True)
class MysqlColumn:
    """A column as the relay sees it, and the converter for its wire values."""

    column: Column
    convert: Convert
    #: the ``information_schema.COLUMNS`` row it was made from (None: made from a binlog table map)
    row: Mapping[str, Any] | None = field(default=None, compare=False)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)


def _string(v: Any) -> str:
    return v if isinstance(v, str) else _text(v)


def _bytes(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _padded(length: int) -> Convert:
    def convert(v: Any) -> bytes:
        b = _bytes(v)
        return b + b"\x00" * (length - len(b)) if len(b) < length else b

    return convert


def _json(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes | bytearray):
        return bytes(v).decode("utf-8")
    return json.dumps(v)


def _int(v: Any) -> int:
    return int(v) if not isinstance(v, bytes) else int(v.decode())


def _boolean(v: Any) -> bool | str:
    # BOOLEAN is TINYINT(1): 0 and 1 are booleans, any other value (-128…127) travels as its text
    i = _int(v)
    return bool(i) if i in (0, 1) else str(i)


def _decimal(v: Any) -> Decimal:
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bytes):
        v = v.decode()
    return Decimal(v) if isinstance(v, int | str) else Decimal(str(v))


def _float(v: Any) -> float:
    return float(v.decode() if isinstance(v, bytes) else v)


_DATE_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)$")
_DATETIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")
_TIME_RE = re.compile(r"(-?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")


def _date(v: Any) -> dt.date | str:
    if isinstance(v, dt.date):
        return v
    text = _text(v)
    m = _DATE_RE.match(text)
    if m:
        try:
            return dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            pass
    return text  # the server's own text of a zero or partial date: 0000-00-00, 2024-00-10


def _micros(frac: str | None) -> int:
    return int((frac or "").ljust(6, "0"))


def _datetime(v: Any) -> dt.datetime | str:
    if isinstance(v, dt.datetime):
        return v
    text = _text(v)
    m = _DATETIME_RE.match(text)
    if m:
        try:
            y, mo, d, h, mi, sec = (int(m[i]) for i in range(1, 7))
            return dt.datetime(y, mo, d, h, mi, sec, _micros(m[7]))
        except ValueError:
            pass
    return text


def _timestamptz(v: Any) -> dt.datetime | str:
    # a snapshot reads TIMESTAMP text in a session with time_zone '+00:00'; the binlog holds UTC seconds
    out = _datetime(v)
    if isinstance(out, dt.datetime) and out.tzinfo is None:
        return out.replace(tzinfo=dt.UTC)
    return out


def _duration(v: Any) -> dt.timedelta:
    if isinstance(v, dt.timedelta):
        return v
    if isinstance(v, dt.time):
        return dt.timedelta(hours=v.hour, minutes=v.minute, seconds=v.second, microseconds=v.microsecond)
    m = _TIME_RE.match(_text(v))
    if not m:
        raise ValueError(f"not a TIME value: {v!r}")
    d = dt.timedelta(hours=int(m[2]), minutes=int(m[3]), seconds=int(m[4]), microseconds=_micros(m[5]))
    return -d if m[1] else d


def _bit(v: Any) -> int:
    if isinstance(v, bytes | bytearray):
        return int.from_bytes(v, "big")
    return int(v)


def _bit64(v: Any) -> Decimal:
    return Decimal(_bit(v))


def _uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, bytes | bytearray):
        if len(v) <= 16:  # the binlog: 16 bytes, trailing 0x00 bytes stripped by the server
            return uuid.UUID(bytes=bytes(v).ljust(16, b"\x00"))
        v = bytes(v).decode()
    return uuid.UUID(str(v))


def inet6_text(b: bytes) -> str:
    """MariaDB's text of an INET6 value (its ``Inet6::to_string``, after MySQL's ``INET6_NTOA``).

    Unlike RFC 5952 (and Python's ``ipaddress``) it compresses a single zero group and prints
    IPv4-compatible addresses (``::1.2.3.4``) in dotted form.
    """
    b = b.ljust(16, b"\x00")
    words = [int.from_bytes(b[i : i + 2], "big") for i in range(0, 16, 2)]
    gap_pos, gap_len, run_pos, run_len = -1, -1, -1, -1
    for i, w in enumerate(words):
        if w:
            if run_pos >= 0 and run_len > gap_len:
                gap_pos, gap_len = run_pos, run_len
            run_pos, run_len = -1, -1
        elif run_pos >= 0:
            run_len += 1
        else:
            run_pos, run_len = i, 1
    if run_pos >= 0 and run_len > gap_len:
        gap_pos, gap_len = run_pos, run_len
    out = []
    i = 0
    while i < 8:
        if i == gap_pos:
            out.append("::" if i == 0 else ":")
            i += gap_len
            continue
        if i == 6 and gap_pos == 0 and (gap_len == 6 or (gap_len == 5 and words[5] == 0xFFFF)):
            out.append(".".join(str(x) for x in b[12:16]))
            break
        out.append(f"{words[i]:x}" + (":" if i < 7 else ""))
        i += 1
    return "".join(out)


def _inet6(v: Any) -> str:
    return inet6_text(bytes(v)) if isinstance(v, bytes | bytearray) else str(v)


def _inet4(v: Any) -> str:
    return ".".join(str(x) for x in bytes(v).ljust(4, b"\x00")) if isinstance(v, bytes | bytearray) else str(v)


_SET_VALUES = re.compile(r"'((?:[^']|'')*)'")


#: converters that return a value of exactly this type as it is (``type(v) is T`` → ``convert(v) is v``
#: or equal): the binlog assembler's compiled row converter skips their call for such a value
#: (``tests/test_mysql_convert_fast.py`` checks each on generated values)
PASSTHROUGH: dict[Convert, type] = {
    _int: int,
    _float: float,
    _string: str,
    _json: str,
    _bytes: bytes,
    _decimal: Decimal,
    _date: dt.date,
    _datetime: dt.datetime,
    _duration: dt.timedelta,
    _uuid: uuid.UUID,
}


def _labels(column_type: str) -> tuple[str, ...]:
    inner = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(m.replace("''", "'").replace("\\\\", "\\") for m in _SET_VALUES.findall(inner))


def _enum_converter(labels: tuple[str, ...]) -> Convert:
    def convert(v: Any) -> str:
        if isinstance(v, int):  # an index (binlog without ENUM labels): 0 is the error value ''
            return labels[v - 1] if 0 < v <= len(labels) else ""
        return _string(v)

    return convert


def _set_converter(labels: tuple[str, ...]) -> Convert:
    order = {name: i for i, name in enumerate(labels)}

    def convert(v: Any) -> str:
        if isinstance(v, str):
            return v
        if isinstance(v, int):  # a bit mask (binlog without SET labels)
            return ",".join(s for i, s in enumerate(labels) if v >> i & 1)
        if isinstance(v, bytes):
            return v.decode()
        return ",".join(sorted((_text(x) for x in v), key=lambda x: order.get(x, len(order))))

    return convert


_GEOMETRY = frozenset(
    {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
     "geometrycollection"}
)  # fmt: skip


def mysql_column(row: dict[str, Any], json_columns: frozenset[str] = frozenset()) -> MysqlColumn:
    """The column for one ``information_schema.COLUMNS`` row (keys as in that table, upper case).

    Uses ``COLUMN_NAME``, ``DATA_TYPE``, ``COLUMN_TYPE``, ``IS_NULLABLE``, ``NUMERIC_PRECISION``,
    ``NUMERIC_SCALE`` and (for ``BINARY(n)``) ``CHARACTER_OCTET_LENGTH``.
    """
    name = str(row["COLUMN_NAME"])
    data_type = str(row["DATA_TYPE"]).lower()
    column_type = str(row["COLUMN_TYPE"]).lower()
    nullable = str(row["IS_NULLABLE"]).upper() == "YES"
    unsigned = "unsigned" in column_type
    ctype: ColumnType
    conv: Convert
    if data_type == "tinyint" and column_type.startswith("tinyint(1)") and not unsigned:
        ctype, conv = ColumnType("boolean", text_fallback=True), _boolean
    elif data_type in ("tinyint", "smallint", "mediumint") or (data_type == "int" and not unsigned):
        ctype, conv = ColumnType("int"), _int
    elif data_type in ("int", "year") or (data_type == "bigint" and not unsigned):
        ctype, conv = ColumnType("long"), _int
    elif data_type == "bigint":
        ctype, conv = ColumnType("decimal", precision=20, scale=0), _decimal
    elif data_type in ("decimal", "numeric"):
        p, s = int(row["NUMERIC_PRECISION"]), int(row["NUMERIC_SCALE"] or 0)
        ctype, conv = ColumnType("decimal", precision=p, scale=s), _decimal
    elif data_type == "float":
        ctype, conv = ColumnType("float"), _float
    elif data_type in ("double", "real"):
        ctype, conv = ColumnType("double"), _float
    elif data_type == "json" or name in json_columns:
        ctype, conv = ColumnType("json"), _json
    elif data_type in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext"):
        ctype, conv = ColumnType("string"), _string
    elif data_type == "binary":
        length = int(row.get("CHARACTER_OCTET_LENGTH") or 0)
        ctype, conv = ColumnType("bytes"), _padded(length)
    elif data_type in ("varbinary", "tinyblob", "blob", "mediumblob", "longblob") or data_type in _GEOMETRY:
        ctype, conv = ColumnType("bytes"), _bytes
    elif data_type == "date":
        ctype, conv = ColumnType("date", text_fallback=True), _date
    elif data_type == "time":
        ctype, conv = ColumnType("duration"), _duration
    elif data_type == "datetime":
        ctype, conv = ColumnType("timestamp", text_fallback=True), _datetime
    elif data_type == "timestamp":
        ctype, conv = ColumnType("timestamptz", text_fallback=True), _timestamptz
    elif data_type == "enum":
        labels = _labels(str(row["COLUMN_TYPE"]))
        ctype, conv = ColumnType("enum", symbols=labels), _enum_converter(labels)
    elif data_type == "set":
        ctype, conv = ColumnType("string"), _set_converter(_labels(str(row["COLUMN_TYPE"])))
    elif data_type == "bit":
        bits = int(row.get("NUMERIC_PRECISION") or 64)
        if bits > 63:
            ctype, conv = ColumnType("decimal", precision=20, scale=0), _bit64
        else:
            ctype, conv = ColumnType("long"), _bit
    elif data_type == "uuid":
        ctype, conv = ColumnType("uuid"), _uuid
    elif data_type == "inet6":
        ctype, conv = ColumnType("string"), _inet6
    elif data_type == "inet4":
        ctype, conv = ColumnType("string"), _inet4
    else:
        ctype, conv = ColumnType("string"), _string
    return MysqlColumn(Column(name, ctype, nullable), conv, row)


# -- the table map's own column types, for events written before an ALTER TABLE ----------------------

# information_schema DATA_TYPE → the binlog column types a value of it is logged as
_BINLOG_TYPES: dict[str, frozenset[int]] = {
    "tinyint": frozenset({1}),
    "smallint": frozenset({2}),
    "mediumint": frozenset({9}),
    "int": frozenset({3}),
    "bigint": frozenset({8}),
    "decimal": frozenset({246}),
    "numeric": frozenset({246}),
    "float": frozenset({4}),
    "double": frozenset({5}),
    "real": frozenset({5}),
    "char": frozenset({254}),
    "binary": frozenset({254}),
    "varchar": frozenset({15, 253}),
    "varbinary": frozenset({15, 253}),
    "tinytext": frozenset({252}),
    "text": frozenset({252}),
    "mediumtext": frozenset({252}),
    "longtext": frozenset({252}),
    "tinyblob": frozenset({252}),
    "blob": frozenset({252}),
    "mediumblob": frozenset({252}),
    "longblob": frozenset({252}),
    "json": frozenset({245, 252}),
    "date": frozenset({10, 14}),
    "time": frozenset({11, 19}),
    "datetime": frozenset({12, 18}),
    "timestamp": frozenset({7, 17}),
    "year": frozenset({13}),
    "enum": frozenset({247, 254}),
    "set": frozenset({248, 254}),
    "bit": frozenset({16}),
    "uuid": frozenset({254}),
    "inet6": frozenset({254}),
    "geometry": frozenset({255}),
}
_TEXT_TYPES = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"})
_BINARY_TYPES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "uuid", "inet6"})


def matches_binlog(row: Mapping[str, Any], col: BinlogColumn) -> bool:
    """Whether a value logged as table-map column ``col`` (a :class:`~._mysqlrows.BinlogColumn`) is of
    the column ``information_schema`` describes now (``row``): same binlog type, signedness, decimal
    precision and scale, text vs binary. False means the table changed since the event was written."""
    data_type = str(row["DATA_TYPE"]).lower()
    types = _BINLOG_TYPES.get("geometry" if data_type in _GEOMETRY else data_type)
    if types is None:
        return True  # a type this table does not know: trust information_schema
    if col.type not in types:
        return False
    if data_type in ("tinyint", "smallint", "mediumint", "int", "bigint"):
        return bool(col.unsigned) == ("unsigned" in str(row["COLUMN_TYPE"]).lower())
    if data_type in ("decimal", "numeric"):
        return col.meta == (int(row["NUMERIC_PRECISION"]), int(row["NUMERIC_SCALE"] or 0))
    if data_type in _TEXT_TYPES and col.type not in (247, 248):
        return col.encoding is not None
    if data_type in _BINARY_TYPES:
        return col.encoding is None
    if data_type == "bit":
        return (col.bits > 63) == (int(row.get("NUMERIC_PRECISION") or 64) > 63)
    return True


def binlog_only_column(col: BinlogColumn) -> MysqlColumn:
    """The column as the table map alone describes it (a :class:`~._mysqlrows.BinlogColumn`): for events
    written before an ``ALTER TABLE`` changed the column's type, so their values keep their own kind."""
    t = col.type
    ctype: ColumnType
    conv: Convert
    if t in (1, 2, 9) or (t == 3 and not col.unsigned):
        ctype, conv = ColumnType("int"), _int
    elif t in (3, 13) or (t == 8 and not col.unsigned):
        ctype, conv = ColumnType("long"), _int
    elif t == 8:
        ctype, conv = ColumnType("decimal", precision=20, scale=0), _decimal
    elif t == 246:
        ctype, conv = ColumnType("decimal", precision=col.meta[0], scale=col.meta[1]), _decimal
    elif t == 4:
        ctype, conv = ColumnType("float"), _float
    elif t == 5:
        ctype, conv = ColumnType("double"), _float
    elif t == 245:
        ctype, conv = ColumnType("json"), _json
    elif t in (10, 14):
        ctype, conv = ColumnType("date", text_fallback=True), _date
    elif t in (11, 19):
        ctype, conv = ColumnType("duration"), _duration
    elif t in (12, 18):
        ctype, conv = ColumnType("timestamp", text_fallback=True), _datetime
    elif t in (7, 17):
        ctype, conv = ColumnType("timestamptz", text_fallback=True), _timestamptz
    elif t == 247:
        labels = tuple(col.enum_values[1:]) if col.enum_values else ()
        ctype, conv = ColumnType("enum", symbols=labels), _enum_converter(labels)
    elif t == 248:
        ctype, conv = ColumnType("string"), _set_converter(tuple(col.set_values or ()))
    elif t == 16:
        ctype, conv = (
            (ColumnType("decimal", precision=20, scale=0), _bit64) if col.bits > 63 else (ColumnType("long"), _bit)
        )
    elif t in (15, 253, 254, 252, 249, 250, 251) and col.encoding is not None:
        ctype, conv = ColumnType("string"), _string
    elif t in (15, 253, 254, 252, 249, 250, 251, 255):
        ctype, conv = ColumnType("bytes"), _bytes
    else:
        ctype, conv = ColumnType("string"), _string
    return MysqlColumn(Column(col.name, ctype, True), conv)
