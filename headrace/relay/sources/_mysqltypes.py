"""MySQL/MariaDB column types: ``information_schema.COLUMNS`` → relay column kind, and value conversion.

Sans-io: :func:`mysql_column` takes one ``information_schema.COLUMNS`` row and returns the relay
:class:`~headrace.relay._schema.Column` and a function that turns the value ``mysql-replication``
decoded from the row binlog into the Python value the relay encodes.

=================================  ==================  ===============================================
MySQL / MariaDB                    relay column kind   Python value
=================================  ==================  ===============================================
TINYINT(1), BOOLEAN, BOOL          ``boolean``         ``bool``
TINYINT, SMALLINT, MEDIUMINT, INT  ``int``             ``int``
INT UNSIGNED, BIGINT, YEAR         ``long``            ``int``
BIGINT UNSIGNED                    ``decimal`` (20, 0) ``decimal.Decimal`` (Avro long cannot hold 2^64−1)
DECIMAL(p, s), NUMERIC             ``decimal`` (p, s)  ``decimal.Decimal``
FLOAT / DOUBLE                     ``float``/``double`` ``float``
CHAR, VARCHAR, *TEXT               ``string``          ``str``
BINARY, VARBINARY, *BLOB           ``bytes``           ``bytes``
DATE                               ``date``            ``datetime.date``
TIME                               ``time``            ``datetime.time`` (values outside 00:00–24:00 → error)
DATETIME                           ``timestamp``       naive ``datetime.datetime``
TIMESTAMP                          ``timestamptz``     aware ``datetime.datetime`` (UTC)
JSON (MariaDB: LONGTEXT + check)   ``json``            the parsed JSON value
ENUM('a', …)                       ``enum``            ``str`` (the label)
SET('a', …)                        ``string``          ``str``: members in definition order, comma-joined
BIT(n)                             ``long``            ``int``
UUID (MariaDB 10.7+)               ``uuid``            ``uuid.UUID``
anything else                      ``string``          ``str``
=================================  ==================  ===============================================

MariaDB stores JSON as LONGTEXT with a ``json_valid`` check constraint; ``information_schema``
then still says ``longtext``, so a caller passes ``json_columns`` (from ``CHECK_CONSTRAINTS``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .._schema import Column, ColumnType

__all__ = ["MysqlColumn", "mysql_column", "pack_scn", "unpack_scn"]

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
    """A column as the relay sees it, and the converter for its binlog values."""

    column: Column
    convert: Convert


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)


def _bytes(v: Any) -> bytes:
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)


def _json(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | str):
        return json.loads(v)
    return _json_keys(v)


def _json_keys(v: Any) -> Any:  # MySQL 8's binary JSON decodes with bytes keys and strings
    if isinstance(v, dict):
        return {_text(k): _json_keys(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_keys(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def _time(v: Any) -> dt.time:
    if isinstance(v, dt.time):
        return v
    if isinstance(v, dt.timedelta):
        if not dt.timedelta(0) <= v < dt.timedelta(days=1):
            raise ValueError(f"TIME value {v} is outside 00:00:00–23:59:59.999999 and has no time-of-day")
        return (dt.datetime.min + v).time()
    raise ValueError(f"not a TIME value: {v!r}")


def _timestamptz(v: Any) -> dt.datetime:
    # mysql-replication decodes TIMESTAMP with utcfromtimestamp: a naive datetime in UTC
    return v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is None else v


def _bit(v: Any) -> int:
    return int(v, 2) if isinstance(v, str) else int(v)


def _uuid(v: Any) -> uuid.UUID:
    if isinstance(v, uuid.UUID):
        return v
    if isinstance(v, bytes | bytearray) and len(v) == 16:  # MariaDB's UUID type: 16 bytes in the binlog
        return uuid.UUID(bytes=bytes(v))
    return uuid.UUID(_text(v))


_SET_VALUES = re.compile(r"'((?:[^']|'')*)'")


def _labels(column_type: str) -> tuple[str, ...]:
    inner = column_type[column_type.index("(") + 1 : column_type.rindex(")")]
    return tuple(m.replace("''", "'") for m in _SET_VALUES.findall(inner))


def _set_converter(labels: tuple[str, ...]) -> Convert:
    order = {name: i for i, name in enumerate(labels)}

    def convert(v: Any) -> str:
        if isinstance(v, str):
            return v
        return ",".join(sorted((_text(x) for x in v), key=lambda x: order.get(x, len(order))))

    return convert


def mysql_column(row: dict[str, Any], json_columns: frozenset[str] = frozenset()) -> MysqlColumn:
    """The column for one ``information_schema.COLUMNS`` row (keys as in that table, upper case)."""
    name = str(row["COLUMN_NAME"])
    data_type = str(row["DATA_TYPE"]).lower()
    column_type = str(row["COLUMN_TYPE"]).lower()
    nullable = str(row["IS_NULLABLE"]).upper() == "YES"
    unsigned = "unsigned" in column_type
    ctype: ColumnType
    conv: Convert
    if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
        ctype, conv = ColumnType("boolean"), bool
    elif data_type in ("tinyint", "smallint", "mediumint") or (data_type == "int" and not unsigned):
        ctype, conv = ColumnType("int"), int
    elif data_type in ("int", "year") or (data_type == "bigint" and not unsigned):
        ctype, conv = ColumnType("long"), int
    elif data_type == "bigint":
        ctype, conv = ColumnType("decimal", precision=20, scale=0), Decimal
    elif data_type in ("decimal", "numeric"):
        p, s = int(row["NUMERIC_PRECISION"]), int(row["NUMERIC_SCALE"] or 0)
        ctype, conv = ColumnType("decimal", precision=p, scale=s), Decimal
    elif data_type == "float":
        ctype, conv = ColumnType("float"), float
    elif data_type in ("double", "real"):
        ctype, conv = ColumnType("double"), float
    elif data_type == "json" or name in json_columns:
        ctype, conv = ColumnType("json"), _json
    elif data_type in ("char", "varchar", "tinytext", "text", "mediumtext", "longtext"):
        ctype, conv = ColumnType("string"), _text
    elif data_type in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
        ctype, conv = ColumnType("bytes"), _bytes
    elif data_type == "date":
        ctype, conv = ColumnType("date"), lambda v: v
    elif data_type == "time":
        ctype, conv = ColumnType("time"), _time
    elif data_type == "datetime":
        ctype, conv = ColumnType("timestamp"), lambda v: v
    elif data_type == "timestamp":
        ctype, conv = ColumnType("timestamptz"), _timestamptz
    elif data_type == "enum":
        ctype, conv = ColumnType("enum", symbols=_labels(str(row["COLUMN_TYPE"]))), _text
    elif data_type == "set":
        ctype, conv = ColumnType("string"), _set_converter(_labels(str(row["COLUMN_TYPE"])))
    elif data_type == "bit":
        ctype, conv = ColumnType("long"), _bit
    elif data_type == "uuid":
        ctype, conv = ColumnType("uuid"), _uuid
    else:
        ctype, conv = ColumnType("string"), _text
    return MysqlColumn(Column(name, ctype, nullable), conv)
