"""PostgreSQL column types: the Avro type of each, and its value parsed from pgoutput's text format.

Sans-io: a :class:`PgType` is resolved from a type OID and typmod (plus, for types that are not
built in — enums, domains, arrays of those — a catalog row the caller looked up), and turns the text
bytes of a tuple column into the Python value the Avro encoder takes. The replication session runs
with ``DateStyle=ISO``, ``IntervalStyle=iso_8601``, ``TimeZone=UTC``, ``bytea_output=hex`` and
``extra_float_digits=3`` (see :data:`SESSION_OPTIONS`), so every text form below is fixed.

========================  ===================  =======================================================
PostgreSQL                relay column kind    Python value (text = PostgreSQL's own text, a ``str``)
========================  ===================  =======================================================
smallint, integer         ``int``              ``int``
bigint, oid               ``long``             ``int``
real / double precision   ``float``/``double`` ``float`` (bit for bit; NaN, ±Infinity kept)
numeric(p, s)             ``decimal`` (p, s) † ``decimal.Decimal``; ``NaN`` → text → ``Decimal('NaN')``
numeric (no precision)    ``decimal``          ``decimal.Decimal`` (travels as PostgreSQL's exact text)
text, varchar, char, name ``string``           ``str``
bytea                     ``bytes``            ``bytes``
boolean                   ``boolean``          ``bool``
date                      ``date`` †           ``datetime.date``; ±infinity, BC, year ≥ 10000 → text
time                      ``time`` †           ``datetime.time``; ``24:00:00`` → text
timestamp                 ``timestamp`` †      naive ``datetime.datetime``; as date → text
timestamptz               ``timestamptz`` †    aware ``datetime.datetime`` (UTC); as date → text
interval                  ``interval``         :class:`~headrace.relay.Interval` (travels as ISO 8601 text)
uuid                      ``uuid``             ``uuid.UUID``
json, jsonb               ``json``             the JSON text, exactly as PostgreSQL sends it
enum types                ``enum``             ``str`` (the label)
domains                   the base type's      as the base type
arrays                    ``array`` †          ``list``; not one-dimensional or lower bound ≠ 1 → text
anything else             ``string``           ``str`` (PostgreSQL's text form)
========================  ===================  =======================================================

† ``text_fallback``: a value the Python type cannot hold travels as PostgreSQL's own text in the
Avro union's ``string`` branch, so nothing is clamped, rounded or refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from .._schema import ColumnType

__all__ = [
    "SESSION_OPTIONS",
    "CatalogType",
    "PgType",
    "bytes_parser",
    "column_type",
    "parse_array",
    "resolve_type",
]

SESSION_OPTIONS: Final = (
    "-c DateStyle=ISO -c IntervalStyle=iso_8601 -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3"
)

Parser = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class CatalogType:
    """What ``pg_type`` says about a type that is not built in."""

    oid: int
    name: str
    typtype: str  # 'b' base, 'e' enum, 'd' domain, 'c' composite, 'r' range, 'p' pseudo
    elem_oid: int  # for arrays, the element type; 0 otherwise
    base_oid: int  # for domains, the base type; 0 otherwise
    category: str  # typcategory: 'A' array, 'E' enum, …
    labels: tuple[str, ...] = ()  # enum labels in order


@dataclass(frozen=True, slots=True)
class PgType:
    """A resolved column type: its name, the relay's column kind (and parameters) and text parser."""

    name: str
    kind: str
    parse: Parser
    precision: int | None = None
    scale: int | None = None
    items: PgType | None = None
    symbols: tuple[str, ...] = ()
    text_fallback: bool = False


def _bool(s: str) -> bool:
    return s == "t"


def _bytea(s: str) -> bytes:
    if s.startswith("\\x"):
        return bytes.fromhex(s[2:])
    raise ValueError("bytea not in hex format (the session sets bytea_output=hex)")


def _float(s: str) -> float:
    return float(s)  # float() reads NaN, Infinity, -Infinity


def _date(s: str) -> dt.date | str:
    try:
        return dt.date.fromisoformat(s)
    except ValueError:  # infinity, BC, year ≥ 10000: PostgreSQL's text travels as it is
        return s


def _time(s: str) -> dt.time | str:
    try:
        return dt.time.fromisoformat(s)
    except ValueError:  # 24:00:00
        return s


def _timestamp(s: str) -> dt.datetime | str:
    try:
        return dt.datetime.fromisoformat(s)
    except ValueError:
        return s


def _timestamptz(s: str) -> dt.datetime | str:
    try:
        return dt.datetime.fromisoformat(s).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return s


def _str(s: str) -> str:
    return s


def _numeric(typmod: int) -> PgType:
    if typmod < 4:  # numeric without (precision, scale): no Avro decimal can hold every value
        return PgType("numeric", "decimal", _str)
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (typmod - 4) & 0xFFFF
    if scale > precision:  # PostgreSQL 15 allows negative/oversized scales; keep those exact as text
        return PgType("numeric", "decimal", _str)
    # NaN is legal in a numeric(p, s) column and has no Avro decimal form: it takes the text branch
    return PgType(f"numeric({precision},{scale})", "decimal", Decimal, precision, scale, text_fallback=True)


_BUILTIN: Final[dict[int, PgType]] = {
    16: PgType("boolean", "boolean", _bool),
    17: PgType("bytea", "bytes", _bytea),
    18: PgType('"char"', "string", _str),
    19: PgType("name", "string", _str),
    20: PgType("bigint", "long", int),
    21: PgType("smallint", "int", int),
    23: PgType("integer", "int", int),
    25: PgType("text", "string", _str),
    26: PgType("oid", "long", int),
    114: PgType("json", "json", _str),
    700: PgType("real", "float", _float),
    701: PgType("double precision", "double", _float),
    1042: PgType("character", "string", _str),
    1043: PgType("character varying", "string", _str),
    1082: PgType("date", "date", _date, text_fallback=True),
    1083: PgType("time", "time", _time, text_fallback=True),
    1114: PgType("timestamp", "timestamp", _timestamp, text_fallback=True),
    1184: PgType("timestamptz", "timestamptz", _timestamptz, text_fallback=True),
    1186: PgType("interval", "interval", _str),
    2950: PgType("uuid", "uuid", uuid.UUID),
    3802: PgType("jsonb", "json", _str),
}

# Array type OID → element type OID, for the built-in element types above.
_BUILTIN_ARRAYS: Final[dict[int, int]] = {
    1000: 16, 1001: 17, 1002: 18, 1003: 19, 1016: 20, 1005: 21, 1007: 23, 1009: 25, 1028: 26, 199: 114,
    1021: 700, 1022: 701, 1014: 1042, 1015: 1043, 1182: 1082, 1183: 1083, 1115: 1114, 1185: 1184,
    1187: 1186, 2951: 2950, 3807: 3802, 1231: 1700,
}  # fmt: skip

NUMERIC_OID: Final = 1700


def resolve_type(type_oid: int, typmod: int, lookup: Callable[[int], CatalogType | None] = lambda _oid: None) -> PgType:
    """The :class:`PgType` of a column; ``lookup`` answers for OIDs that are not built in."""
    if type_oid == NUMERIC_OID:
        return _numeric(typmod)
    known = _BUILTIN.get(type_oid)
    if known is not None:
        return known
    elem_oid = _BUILTIN_ARRAYS.get(type_oid)
    cat = None
    if elem_oid is None:
        cat = lookup(type_oid)
        if cat is not None and cat.category == "A" and cat.elem_oid:
            elem_oid = cat.elem_oid
    if elem_oid is not None:
        # typmod of an array column applies to its elements (numeric(10,2)[] has typmod of numeric(10,2))
        elem = resolve_type(elem_oid, typmod, lookup)
        return PgType(f"{elem.name}[]", "array", _array_parser(elem.parse), items=elem, text_fallback=True)
    if cat is not None:
        if cat.typtype == "e":
            return PgType(cat.name, "enum", _str, symbols=cat.labels)
        if cat.typtype == "d" and cat.base_oid:
            base = resolve_type(cat.base_oid, typmod, lookup)
            return dataclasses.replace(base, name=cat.name)
        return PgType(cat.name, "string", _str)
    return PgType(f"oid {type_oid}", "string", _str)


def _array_parser(elem: Parser) -> Parser:
    def parse(s: str) -> list[Any] | str:
        if s.startswith("[") or s.startswith("{{"):
            return s  # explicit lower bounds or more than one dimension: PostgreSQL's text travels as it is
        return parse_array(s, elem)

    return parse


_ARRAY_WS = " \t\n\r\v\f"  # PostgreSQL quotes only ASCII whitespace


def parse_array(text: str, elem: Parser) -> list[Any]:
    """Parse PostgreSQL's array text form (``{1,NULL,"a b",{2,3}}``) applying ``elem`` to each element.

    A one-dimensional array without quoted elements (most: numbers, dates, plain words) is split at
    its commas; anything else goes through the general parser. Both give the same list for such a
    text (tests/test_pg_array_text.py)."""
    if (
        text[:1] == "{"
        and text[-1:] == "}"
        and text.count("{") == 1
        and text.count("}") == 1
        and '"' not in text
        and "\\" not in text
    ):
        inner = text[1:-1]
        if not inner:
            return []
        out: list[Any] = []
        for raw in inner.split(","):
            raw = raw.strip(_ARRAY_WS)
            out.append(None if raw == "NULL" else elem(raw))
        return out
    return _parse_array_general(text, elem)


def _parse_array_general(text: str, elem: Parser) -> list[Any]:
    """:func:`parse_array` for any text form: quoting, escapes, nesting, explicit lower bounds."""
    if text.startswith("["):  # explicit lower bounds: "[0:1]={1,2}"
        text = text[text.index("=") + 1 :]
    pos = 0
    n = len(text)

    def parse_level() -> list[Any]:
        nonlocal pos
        if text[pos] != "{":
            raise ValueError(f"array text must start with '{{' at {pos}: {text!r}")
        pos += 1
        items: list[Any] = []
        if text[pos] == "}":
            pos += 1
            return items
        while True:
            c = text[pos]
            if c == "{":
                items.append(parse_level())
            elif c == '"':
                pos += 1
                buf = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    buf.append(text[pos])
                    pos += 1
                pos += 1
                items.append(elem("".join(buf)))
            else:
                start = pos
                while text[pos] not in ",}":
                    pos += 1
                raw = text[start:pos].strip(" \t\n\r\v\f")  # PostgreSQL quotes only ASCII whitespace
                items.append(None if raw == "NULL" else elem(raw))
            c = text[pos]
            pos += 1
            if c == "}":
                return items
            if c != ",":
                raise ValueError(f"unexpected {c!r} in array text at {pos - 1}: {text!r}")

    result = parse_level()
    if pos != n:
        raise ValueError(f"trailing characters in array text: {text!r}")
    return result


def bytes_parser(t: PgType) -> Callable[[bytes], Any]:
    """A parser of the raw text bytes (skips the UTF-8 decoding where Python parses bytes itself)."""
    if t.parse is int:
        return int
    if t.parse is _float:
        return float
    if t.parse is _str:
        return bytes.decode
    parse = t.parse
    return lambda b: parse(b.decode())


def column_type(t: PgType) -> ColumnType:
    """The relay's :class:`~headrace.relay._schema.ColumnType` for a resolved PostgreSQL type."""
    return ColumnType(
        t.kind,
        precision=t.precision,
        scale=t.scale,
        items=column_type(t.items) if t.items is not None else None,
        symbols=t.symbols,
        text_fallback=t.text_fallback,
    )
