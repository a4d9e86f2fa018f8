"""Rows → PostgreSQL ``COPY … FROM STDIN`` text format (sans-io), for the ``sql`` target's bulk upserts.

:func:`copy_formatter` gives, for the SQLAlchemy types of a replica table's columns, a function that
turns row dicts into the bytes of a text-format ``COPY`` (tab-separated, ``\\N`` for NULL, backslash
escapes), or None when a column's type is not one it formats exactly (then the target uses its
``INSERT … ON CONFLICT`` statements instead). Values are formatted the way PostgreSQL's input functions
read them back unchanged: ``repr`` of floats (``inf``, ``nan`` included), ``str`` of decimals and
integers, ISO 8601 for dates and times (aware timestamps keep their offset), ``\\x`` hex for bytes,
JSON text for JSON (a JSON ``null`` as ``null``, None as SQL NULL), and a text-fallback string (the
source database's own text for a value its kind cannot hold) as it is.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["copy_formatter"]

Format = Callable[[Any], str]

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(v: Any) -> str:
    s = v if type(v) is str else str(v)
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.translate(_ESCAPES)
    return s


def _bool(v: Any) -> str:
    if v is True:
        return "t"
    if v is False:
        return "f"
    return _text(v)


def _float(v: Any) -> str:
    return repr(v) if type(v) is float else _text(v)


def _plain(v: Any) -> str:  # ints, decimals, uuids: their str() has nothing to escape
    return str(v) if isinstance(v, int | decimal.Decimal | uuid.UUID) else _text(v)


def _temporal(v: Any) -> str:
    return v.isoformat() if isinstance(v, dt.date | dt.time) else _text(v)


def _bytes(v: Any) -> str:
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(v).hex()
    return _text(v)


def _interval(v: Any) -> str:
    if isinstance(v, dt.timedelta):  # as psycopg2 adapts it: exact to the microsecond
        return f"{v.days} days {v.seconds}.{v.microseconds:06d} seconds"
    return _text(v)


def _json(v: Any) -> str:
    if v is sa.JSON.NULL:
        return "null"
    return json.dumps(v, ensure_ascii=False).translate(_ESCAPES)


def _format_of(t: sa.types.TypeEngine[Any]) -> Format | None:
    if isinstance(t, sa.ARRAY):
        return None
    if isinstance(t, sa.JSON):
        return _json
    if isinstance(t, sa.Boolean):
        return _bool
    if isinstance(t, sa.Float):  # Double too; before Numeric, Float's base
        return _float
    if isinstance(t, sa.Integer | sa.Numeric | sa.Uuid):
        return _plain
    if isinstance(t, sa.DateTime | sa.Date | sa.Time):
        return _temporal
    if isinstance(t, sa.Interval):
        return _interval
    if isinstance(t, sa.LargeBinary):
        return _bytes
    if isinstance(t, sa.String):  # Text, and the key column
        return _text
    return None


def copy_formatter(
    columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]],
) -> Callable[[Iterable[dict[str, Any]]], bytes] | None:
    """A function rows → ``COPY`` text bytes for ``columns`` (name, type) in that order; None if a type is not handled.

    A row lacking a column gets NULL there.
    """
    formats: list[tuple[str, Format]] = []
    for name, typ in columns:
        f = _format_of(typ)
        if f is None:
            return None
        formats.append((name, f))

    def encode(rows: Iterable[dict[str, Any]]) -> bytes:
        lines = []
        for row in rows:
            get = row.get
            lines.append("\t".join("\\N" if (v := get(name)) is None else f(v) for name, f in formats))
        lines.append("")
        return "\n".join(lines).encode()

    return encode
