"""Row-binlog row images → Python values, exactly (sans-io).

``mysql-replication`` parses the binlog's events and table maps well, but its value decoding loses
data a relay must keep: trailing 0x00 bytes of ``BINARY(n)``/``UUID``/``INET6`` (the server strips
them when it packs a fixed-length binary field), zero and partial dates (``0000-00-00``,
``2024-00-10``: turned into ``None``), the empty SET (``None``), ``YEAR`` 0000 (1900), a zero
``TIMESTAMP`` (1970-01-01). So the relay reads the row images of a rows event itself:
:func:`decode_rows` takes the bytes after the event's column bitmaps and the table map's columns
(type, metadata, name, charset, ENUM/SET labels — what ``binlog_row_metadata=FULL`` provides) and
returns each row as ``{column name: value}``.

Values (the *wire values* the converters of :mod:`._mysqltypes` take):

=========================================  ==========================================================
binlog column type                         value
=========================================  ==========================================================
TINY, SHORT, INT24, LONG, LONGLONG         ``int`` (signedness from the table map)
FLOAT, DOUBLE                              ``float`` (FLOAT: the 32-bit value, widened exactly)
NEWDECIMAL                                 ``Decimal`` built from its digits (no context rounding)
YEAR                                       ``int`` (0 for 0000)
STRING, VARCHAR, BLOB with a character set ``str`` (decoded with the column's character set)
STRING, VARCHAR, BLOB, binary              ``bytes``; STRING (``BINARY(n)``, ``UUID``, ``INET6``)
                                           padded with 0x00 to the column's length
ENUM                                       ``str`` label ('' for index 0); ``int`` without labels
SET                                        ``str``: members in definition order, comma-joined ('' for
                                           none); ``int`` bit mask without labels
BIT                                        ``int``
DATE                                       ``datetime.date``, or the server's text (``0000-00-00``)
                                           when Python's date cannot hold it
DATETIME2 (DATETIME)                       naive ``datetime.datetime``, or the text
                                           (``2024-00-10 00:00:00.00`` with the column's digits)
TIMESTAMP2 (TIMESTAMP)                     aware ``datetime.datetime`` in UTC; the zero timestamp
                                           is the text ``0000-00-00 00:00:00[.000…]``
TIME2 (TIME)                               ``datetime.timedelta`` (−838:59:59 … 838:59:59)
JSON (MySQL 8 binary JSON)                 ``str``: the value serialised as JSON text, numbers exact
GEOMETRY                                   ``bytes`` (the server's internal form: SRID + WKB)
=========================================  ==========================================================
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

__all__ = ["BinlogColumn", "RowDecodeError", "binlog_column", "date_text", "datetime_text", "decode_rows"]

# binlog column types (include/mysql_com.h enum_field_types)
T_DECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL, T_TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
T_LONGLONG, T_INT24, T_DATE, T_TIME, T_DATETIME, T_YEAR, T_NEWDATE, T_VARCHAR = 8, 9, 10, 11, 12, 13, 14, 15
T_BIT, T_TIMESTAMP2, T_DATETIME2, T_TIME2 = 16, 17, 18, 19
T_JSON, T_NEWDECIMAL, T_ENUM, T_SET = 245, 246, 247, 248
T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB, T_VAR_STRING, T_STRING, T_GEOMETRY = 249, 250, 251, 252, 253, 254, 255

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_UTC = dt.UTC


class RowDecodeError(ValueError):
    """A row image could not be decoded (names the column and its binlog type)."""


def _mysql_latin1(exc: UnicodeError) -> tuple[str, int]:
    # MySQL's latin1 is cp1252 with 0x81, 0x8D, 0x8F, 0x90, 0x9D mapped to the C1 controls
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("headrace-mysql-latin1", _mysql_latin1)


class BinlogColumn:
    """One column of a table map, reduced to what decoding needs."""

    __slots__ = ("bits", "encoding", "enum_values", "fsp", "length", "meta", "name", "set_values", "type", "unsigned")

    def __init__(
        self,
        name: str,
        type: int,
        *,
        unsigned: bool = False,
        encoding: str | None = None,
        length: int = 0,
        meta: tuple[int, int] = (0, 0),
        fsp: int = 0,
        bits: int = 0,
        enum_values: Sequence[str] | None = None,
        set_values: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.unsigned = unsigned
        self.encoding = encoding  # None: binary (bytes); else a Python codec name
        self.length = length  # max byte length (STRING/VARCHAR) or length-prefix size (BLOB/JSON/GEOMETRY)
        self.meta = meta  # NEWDECIMAL (precision, scale); ENUM/SET storage size in meta[0]
        self.fsp = fsp
        self.bits = bits
        self.enum_values = tuple(enum_values) if enum_values is not None else None
        self.set_values = tuple(set_values) if set_values is not None else None

    def signature(self) -> tuple[Any, ...]:
        """Everything that decides how a value decodes (equal signatures decode alike)."""
        return tuple(getattr(self, k) for k in self.__slots__)


# MySQL character sets whose Python codec has another name (the UTF-16/32 ones are big-endian, no BOM)
_ENCODINGS = {
    "utf16": "utf-16-be",
    "ucs2": "utf-16-be",
    "utf32": "utf-32-be",
    "utf16le": "utf-16-le",
    "macce": "mac_latin2",
    "eucjpms": "euc_jp",
}


def _python_encoding(charset: str | None) -> str | None:
    """The Python codec for a column's character set name as mysql-replication gives it (None: binary).

    A character set Python has no codec for (``dec8``, ``hp8``, ``swe7``, ``keybcs2``, ``armscii8``,
    ``geostd8``) is read as ``latin-1``: not the right characters, but every byte kept (a consumer can
    recover them with ``text.encode('latin-1')``), never replaced.
    """
    if charset is None or charset == "binary":
        return None
    enc = _ENCODINGS.get(charset, charset)
    try:
        codecs.lookup(enc)
    except LookupError:
        return "latin-1"
    return enc


def binlog_column(col: Any, index: int) -> BinlogColumn:
    """A :class:`BinlogColumn` from a ``mysql-replication`` table-map column."""
    t = int(col.type)
    name = col.name if col.name else f"UNKNOWN_COL{index}"
    kw: dict[str, Any] = {"unsigned": bool(getattr(col, "unsigned", False))}
    if t in (T_STRING, T_VAR_STRING, T_VARCHAR, T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB):
        kw["encoding"] = _python_encoding(getattr(col, "character_set_name", None))
    if t in (T_STRING, T_VAR_STRING, T_VARCHAR):
        kw["length"] = int(col.max_length)
    elif t in (T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_JSON, T_GEOMETRY):
        kw["length"] = int(col.length_size)
    elif t == T_NEWDECIMAL:
        kw["meta"] = (int(col.precision), int(col.decimals))
    elif t in (T_ENUM, T_SET):
        kw["meta"] = (int(col.size), 0)
        kw["enum_values"] = col.enum_values
        kw["set_values"] = col.set_values
    elif t in (T_TIMESTAMP2, T_DATETIME2, T_TIME2):
        kw["fsp"] = int(col.fsp)
    elif t == T_BIT:
        kw["bits"] = int(col.bits)
    return BinlogColumn(name, t, **kw)


def date_text(year: int, month: int, day: int) -> str:
    """The server's text of a DATE."""
    return f"{year:04d}-{month:02d}-{day:02d}"


def datetime_text(year: int, month: int, day: int, hour: int, minute: int, second: int, micro: int, fsp: int) -> str:
    """The server's text of a DATETIME/TIMESTAMP with ``fsp`` fractional digits."""
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    return text + "." + f"{micro:06d}"[:fsp] if fsp else text


def _frac(data: bytes | memoryview, pos: int, fsp: int) -> tuple[int, int]:
    """(microseconds, new position) of a temporal value's unsigned fractional part."""
    if fsp <= 0:
        return 0, pos
    n = (fsp + 1) // 2
    v = int.from_bytes(data[pos : pos + n], "big")
    return v * (10 ** (6 - 2 * n)), pos + n


def _decimal(data: bytes | memoryview, pos: int, precision: int, scale: int) -> tuple[Decimal, int]:
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    size = intg0 * 4 + _DIG2BYTES[intg0x] + frac0 * 4 + _DIG2BYTES[frac0x]
    b = bytearray(data[pos : pos + size])
    negative = not b[0] & 0x80
    b[0] ^= 0x80
    if negative:
        b = bytearray(x ^ 0xFF for x in b)
    i = 0
    ip: list[str] = []
    n = _DIG2BYTES[intg0x]
    if n:
        ip.append(str(int.from_bytes(b[:n], "big")))
        i = n
    for _ in range(intg0):
        ip.append(f"{int.from_bytes(b[i : i + 4], 'big'):09d}")
        i += 4
    fp: list[str] = []
    for _ in range(frac0):
        fp.append(f"{int.from_bytes(b[i : i + 4], 'big'):09d}")
        i += 4
    n = _DIG2BYTES[frac0x]
    if n:
        fp.append(f"{int.from_bytes(b[i : i + n], 'big'):0{frac0x}d}")
    text = ("-" if negative else "") + ("".join(ip).lstrip("0") or "0")
    if scale:
        text += "." + "".join(fp)
    return Decimal(text), pos + size


def _time2(data: bytes | memoryview, pos: int, fsp: int) -> tuple[dt.timedelta, int]:
    # my_time_packed_from_binary (sql-common/my_time.c): intpart and fraction as one signed number
    if fsp in (0,):
        packed = (int.from_bytes(data[pos : pos + 3], "big") - 0x800000) << 24
        pos += 3
    elif fsp in (1, 2):
        intpart = int.from_bytes(data[pos : pos + 3], "big") - 0x800000
        frac = data[pos + 3]
        if intpart < 0 and frac:
            intpart += 1
            frac -= 0x100
        packed = (intpart << 24) + frac * 10000
        pos += 4
    elif fsp in (3, 4):
        intpart = int.from_bytes(data[pos : pos + 3], "big") - 0x800000
        frac = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if intpart < 0 and frac:
            intpart += 1
            frac -= 0x10000
        packed = (intpart << 24) + frac * 100
        pos += 5
    else:
        packed = int.from_bytes(data[pos : pos + 6], "big") - 0x800000000000
        pos += 6
    sign = -1 if packed < 0 else 1
    packed = abs(packed)
    hms, micro = packed >> 24, packed & 0xFFFFFF
    hour, minute, second = (hms >> 12) & 0x3FF, (hms >> 6) & 0x3F, hms & 0x3F
    return sign * dt.timedelta(hours=hour, minutes=minute, seconds=second, microseconds=micro), pos


def _datetime2(data: bytes | memoryview, pos: int, fsp: int) -> tuple[dt.datetime | str, int]:
    v = int.from_bytes(data[pos : pos + 5], "big") - 0x8000000000
    micro, pos = _frac(data, pos + 5, fsp)
    ymd, hms = v >> 17, v & 0x1FFFF
    ym, day = ymd >> 5, ymd & 0x1F
    year, month = divmod(ym, 13)
    hour, minute, second = hms >> 12, (hms >> 6) & 0x3F, hms & 0x3F
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro), pos
    except ValueError:
        return datetime_text(year, month, day, hour, minute, second, micro, fsp), pos


def _date(v: int) -> dt.date | str:
    year, month, day = v >> 9, (v >> 5) & 0xF, v & 0x1F
    try:
        return dt.date(year, month, day)
    except ValueError:
        return date_text(year, month, day)


def _old_datetime(v: int) -> dt.datetime | str:
    d, t = divmod(v, 1000000)
    year, md = divmod(d, 10000)
    month, day = divmod(md, 100)
    hour, ms = divmod(t, 10000)
    minute, second = divmod(ms, 100)
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return datetime_text(year, month, day, hour, minute, second, 0, 0)


def _timestamp(seconds: int, micro: int, fsp: int) -> dt.datetime | str:
    if seconds == 0 and micro == 0:  # the zero timestamp '0000-00-00 00:00:00'
        return datetime_text(0, 0, 0, 0, 0, 0, 0, fsp)
    return dt.datetime.fromtimestamp(seconds, _UTC).replace(microsecond=micro)


def _text(raw: bytes | memoryview, encoding: str) -> str:
    b = bytes(raw)
    if encoding == "cp1252":
        return b.decode("cp1252", "headrace-mysql-latin1")
    return b.decode(encoding)


def _json_text(v: Any) -> str:
    """MySQL 8 binary JSON, as decoded by mysql-replication, serialised as JSON text with exact numbers.

    The separators are MySQL's own (``{"a": 1, "b": [1, 2]}``); doubles print in shortest round-trip
    form, decimals with all their digits, keys in the stored order.
    """
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_json_text(_key(k))}: {_json_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_json_text(x) for x in v) + "]"
    if isinstance(v, bytes | bytearray):
        v = bytes(v).decode("utf-8", "replace")
    elif not isinstance(v, str):  # opaque values: dates, times
        v = str(v)
    return json.dumps(v, ensure_ascii=False)


def _key(k: Any) -> str:
    return bytes(k).decode("utf-8", "replace") if isinstance(k, bytes | bytearray) else str(k)


def _value(c: BinlogColumn, data: bytes | memoryview, pos: int) -> tuple[Any, int]:
    t = c.type
    if t == T_LONG:
        return int.from_bytes(data[pos : pos + 4], "little", signed=not c.unsigned), pos + 4
    if t == T_LONGLONG:
        return int.from_bytes(data[pos : pos + 8], "little", signed=not c.unsigned), pos + 8
    if t in (T_VARCHAR, T_VAR_STRING, T_STRING):
        if c.length > 255:
            n, pos = int.from_bytes(data[pos : pos + 2], "little"), pos + 2
        else:
            n, pos = data[pos], pos + 1
        raw = data[pos : pos + n]
        pos += n
        if c.encoding is not None:
            return _text(raw, c.encoding), pos
        b = bytes(raw)
        if t == T_STRING and len(b) < c.length:  # BINARY(n), UUID, INET6: the server stripped trailing 0x00
            b += b"\x00" * (c.length - len(b))
        return b, pos
    if t in (T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_GEOMETRY, T_JSON):
        n = int.from_bytes(data[pos : pos + c.length], "little")
        pos += c.length
        raw = data[pos : pos + n]
        pos += n
        if t == T_JSON:
            from pymysqlreplication.json_binary import parse_json

            if n == 0:
                return "null", pos
            return _json_text(parse_json(raw[0], bytes(raw[1:]))), pos
        if c.encoding is not None and t != T_GEOMETRY:
            return _text(raw, c.encoding), pos
        return bytes(raw), pos
    if t == T_TINY:
        return int.from_bytes(data[pos : pos + 1], "little", signed=not c.unsigned), pos + 1
    if t == T_SHORT:
        return int.from_bytes(data[pos : pos + 2], "little", signed=not c.unsigned), pos + 2
    if t == T_INT24:
        return int.from_bytes(data[pos : pos + 3], "little", signed=not c.unsigned), pos + 3
    if t == T_FLOAT:
        import struct

        return struct.unpack_from("<f", data, pos)[0], pos + 4
    if t == T_DOUBLE:
        import struct

        return struct.unpack_from("<d", data, pos)[0], pos + 8
    if t == T_NEWDECIMAL:
        return _decimal(data, pos, c.meta[0], c.meta[1])
    if t == T_DATETIME2:
        return _datetime2(data, pos, c.fsp)
    if t == T_TIMESTAMP2:
        seconds = int.from_bytes(data[pos : pos + 4], "big")
        micro, pos = _frac(data, pos + 4, c.fsp)
        return _timestamp(seconds, micro, c.fsp), pos
    if t == T_TIME2:
        return _time2(data, pos, c.fsp)
    if t in (T_DATE, T_NEWDATE):
        return _date(int.from_bytes(data[pos : pos + 3], "little")), pos + 3
    if t == T_YEAR:
        y = data[pos]
        return (y + 1900 if y else 0), pos + 1
    if t == T_ENUM:
        size = c.meta[0]
        idx = int.from_bytes(data[pos : pos + size], "little")
        if c.enum_values is None:
            return idx, pos + size
        return (c.enum_values[idx] if idx < len(c.enum_values) else ""), pos + size
    if t == T_SET:
        size = c.meta[0]
        mask = int.from_bytes(data[pos : pos + size], "little")
        if c.set_values is None:
            return mask, pos + size
        return ",".join(s for i, s in enumerate(c.set_values) if mask >> i & 1), pos + size
    if t == T_BIT:
        n = (c.bits + 7) // 8
        return int.from_bytes(data[pos : pos + n], "big"), pos + n
    if t == T_DATETIME:
        return _old_datetime(int.from_bytes(data[pos : pos + 8], "little")), pos + 8
    if t == T_TIMESTAMP:
        return _timestamp(int.from_bytes(data[pos : pos + 4], "little"), 0, 0), pos + 4
    if t == T_TIME:
        v = int.from_bytes(data[pos : pos + 3], "little", signed=True)
        sign, v = (-1 if v < 0 else 1), abs(v)
        h, ms = divmod(v, 10000)
        m, s = divmod(ms, 100)
        return sign * dt.timedelta(hours=h, minutes=m, seconds=s), pos + 3
    raise RowDecodeError(f"column {c.name!r} has binlog type {t}, which the relay cannot decode")


def _image(
    columns: Sequence[BinlogColumn], present: bytes, data: bytes | memoryview, pos: int
) -> tuple[dict[str, Any], int]:
    n_present = sum(1 for i in range(len(columns)) if present[i >> 3] >> (i & 7) & 1)
    nulls_len = (n_present + 7) // 8
    nulls = data[pos : pos + nulls_len]
    pos += nulls_len
    row: dict[str, Any] = {}
    k = 0
    for i, c in enumerate(columns):
        if not present[i >> 3] >> (i & 7) & 1:
            continue  # binlog_row_image=MINIMAL/NOBLOB: the relay refuses those settings
        if nulls[k >> 3] >> (k & 7) & 1:
            row[c.name] = None
        else:
            try:
                row[c.name], pos = _value(c, data, pos)
            except RowDecodeError:
                raise
            except Exception as exc:
                raise RowDecodeError(f"column {c.name!r} (binlog type {c.type}): {exc}") from exc
        k += 1
    return row, pos


def decode_rows(
    columns: Sequence[BinlogColumn], data: bytes | memoryview, present: bytes, present_after: bytes | None = None
) -> list[dict[str, Any]]:
    """Every row of one rows event: ``{"values": row}``, or for an update (``present_after`` given)
    ``{"before_values": row, "after_values": row}``, the shape ``mysql-replication`` uses."""
    out: list[dict[str, Any]] = []
    pos = 0
    end = len(data)
    while pos < end:
        if present_after is None:
            row, pos = _image(columns, present, data, pos)
            out.append({"values": row})
        else:
            before, pos = _image(columns, present, data, pos)
            after, pos = _image(columns, present_after, data, pos)
            out.append({"before_values": before, "after_values": after})
    if pos > end:
        raise RowDecodeError(f"the last row image runs {pos - end} bytes past the end of the rows event")
    return out
