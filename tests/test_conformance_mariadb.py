"""MariaDB conformance: every type at its edge values, and hypothesis-generated rows, through a real relay.

A private MariaDB, a ``headrace relay`` process on its row binlog, and a subscriber (the client
library). The writer runs each transaction itself and, inside it, reads every changed row back with
``SELECT`` — the before image just before an UPDATE/DELETE, the after image just after an
INSERT/UPDATE — in a form no driver can alter (``HEX()``, ``CAST(… AS CHAR)``). Then the delivered
events of that transaction (one window) are compared with those images, in order, value by value.

Comparison rule (delivered Python value → the database's text), per column family:

* BOOLEAN (TINYINT(1)) → ``'1'``/``'0'`` for ``True``/``False``, else ``v`` itself (the text of −128…127);
* integers, YEAR, BIT → ``str(int(v))`` (YEAR as 4 digits: 0 → ``0000``) = ``CAST(c AS CHAR)``
  (BIT: ``CAST(CAST(c AS UNSIGNED) AS CHAR)``);
* DECIMAL, BIGINT UNSIGNED → ``format(v, 'f')`` = ``CAST(c AS CHAR)`` (every digit, the column's scale);
* FLOAT / DOUBLE → the IEEE bits of ``v`` = the bits of ``float(CAST(CAST(c AS DOUBLE) AS CHAR))``
  (MariaDB prints doubles in shortest round-trip form; FLOAT widens to DOUBLE exactly);
* CHAR/VARCHAR/TEXT, ENUM, SET → ``v.encode('utf-8').hex()`` = ``HEX(c)`` (utf8mb4 columns);
* BINARY/VARBINARY/BLOB → ``v.hex()`` = ``HEX(c)`` (so BINARY(n) must carry all n bytes);
* JSON → ``v`` equals the stored text parsed by the client's documented rule (docs/type-mapping.md:
  a number with a fraction or exponent is a ``float`` when it prints back as the same text, else a
  ``Decimal``; a top-level ``null`` is ``JSON_NULL``), compared with types (``1`` ≠ ``1.0``, a
  ``Decimal`` keeps its digits);
* UUID → ``str(v)``; INET6 → ``v`` = ``CAST(c AS CHAR)``;
* DATE → ``v.isoformat()`` (or ``v`` itself when it is the server's text, e.g. ``0000-00-00``);
  DATETIME(n) / TIMESTAMP(n) → ``YYYY-MM-DD hh:mm:ss`` plus n fractional digits (TIMESTAMP in UTC,
  the session's time_zone is +00:00), or ``v`` itself when text; TIME(n) → ``[-]hh:mm:ss`` plus n
  digits (hours ≥ 2 digits, up to 838) — each = ``CAST(c AS CHAR)``;
* SQL NULL → ``None``.

Event keys are JSON values (``encode_key``): a BINARY key is base64 of all n bytes, a UUID key its text.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_servers import MariaDbServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sources_harness import start_relay

from headrace.relay import JSON_NULL
from headrace.relay.client import Subscriber

pytestmark = pytest.mark.mariadb


@dataclass(frozen=True)
class Col:
    name: str
    ddl: str
    family: str  # how the database's text is selected and compared (module docstring)
    fsp: int = 0
    expr: str = ""  # the SELECT expression, when not the family's


NUMS = [
    Col("ti", "TINYINT", "int"),
    Col("tu", "TINYINT UNSIGNED", "int"),
    Col("bo", "BOOLEAN", "bool"),
    Col("si", "SMALLINT", "int"),
    Col("su", "SMALLINT UNSIGNED", "int"),
    Col("mi", "MEDIUMINT", "int"),
    Col("mu", "MEDIUMINT UNSIGNED", "int"),
    Col("i", "INT", "int"),
    Col("iu", "INT UNSIGNED", "int"),
    Col("bi", "BIGINT", "int"),
    Col("bu", "BIGINT UNSIGNED", "dec"),
    Col("d65", "DECIMAL(65,30)", "dec"),
    Col("d10", "DECIMAL(10,0)", "dec"),
    Col("d5", "DECIMAL(5,5)", "dec"),
    Col("d12", "DECIMAL(12,3)", "dec"),
    Col("f", "FLOAT", "float"),
    Col("dbl", "DOUBLE", "float"),
    Col("b1", "BIT(1)", "bit"),
    Col("b7", "BIT(7)", "bit"),
    Col("b63", "BIT(63)", "bit"),
    Col("b64", "BIT(64)", "bit"),
    Col("yr", "YEAR", "year"),
]
SET_LABELS = ("a", "b", "ü", "x y")
ENUM_LABELS = ("sad", "very happy", "ünï")
STRS = [
    Col("c", "CHAR(10)", "text"),
    Col("vc", "VARCHAR(300)", "text"),
    Col("tx", "TEXT", "text"),
    Col("l1", "VARCHAR(20) CHARACTER SET latin1", "text", expr="HEX(CONVERT(`l1` USING utf8mb4))"),
    Col("u16", "VARCHAR(20) CHARACTER SET utf16", "text", expr="HEX(CONVERT(`u16` USING utf8mb4))"),
    Col("u32", "VARCHAR(20) CHARACTER SET utf32", "text", expr="HEX(CONVERT(`u32` USING utf8mb4))"),
    Col("uc2", "VARCHAR(20) CHARACTER SET ucs2", "text", expr="HEX(CONVERT(`uc2` USING utf8mb4))"),
    Col("u16le", "VARCHAR(20) CHARACTER SET utf16le", "text", expr="HEX(CONVERT(`u16le` USING utf8mb4))"),
    Col("sj", "VARCHAR(20) CHARACTER SET sjis", "text", expr="HEX(CONVERT(`sj` USING utf8mb4))"),
    Col("ko", "VARCHAR(20) CHARACTER SET koi8r", "text", expr="HEX(CONVERT(`ko` USING utf8mb4))"),
    Col("bn", "BINARY(8)", "bin"),
    Col("vb", "VARBINARY(20)", "bin"),
    Col("bl", "BLOB", "bin"),
    Col("e", "ENUM('sad','very happy','ünï')", "text"),
    Col("s", "SET('a','b','ü','x y')", "text"),
    Col("j", "JSON", "json"),
    Col("uu", "UUID", "uuid"),
    Col("i6", "INET6", "str"),
]
TIMES = [
    Col("da", "DATE", "date"),
    Col("dt0", "DATETIME", "datetime", 0),
    Col("dt3", "DATETIME(3)", "datetime", 3),
    Col("dt6", "DATETIME(6)", "datetime", 6),
    Col("ts0", "TIMESTAMP NULL", "timestamp", 0),
    Col("ts3", "TIMESTAMP(3) NULL", "timestamp", 3),
    Col("ts6", "TIMESTAMP(6) NULL", "timestamp", 6),
    Col("tm", "TIME", "time", 0),
    Col("tm1", "TIME(1)", "time", 1),
    Col("tm3", "TIME(3)", "time", 3),
    Col("tm6", "TIME(6)", "time", 6),
]
ID = Col("id", "INT", "int")
TABLES: dict[str, tuple[list[Col], list[Col]]] = {  # name: (key columns, other columns)
    "nums": ([ID], NUMS),
    "strs": ([ID], STRS),
    "times": ([ID], TIMES),
    "bkeys": ([Col("k", "BINARY(4)", "bin")], [Col("v", "INT", "int")]),
    "ukeys": ([Col("u", "UUID", "uuid")], [Col("v", "INT", "int")]),
}

D65_MAX = Decimal("9" * 35 + "." + "9" * 30)
EDGES: dict[str, list[Any]] = {
    "ti": [-128, 127, 0],
    "tu": [0, 255],
    "bo": [-128, 127, 2, 1, 0],
    "si": [-32768, 32767],
    "su": [0, 65535],
    "mi": [-8388608, 8388607],
    "mu": [0, 16777215],
    "i": [-(2**31), 2**31 - 1],
    "iu": [0, 2**32 - 1],
    "bi": [-(2**63), 2**63 - 1, 0],
    "bu": [2**64 - 1, 0, 2**63],
    "d65": [D65_MAX, -D65_MAX, Decimal("1e-30"), Decimal("-1e-30"), Decimal(0), Decimal("1.0000000000000000001")],
    "d10": [9999999999, -9999999999, 0],
    "d5": [Decimal("0.99999"), Decimal("-0.99999"), Decimal("0.00001")],
    "d12": [Decimal("999999999.999"), Decimal("-999999999.999"), Decimal("-0.001"), Decimal("-1")],
    "f": [3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38, 0.0, -0.0],
    "dbl": [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, 2.2250738585072014e-308,
            2.225073858507201e-308, -0.0, 0.1],
    "b1": [0, 1],
    "b7": [127, 0],
    "b63": [2**63 - 1, 1],
    "b64": [2**64 - 1, 2**63, 0],
    "yr": [0, 1901, 2155, 2024],
    "c": ["a  ", "", "ünïcødé😀", " x", "1234567890"],
    "vc": ["\x01", "é中😀\U00020000\U00030000\U000e0001\U000f0000\U0010fffd", "trailing   ", "\x00nul\x00", "'\"\\"],
    "l1": ["\x81\x8d\x8f\x90\x9d", "àéîõü ÿ", "€‚ƒ„…†‡ˆ‰Š‹ŒŽ", "", "trailing  "],
    "u16": ["aé😀\U0010fffd", "", "\x00", "trailing  "],
    "u32": ["aé😀\U0010fffd", "", "\x00"],
    "uc2": ["aé中", "", "\x00"],
    "u16le": ["aé😀", ""],
    # legacy character sets decode with Python's codec of the same name, whose tables differ from the
    # server's in places (sjis: the server stores '\\' as 0x815F, which Python reads as '＼'): documented
    "sj": ["アイウ", "漢字", "~", ""],
    "ko": ["дом", "Ёё", ""],
    "tx": ["trailing  ", "x\x00\x00", "", "\U0010ffff" * 3],
    "bn": [b"\x01\x00\x00", b"", b"\x00" * 8, b"\xff" * 8, b"ab", b"\x00\x01"],
    "vb": [b"\x00", b"\x01\x00", b"", b"a  "],
    "bl": [b"\x00\x00\x00", b"x\x00 ", b"", bytes(range(256))],
    "e": ["sad", "very happy", "ünï", "not a label"],  # sql_mode '': an unknown label stores the error value ''
    "s": ["", "a,b,ü,x y", "b", "x y,a"],
    "j": ["1.0000000000000000001", "null", '{"a": null}', "[1e400, -0, 0.0, 12345678901234567890123]",
          '  [ 1 , "\\u0000" ]  ', "true", '{"k": {"k": [[]]}, "z": 1, "a": 2}'],
    "uu": ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
           "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a00", "6ccd780c-baba-1026-9564-5b8c65600000"],
    "i6": ["::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "1:0:2:3:4:5:6:7", "2001:db8::",
           "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:0.0.0.0", "1:0:0:2:0:0:0:3"],
    "da": ["0000-00-00", "2024-00-10", "2024-02-30", "2024-02-00", "1000-01-01", "9999-12-31", "0001-01-01",
           "0000-01-01", "2024-02-29"],
    "dt0": ["0000-00-00 00:00:00", "2024-00-10 00:00:00", "9999-12-31 23:59:59", "1000-01-01 00:00:00",
            "0001-01-01 00:00:00", "2024-02-30 12:00:00"],
    "dt3": ["0000-00-00 00:00:00.000", "2024-01-01 10:00:00.123", "2024-13-01 00:00:00"],
    "dt6": ["9999-12-31 23:59:59.999999", "1000-01-01 00:00:00.000001", "2024-00-00 00:00:00.5"],
    "ts0": ["0000-00-00 00:00:00", "1970-01-01 00:00:01", "2038-01-19 03:14:07"],
    "ts3": ["2038-01-19 03:14:07.999", "1970-01-01 00:00:01.001", "0000-00-00 00:00:00.000"],
    "ts6": ["2038-01-19 03:14:07.999999", "1970-01-01 00:00:01.000001", "0000-00-00 00:00:00"],
    "tm": ["-838:59:59", "838:59:59", "00:00:00", "-00:00:01", "24:00:00", "100:00:00"],
    "tm1": ["-00:00:00.5", "-838:59:58.9", "12:34:56.7"],
    "tm3": ["-838:59:59.999", "-00:00:00.001", "-00:00:01.5", "838:59:59.999", "00:00:00.000"],
    "tm6": ["-838:59:59.999999", "838:59:59.999999", "-00:00:00.000001", "-01:00:00.5"],
}  # fmt: skip


# -- the database's text of a row ----------------------------------------------------------------


def select_expr(c: Col) -> str:
    q = f"`{c.name}`"
    if c.expr:
        return c.expr
    if c.family in ("text", "bin", "json"):
        return f"HEX({q})"
    if c.family == "float":
        return f"CAST(CAST({q} AS DOUBLE) AS CHAR)"
    if c.family == "bit":
        return f"CAST(CAST({q} AS UNSIGNED) AS CHAR)"
    return f"CAST({q} AS CHAR)"


def row_text(cur: Any, table: str, where: dict[str, Any]) -> dict[str, str | None] | None:
    keys, others = TABLES[table]
    cols = keys + others
    cond = " AND ".join(f"`{k}` = %s" for k in where)
    cur.execute(f"SELECT {', '.join(select_expr(c) for c in cols)} FROM `{table}` WHERE {cond}", tuple(where.values()))
    r = cur.fetchone()
    if r is None:
        return None
    return {c.name: (v.decode() if isinstance(v, bytes) else v) for c, v in zip(cols, r, strict=True)}


# -- the comparison rule: delivered Python value → the database's text -------------------------------


def _strict_same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_strict_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


def _json_number(text: str) -> float | Decimal:
    f = float(text)
    return f if repr(f) == text else Decimal(text)


def _dt_text(v: dt.datetime, fsp: int) -> str:
    s = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    return s + "." + f"{v.microsecond:06d}"[:fsp] if fsp else s


def _time_text(v: dt.timedelta, fsp: int) -> str:
    micros = v // dt.timedelta(microseconds=1)
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    secs, frac = divmod(micros, 1_000_000)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    text = f"{sign}{h:02d}:{m:02d}:{s:02d}"
    return text + "." + f"{frac:06d}"[:fsp] if fsp else text


def mismatch(c: Col, v: Any, text: str | None) -> str | None:
    """None when the delivered value ``v`` is the database's ``text`` under the rule, else a description."""
    if text is None or v is None:
        return None if text is None and v is None else f"{c.name}: delivered {v!r}, database {text!r}"
    f = c.family
    if f == "json":
        want = json.loads(bytes.fromhex(text).decode(), parse_float=_json_number)
        ok = (v is JSON_NULL) if want is None else _strict_same(v, want)
        return None if ok else f"{c.name}: delivered {v!r}, database {bytes.fromhex(text).decode()!r}"
    if f == "float":
        ok = isinstance(v, float) and struct.pack("<d", v) == struct.pack("<d", float(text))
        if ok and c.ddl == "FLOAT":
            ok = struct.unpack("<f", struct.pack("<f", v))[0] == v  # a FLOAT travels as 32 bits
        return None if ok else f"{c.name}: delivered {v!r}, database {text}"
    got: str
    if f in ("int", "bit"):
        got = str(int(v)) if isinstance(v, int | Decimal) and not isinstance(v, bool) else repr(v)
    elif f == "bool":  # 0/1 as bool, other TINYINT(1) values as their text
        got = str(int(v)) if isinstance(v, bool) else v if isinstance(v, str) and v not in ("0", "1") else repr(v)
    elif f == "year":
        got = f"{v:04d}" if isinstance(v, int) else repr(v)
    elif f == "dec":
        got = format(v, "f") if isinstance(v, Decimal) else repr(v)
    elif f == "text":
        got = v.encode("utf-8").hex().upper() if isinstance(v, str) else repr(v)
    elif f == "bin":
        got = v.hex().upper() if isinstance(v, bytes) else repr(v)
    elif f == "uuid":
        got = str(v) if isinstance(v, uuid.UUID) else repr(v)
    elif f == "str":
        got = v if isinstance(v, str) else repr(v)
    elif f == "date":
        got = v if isinstance(v, str) else v.isoformat() if type(v) is dt.date else repr(v)
    elif f == "datetime":
        naive = isinstance(v, dt.datetime) and v.tzinfo is None
        got = v if isinstance(v, str) else _dt_text(v, c.fsp) if naive else repr(v)
    elif f == "timestamp":
        if isinstance(v, str):
            got = v
        elif isinstance(v, dt.datetime) and v.utcoffset() == dt.timedelta(0):
            got = _dt_text(v, c.fsp)
        else:
            got = repr(v)
    elif f == "time":
        got = _time_text(v, c.fsp) if isinstance(v, dt.timedelta) else repr(v)
    else:  # pragma: no cover
        raise AssertionError(f)
    return None if got == text else f"{c.name}: delivered {v!r} ({got}), database {text}"


# -- the writer: transactions, and the images the database gives for them ---------------------------


@dataclass
class Expected:
    table: str
    op: str
    key: list[str | None]
    before: dict[str, str | None] | None
    after: dict[str, str | None] | None


class Writer:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cur = conn.cursor()
        # zero dates, invalid dates (2024-02-30) and out-of-range clamping: legal in many users' sessions
        self.cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
        self.cur.execute("SET SESSION time_zone = '+00:00'")
        self.pending: list[Expected] = []
        self.next_id = 1
        self.live: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}  # rows by key (the where clause)

    def _key_where(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        return {k.name: row[k.name] for k in TABLES[table][0]}

    def _key_text(self, table: str, image: dict[str, str | None]) -> list[str | None]:
        return [image[k.name] for k in TABLES[table][0]]

    def insert(self, table: str, values: dict[str, Any]) -> None:
        names = list(values)
        self.cur.execute(
            f"INSERT INTO `{table}` ({', '.join(f'`{n}`' for n in names)}) VALUES ({', '.join(['%s'] * len(names))})",
            tuple(values.values()),
        )
        where = self._key_where(table, values)
        if table in ("bkeys", "ukeys"):
            # the key as stored (BINARY pads, UUID normalises): read it back by the unique v
            after = row_text(self.cur, table, {"v": values["v"]})
            assert after is not None
            k = TABLES[table][0][0]
            stored = after[k.name]
            assert stored is not None
            where = {k.name: bytes.fromhex(stored) if k.family == "bin" else stored}
        after = row_text(self.cur, table, where)
        assert after is not None
        self.live[table].append(where)
        self.pending.append(Expected(table, "c", self._key_text(table, after), None, after))

    def update(self, table: str, index: int, values: dict[str, Any]) -> None:
        where = self.live[table][index]
        before = row_text(self.cur, table, where)
        sets = ", ".join(f"`{n}` = %s" for n in values)
        cond = " AND ".join(f"`{k}` = %s" for k in where)
        n = self.cur.execute(f"UPDATE `{table}` SET {sets} WHERE {cond}", (*values.values(), *where.values()))
        after = row_text(self.cur, table, where)
        if n:  # a row the UPDATE did not change (0 rows affected) is not logged
            assert before is not None and after is not None
            self.pending.append(Expected(table, "u", self._key_text(table, after), before, after))

    def delete(self, table: str, index: int) -> None:
        where = self.live[table].pop(index)
        before = row_text(self.cur, table, where)
        cond = " AND ".join(f"`{k}` = %s" for k in where)
        self.cur.execute(f"DELETE FROM `{table}` WHERE {cond}", tuple(where.values()))
        assert before is not None
        self.pending.append(Expected(table, "d", self._key_text(table, before), before, None))

    def commit(self) -> list[Expected]:
        self.conn.commit()
        out, self.pending = self.pending, []
        return out

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def key_value(c: Col, v: Any) -> Any:
    """An event key holds JSON values: bytes as base64, UUIDs as their text (headrace.relay._event.encode_key)."""
    if c.family == "bin" and isinstance(v, str):
        return base64.b64decode(v)
    if c.family == "uuid" and isinstance(v, str):
        return uuid.UUID(v)
    return v


def compare(expected: list[Expected], events: list[Any]) -> list[str]:
    problems: list[str] = []
    if len(events) != len(expected):
        problems.append(f"{len(events)} events delivered for a transaction of {len(expected)} changes")
    for n, (want, ev) in enumerate(zip(expected, events, strict=False)):
        where = f"change {n} ({want.table} {want.op})"
        if (ev.table, ev.op.value) != (want.table, want.op):
            problems.append(f"{where}: delivered {ev.table} {ev.op.value}")
            continue
        keys, others = TABLES[want.table]
        for kc, kv, kt in zip(keys, ev.key, want.key, strict=True):
            m = mismatch(kc, key_value(kc, kv), kt)
            if m:
                problems.append(f"{where} key: {m}")
        for image, got in (("before", ev.before), ("after", ev.after)):
            wimg = getattr(want, image)
            if wimg is None or got is None:
                if (wimg is None) != (got is None) and not (image == "before" and want.op == "u" and got is None):
                    problems.append(f"{where}: {image} image delivered {got!r}, database {wimg!r}")
                continue
            for c in keys + others:
                m = mismatch(c, got.get(c.name), wimg[c.name])
                if m:
                    problems.append(f"{where} {image}: {m}")
    return problems


# -- hypothesis strategies for each column ------------------------------------------------------------


def _json_text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | Decimal):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_json_text(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_json_text(x)}" for k, x in v.items()) + "}"


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.decimals(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
).map(_json_text)


def _time_str(micros: int, fsp: int) -> str:
    return _time_text(dt.timedelta(microseconds=micros), fsp)


_TS_MIN, _TS_MAX = dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 7)
_TIME_MAX = (838 * 3600 + 59 * 60 + 59) * 1_000_000
_D65 = st.decimals(min_value=-D65_MAX, max_value=D65_MAX, places=30, allow_nan=False, allow_infinity=False)
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "ti": st.integers(-128, 127),
    "tu": st.integers(0, 255),
    "bo": st.integers(-128, 127),
    "si": st.integers(-(2**15), 2**15 - 1),
    "su": st.integers(0, 2**16 - 1),
    "mi": st.integers(-(2**23), 2**23 - 1),
    "mu": st.integers(0, 2**24 - 1),
    "i": st.integers(-(2**31), 2**31 - 1),
    "iu": st.integers(0, 2**32 - 1),
    "bi": st.integers(-(2**63), 2**63 - 1),
    "bu": st.integers(0, 2**64 - 1),
    "d65": _D65,
    "d10": st.integers(-(10**10) + 1, 10**10 - 1),
    "d12": st.decimals(min_value=Decimal("-999999999.999"), max_value=Decimal("999999999.999"), places=3),
    "d5": st.decimals(min_value=Decimal("-0.99999"), max_value=Decimal("0.99999"), places=5),
    "f": st.floats(width=32, allow_nan=False, allow_infinity=False),
    "dbl": st.floats(allow_nan=False, allow_infinity=False),
    "b1": st.integers(0, 1),
    "b7": st.integers(0, 127),
    "b63": st.integers(0, 2**63 - 1),
    "b64": st.integers(0, 2**64 - 1),
    "yr": st.sampled_from([0]) | st.integers(1901, 2155),
    "c": st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    "vc": st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
    "l1": st.text(st.characters(max_codepoint=0x2122, exclude_categories=("Cs",)), max_size=20),
    "u16": st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    "u32": st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    "uc2": st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=20),
    "u16le": st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
    "sj": st.text(st.sampled_from("アイウエオ漢字ｱ~ abc"), max_size=20),
    "ko": st.text(st.sampled_from("абвгдеёжзийЁ abc"), max_size=20),
    "tx": st.text(st.characters(exclude_categories=("Cs",)), max_size=60),
    "bn": st.binary(max_size=8),
    "vb": st.binary(max_size=20),
    "bl": st.binary(max_size=100),
    "e": st.sampled_from(ENUM_LABELS),
    "s": st.sets(st.sampled_from(SET_LABELS)).map(lambda s: ",".join(sorted(s))),
    "j": _JSON,
    "uu": st.uuids().map(str) | st.uuids().map(lambda u: str(uuid.UUID(bytes=u.bytes[:15] + b"\x00"))),
    "i6": st.ip_addresses(v=6).map(str),
    "da": st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31)).map(str) | st.sampled_from(EDGES["da"]),
    "dt0": st.datetimes(dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)).map(lambda v: _dt_text(v, 0)),
    "dt3": st.datetimes(dt.datetime(1000, 1, 1)).map(lambda v: _dt_text(v, 3)),
    "dt6": st.datetimes(dt.datetime(1000, 1, 1)).map(lambda v: _dt_text(v, 6)) | st.sampled_from(EDGES["dt6"]),
    "ts0": st.datetimes(_TS_MIN, _TS_MAX).map(lambda v: _dt_text(v, 0)),
    "ts6": st.datetimes(_TS_MIN, _TS_MAX.replace(microsecond=999999)).map(lambda v: _dt_text(v, 6)),
    "tm": st.integers(-_TIME_MAX // 10**6, _TIME_MAX // 10**6).map(lambda s: _time_str(s * 10**6, 0)),
    "tm1": st.integers(-_TIME_MAX // 10**5 - 9, _TIME_MAX // 10**5 + 9).map(lambda t: _time_str(t * 10**5, 1)),
    "tm3": st.integers(-_TIME_MAX // 10**3 - 999, _TIME_MAX // 10**3 + 999).map(lambda t: _time_str(t * 10**3, 3)),
    "ts3": st.datetimes(_TS_MIN, _TS_MAX.replace(microsecond=999000)).map(lambda v: _dt_text(v, 3)),
    "tm6": st.integers(-_TIME_MAX - 999_999, _TIME_MAX + 999_999).map(lambda m: _time_str(m, 6)),
}  # fmt: skip


def row_strategy(table: str) -> st.SearchStrategy[dict[str, Any]]:
    _keys, others = TABLES[table]
    return st.fixed_dictionaries({}, optional={c.name: STRATEGIES[c.name] | st.none() for c in others})


# -- the test -------------------------------------------------------------------------------------------


def edge_rows(cols: list[Col]) -> Iterator[dict[str, Any]]:
    n = max(len(EDGES[c.name]) for c in cols)
    for i in range(n):
        yield {c.name: EDGES[c.name][i % len(EDGES[c.name])] for c in cols}
    yield {}  # every column NULL


def test_every_type_at_its_edges_and_generated_rows(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    db = mariadb_server.create_database("conform")
    for table, (keys, others) in TABLES.items():
        cols = ", ".join(f"`{c.name}` {c.ddl}" for c in keys + others)
        pk = ", ".join(f"`{k.name}`" for k in keys)
        mariadb_server.execute(f"CREATE TABLE `{table}` ({cols}, PRIMARY KEY ({pk}))", db)
    mariadb_server.execute("CREATE TABLE unused (id INT PRIMARY KEY)", db)
    relay, url = start_relay(daemons, tmp_path, mariadb_server.url(db), tables=list(TABLES), mysql={"server_id": 4545})
    sub = Subscriber([url], list(TABLES), wait_ms=300, max_bytes=4 << 20, backoff_max=0.2)
    windows = sub.windows(idle_exit=20)
    writer = Writer(mariadb_server.connect(db, autocommit=False))
    stats = {"txns": 0, "changes": 0}

    def deliver(expected: list[Expected]) -> None:
        """The next transaction's events, compared with what the database said."""
        events: list[Any] = []
        while len(events) < len(expected):
            w = next(windows, None)
            assert w is not None, f"only {len(events)} of {len(expected)} events arrived; {status(url)}"
            events.extend(w.events)
        assert events[-1].window_end, "the transaction's last event ends its window"
        problems = compare(expected, events)
        assert not problems, "\n".join(problems[:40])
        stats["txns"] += 1
        stats["changes"] += len(expected)

    try:
        # 1. edge values of every type, one transaction per table
        for table, (_keys, others) in TABLES.items():
            if table in ("bkeys", "ukeys"):
                continue
            for row in edge_rows(others):
                writer.insert(table, {"id": writer.new_id(), **row})
            deliver(writer.commit())
        # keys: BINARY(4) with trailing zeros, UUIDs whose last bytes are zero
        for v, k in enumerate([b"\x01", b"\x01\x00\x02", b"\x00", b"\x00\x00\x00\x01", b"\xff\xff\xff\xff"]):
            writer.insert("bkeys", {"k": k, "v": v})
        for v, u in enumerate(EDGES["uu"]):
            writer.insert("ukeys", {"u": u, "v": v})
        deliver(writer.commit())
        # updates and deletes of edge rows (zero dates before and after, keys with trailing zeros)
        writer.update("times", 0, {"da": "2024-00-00", "ts0": None, "tm": "-838:59:59"})
        writer.update("strs", 0, {"s": "", "j": "null", "uu": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a00"})
        writer.update("nums", 0, {"d65": -D65_MAX, "bu": 2**64 - 1})
        writer.update("bkeys", 0, {"v": 100})
        writer.delete("bkeys", 1)
        writer.delete("ukeys", 2)
        writer.delete("times", 1)
        deliver(writer.commit())

        # 2. hypothesis-generated transactions: inserts, updates and deletes of generated rows
        kinds = st.sampled_from(["ins", "ins", "upd", "del"])
        op = st.sampled_from(["nums", "strs", "times"]).flatmap(
            lambda t: st.tuples(st.just(t), kinds, row_strategy(t), st.integers(0, 10**6))
        )

        # no shrinking: each example is a committed transaction, so replaying examples changes the table
        @settings(
            max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )  # fmt: skip
        @given(ops=st.lists(op, min_size=1, max_size=6))
        def transactions(ops: list[tuple[str, str, dict[str, Any], int]]) -> None:
            first_insert = True
            for table, kind, row, pick in ops:
                live = writer.live[table]
                if kind == "ins" or first_insert or not live:
                    writer.insert(table, {"id": writer.new_id(), **row})
                    first_insert = False
                elif kind == "upd" and row:
                    writer.update(table, pick % len(live), row)
                elif kind == "del":
                    writer.delete(table, pick % len(live))
            try:
                deliver(writer.commit())
            except BaseException:
                with contextlib.suppress(Exception):
                    writer.conn.rollback()
                raise

        transactions()
    finally:
        sub.close()
        writer.conn.close()
    capture = status(url)
    assert isinstance(capture, dict) and capture.get("state") == "running" and not capture.get("error"), capture
    assert relay.alive() and relay.starts == 1
    print("conformance:", stats)
    assert stats["changes"] >= 100, stats


def status(url: str) -> Any:
    try:
        return httpx.get(url + "/v1/status", timeout=5).json().get("capture")
    except Exception as exc:  # the relay is down: say so
        return repr(exc)
