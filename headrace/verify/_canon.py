"""Canonical text of column values, the same on every side of a comparison (sans-io).

A row's hash is the MD5 of its *canonical text*: for each compared column, in name order, ``N`` for
SQL NULL or the MD5 hex of the value's canonical text for the column's *kind* (the relay's kinds,
docs/type-mapping.md). A key's hash is the
same over its key columns. The databases compute the texts in SQL (:mod:`._sqlcanon`); SQLite,
Parquet and the bootstrap store compute them here, in Python. Both must agree byte for byte:

==============  ===============================================================================
kind            canonical text
==============  ===============================================================================
boolean         ``1`` / ``0``
int, long       decimal digits
decimal         positional text without trailing fraction zeros (``1.50`` → ``1.5``, ``2.0`` → ``2``,
                ``-0`` → ``0``); ``NaN``, ``Infinity``
float, double   rounded to 15 significant digits, then to 9 decimal places, as a decimal above;
                ``NaN``, ``Infinity``, ``-Infinity``
bytes           lower-case hex
date            ``YYYY-MM-DD``
time            ``HH:MM:SS.ffffff``
timestamp       ``YYYY-MM-DD HH:MM:SS.ffffff``; ``timestamptz`` the same in UTC (a replica that
                keeps a naive UTC time, as MariaDB does, compares equal)
uuid            32 lower-case hex digits (SQLAlchemy stores a UUID as ``CHAR(32)`` outside PostgreSQL)
anything else   the value's text (strings, enums, intervals as ISO 8601, JSON as its text)
==============  ===============================================================================
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import math
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["canon", "decimal_text", "md5_hex", "piece", "row_text"]

_Q9 = decimal.Decimal("1e-9")
_CTX = decimal.Context(prec=200)


def decimal_text(d: decimal.Decimal) -> str:
    """Positional text of ``d`` without trailing fraction zeros (``NaN``/``Infinity`` as such)."""
    if d.is_nan():
        return "NaN"
    if d.is_infinite():
        return "Infinity" if d > 0 else "-Infinity"
    t = format(d, "f")
    if "." in t:
        t = t.rstrip("0").rstrip(".")
    return "0" if t in ("-0", "") else t


def _float_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return decimal_text(decimal.Decimal(format(x, ".15g")).quantize(_Q9, context=_CTX))


def _parse_datetime(v: Any) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    return dt.datetime.fromisoformat(str(v).strip())


def _utc_naive(d: dt.datetime) -> dt.datetime:
    return d.astimezone(dt.UTC).replace(tzinfo=None) if d.tzinfo is not None else d


def canon(kind: str, v: Any) -> str | None:
    """The canonical text of value ``v`` of a column of ``kind`` (None for SQL NULL)."""
    if v is None:
        return None
    if kind == "boolean":
        if isinstance(v, str):
            return "1" if v.strip().lower() in ("1", "t", "true") else "0"
        return "1" if v else "0"
    if kind in ("int", "long"):
        return str(int(v))
    if kind == "decimal":
        if isinstance(v, float):
            return decimal_text(decimal.Decimal(repr(v)))
        return decimal_text(decimal.Decimal(str(v).strip()))
    if kind in ("float", "double"):
        return _float_text(float(v))
    if kind == "bytes":
        if isinstance(v, str):
            return v.encode().hex()
        return bytes(v).hex()
    if kind == "date":
        d = v if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else _parse_datetime(v).date()
        return d.isoformat()
    if kind == "time":
        if isinstance(v, dt.timedelta):  # MySQL TIME as a driver returns it
            total = int(v / dt.timedelta(microseconds=1))
            secs, us = divmod(total, 1_000_000)
            h, rest = divmod(secs, 3600)
            return f"{h:02d}:{rest // 60:02d}:{rest % 60:02d}.{us:06d}"
        t = v if isinstance(v, dt.time) else dt.time.fromisoformat(str(v).strip())
        return t.replace(tzinfo=None).strftime("%H:%M:%S.%f")
    if kind in ("timestamp", "timestamptz"):
        d = _utc_naive(_parse_datetime(v))
        return f"{d.year:04d}-{d.month:02d}-{d.day:02d} {d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}"
    if kind == "uuid":
        return (v.hex if isinstance(v, uuid.UUID) else str(v).replace("-", "")).lower()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return str(v)


def piece(text: str | None) -> str:
    """One column's part of a row text: ``N`` for NULL, else the MD5 hex of the text (fixed width, so
    the parts cannot run into each other, and each text is computed once by the databases)."""
    return "N" if text is None else md5_hex(text)


def row_text(kinds: Sequence[str], values: Sequence[Any]) -> str:
    """The canonical text of a row (or key): the pieces of its values, in the given column order."""
    return "".join(piece(canon(k, v)) for k, v in zip(kinds, values, strict=True))


def md5_hex(text: str) -> str:
    """Lower-case hex MD5 of ``text`` as UTF-8 (what PostgreSQL's and MariaDB's ``md5`` return)."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()
