"""SQLite conformance: every value SQLite can hold arrives as the database holds it, and nothing stops capture.

SQLite lets any column hold any value (INTEGER, REAL, TEXT, BLOB, NULL) whatever its declared type. The
relay delivers a value of the column's kind where the stored value is one, and otherwise the value's
text (docs/type-mapping.md, "SQLite"). Each test writes rows, reads them back with ``SELECT`` (what the
database holds) and compares, event by event and value by value, with what the relay delivered:
through the in-process source and codec (hypothesis-generated rows, fast) and through a real relay
process and subscriber (edge values of every type; a dropped table; ``headrace subscribe``'s JSON).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import json
import math
import re
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sources_harness import collect, start_relay

from headrace.relay import JSON_NULL, Codecs, Op, SchemaRegistry, decode_event, decode_key, encode_key
from headrace.relay._config import RelayConfig
from headrace.relay.sources._base import RowChange
from headrace.relay.sources.sqlite import SqliteSource, text_or_bytes

# one column per declared type the source maps (and an untyped one), NOT NULL where a wrong value used
# to stop capture
DDL = (
    "CREATE TABLE v (id INTEGER PRIMARY KEY, i INTEGER NOT NULL DEFAULT 0, sm SMALLINT, r REAL NOT NULL DEFAULT 0, "
    "n NUMERIC(10,2), nu NUMERIC, t TEXT NOT NULL DEFAULT '', b BLOB, bo BOOLEAN NOT NULL DEFAULT 0, d DATE, "
    "ts TIMESTAMP, tz TIMESTAMPTZ, tm TIME, j JSON, g UUID, x, m MONEY)"
)
KINDS = {
    "id": "long",
    "i": "long",
    "sm": "int",
    "r": "double",
    "n": "decimal(10,2)",
    "nu": "decimal",
    "t": "string",
    "b": "bytes",
    "bo": "boolean",
    "d": "date",
    "ts": "timestamp",
    "tz": "timestamptz",
    "tm": "time",
    "j": "json",
    "g": "uuid",
    "x": "string",
    "m": "string",  # a type SQLAlchemy does not know: NUMERIC affinity, delivered as text
}
COLUMNS = [c for c in KINDS if c != "id"]


# -- the oracle: what docs/type-mapping.md says a subscriber gets for a stored value ---------------


def text_of(v: Any) -> str:
    """The documented text of a stored value: TEXT as is, INTEGER decimal, REAL shortest repr, BLOB X'HEX'."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return "X'" + v.hex().upper() + "'"
    return repr(v) if isinstance(v, float) else str(v)


_NUM = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf(?:inity)?)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")
_TS = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")
_TSTZ = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def _number(v: Any) -> decimal.Decimal | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return decimal.Decimal(v)
    if isinstance(v, float):
        return decimal.Decimal(repr(v))
    if isinstance(v, str) and _NUM.fullmatch(v):
        return decimal.Decimal(v)
    return None


def _parsed(v: Any, pattern: re.Pattern[str], parse: Callable[[str], Any]) -> Any:
    if isinstance(v, str) and pattern.fullmatch(v):
        with contextlib.suppress(ValueError):
            return parse(v)
    return text_of(v)


def _json_number(t: str) -> float | decimal.Decimal:
    f = float(t)
    return f if repr(f) == t else decimal.Decimal(t)


def expect(kind: str, v: Any) -> Any:
    """The value a subscriber must receive for stored value ``v`` in a column of ``kind``."""
    if v is None:
        return None
    if kind == "long":
        return v if type(v) is int else text_of(v)
    if kind == "int":
        return v if type(v) is int and -(2**31) <= v < 2**31 else text_of(v)
    if kind == "double":
        if isinstance(v, float):
            return v
        return float(v) if type(v) is int and int(float(v)) == v else text_of(v)
    if kind == "boolean":
        return v == 1 if type(v) is int and v in (0, 1) else text_of(v)
    if kind.startswith("decimal"):
        d = _number(v)
        if d is None:  # not a number: its text (as a Decimal where it is NaN or ±Infinity, see the docs)
            t = text_of(v)
            return decimal.Decimal(t) if t in ("NaN", "Infinity", "-Infinity") else t
        if kind == "decimal":
            return d
        q = d.quantize(decimal.Decimal("0.01"), context=decimal.Context(prec=1000)) if d.is_finite() else None
        if q is not None and q == d and len(q.as_tuple().digits) <= 10:
            return q
        return decimal.Decimal(text_of(v))
    if kind == "string":
        return text_of(v)
    if kind == "bytes":
        return v if isinstance(v, bytes) else text_of(v)
    if kind == "date":
        return _parsed(v, _DATE, dt.date.fromisoformat)
    if kind == "time":
        return _parsed(v, _TIME, dt.time.fromisoformat)
    if kind == "timestamp":
        return _parsed(v, _TS, dt.datetime.fromisoformat)
    if kind == "timestamptz":

        def tz(s: str) -> dt.datetime:
            d = dt.datetime.fromisoformat(s)
            return d.replace(tzinfo=dt.UTC) if d.tzinfo is None else d.astimezone(dt.UTC)

        return _parsed(v, _TSTZ, tz)
    if kind == "uuid":
        try:
            if isinstance(v, bytes) and len(v) == 16:
                return uuid.UUID(bytes=v)
            if isinstance(v, str):
                return uuid.UUID(v)
        except ValueError:
            pass
        return text_of(v)
    if kind == "json":
        if isinstance(v, str):
            try:
                out = json.loads(v, parse_float=_json_number)
            except ValueError:
                return v  # not JSON: a JSON string holding the text
            return JSON_NULL if out is None else out
        if isinstance(v, bytes):
            return text_of(v)
        return v
    raise AssertionError(kind)


def same(a: Any, b: Any) -> bool:
    """Exact equality: same types, floats bit for bit, decimals digit for digit."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return a == b or (a.is_nan() and b.is_nan())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# -- writing: each statement's row images as SELECT returns them -------------------------------------

Expected = tuple[str, list[Any], dict[str, Any] | None, dict[str, Any] | None]


class Writer:
    """Writes rows to table ``v`` and records, per change, the images the database then holds."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.events: list[Expected] = []

    def _row(self, rid: int) -> dict[str, Any] | None:
        cur = self.conn.execute(f"SELECT id, {', '.join(COLUMNS)} FROM v WHERE id = ?", (rid,))
        row = cur.fetchone()
        cur.close()
        return None if row is None else dict(zip(["id", *COLUMNS], row, strict=True))

    def insert(self, rid: int, values: dict[str, Any]) -> None:
        cols = ["id", *values]
        self.conn.execute(
            f"INSERT INTO v ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", [rid, *values.values()]
        )
        self.events.append(("c", [rid], None, self._row(rid)))

    def update(self, rid: int, values: dict[str, Any]) -> None:
        before = self._row(rid)
        self.conn.execute(f"UPDATE v SET {', '.join(c + ' = ?' for c in values)} WHERE id = ?", [*values.values(), rid])
        self.events.append(("u", [rid], before, self._row(rid)))

    def delete(self, rid: int) -> None:
        before = self._row(rid)
        self.conn.execute("DELETE FROM v WHERE id = ?", (rid,))
        self.events.append(("d", [rid], before, None))

    def expected(self) -> list[Expected]:
        def conv(row: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if row is None else {c: expect(KINDS[c], v) for c, v in row.items()}

        return [(op, key, conv(b), conv(a)) for op, key, b, a in self.events]


def compare(got: list[Expected], want: list[Expected]) -> None:
    assert len(got) == len(want), f"{len(got)} events delivered, {len(want)} written"
    bad = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if not same(list(g), list(w))]
    assert not bad, f"{len(bad)} mismatches, first: event {bad[0][0]}\n got {bad[0][1]!r}\nwant {bad[0][2]!r}"


# -- edge values of every storage class ---------------------------------------------------------------

DOUBLES = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.2250738585072009e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,
    -1.7976931348623157e308,
    math.inf,
    -math.inf,
    0.1,
    1 / 3,
    2.0**53,
    2.0**53 + 2,
    9.2233720368547758e18,  # 2**63 as a double
    1e16,
    123.456,
]
INTEGERS = [0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, -(2**63), -(2**63) + 1]
TEXTS = [
    "",
    "a",
    "NUL\x00inside",
    "\x00",
    "\x01\x1f\x7f",
    "é€😀",
    "\U00010000\U0001f600\U0002a6d6\U0003134a\U000e0001\U000fffff\U0010ffff",  # planes 1, 2, 3, 14, 15, 16
    "\ud7ff\ue000\ufffd\uffff",
    "quote ' and \" and \\",
    "12abc",
    "2024-01-15",
    "2024-01-15 10:20:30.123456",
    "2024-01-15T10:20:30+05:30",
    "2024-02-30",
    "10:20:30.5",
    "24:00:00",
    "12345678-1234-5678-1234-567812345678",
    '{"a": [1, 2.50, 1.0000000000000000001, null]}',
    "null",
    "not json",
    "1.5",
    "1e400",
    "-Infinity",
    "0000-00-00",
]
BLOBS = [b"", b"\x00", b"\x00\x00\x00", b"ab\x00\x00", b"\xff\xfe", bytes(range(256)), uuid.UUID(int=255).bytes]
EDGE_VALUES: list[Any] = [None, *INTEGERS, *DOUBLES, *TEXTS, *BLOBS]


def write_edges(w: Writer, start: int) -> int:
    """Every edge value into every column (one row per value), then updates and deletes of some."""
    rid = start
    for v in EDGE_VALUES:
        w.insert(rid, dict.fromkeys(COLUMNS, v) if v is not None else {c: None for c in COLUMNS if _nullable(c)})
        rid += 1
    for k, v in enumerate(EDGE_VALUES[::3]):
        w.update(start + k, {c: v for c in COLUMNS if v is not None or _nullable(c)})
    for k in range(0, len(EDGE_VALUES), 5):
        w.delete(start + k)
    # NaN: SQLite stores NULL (REAL NOT NULL refuses it)
    w.insert(rid, {"nu": math.nan, "x": math.nan, "j": math.nan})
    return rid + 1


def _nullable(c: str) -> bool:
    return c not in ("i", "r", "t", "bo")


# -- the in-process path: source → codec → decoded row, as the relay does it ------------------------


@contextlib.contextmanager
def source_on(db: Path) -> Iterator[SqliteSource]:
    src = SqliteSource(RelayConfig(source=f"sqlite:///{db}", sqlite={"poll_ms": 5}))
    src.open()
    try:
        yield src
    finally:
        src.close()


def read_decoded(src: SqliteSource, after: int, n: int, codecs: Codecs) -> tuple[list[Expected], int]:
    """``n`` changes after SCN ``after``, encoded and decoded as a subscriber gets them."""
    out: list[Expected] = []
    stop = threading.Event()
    last = after
    reader = src.read(after, stop)
    try:
        for w in reader:
            if w is None:
                if len(out) >= n:
                    break
                continue
            for c in w.changes:
                out.append(_decoded(c, codecs))
            last = w.scn
    finally:
        stop.set()
        reader.close()
    return out, last


def _decoded(c: RowChange, codecs: Codecs) -> Expected:
    codec = codecs.for_change(c)
    b = codec.decode(codec.encode(c.before)) if c.before is not None else None
    a = codec.decode(codec.encode(c.after)) if c.after is not None else None
    key = decode_key(encode_key(c.key))
    return (c.op.value, key, b, a)


def _fresh_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(DDL)
    return conn


def test_every_edge_value_in_every_column_arrives_as_the_database_holds_it(tmp_path: Path) -> None:
    conn = _fresh_db(tmp_path / "e.db")
    with source_on(tmp_path / "e.db") as src:
        w = Writer(conn)
        write_edges(w, 1)
        got, _ = read_decoded(src, 0, len(w.events), Codecs(SchemaRegistry()))
    compare(got, w.expected())
    # spot checks of the documented representation
    after = {e[1][0]: e[3] for e in got if e[0] == "c"}
    rid = 1 + EDGE_VALUES.index(1.7976931348623157e308)
    assert after[rid]["r"] == 1.7976931348623157e308 and after[rid]["i"] == "1.7976931348623157e+308"
    rid = 1 + EDGE_VALUES.index("not json")
    assert after[rid]["i"] == "not json" and after[rid]["n"] == "not json" and after[rid]["j"] == "not json"
    rid = 1 + EDGE_VALUES.index(b"ab\x00\x00")
    assert after[rid]["b"] == b"ab\x00\x00" and after[rid]["t"] == "X'61620000'"
    rid = 1 + EDGE_VALUES.index("NUL\x00inside")
    assert after[rid]["t"] == "NUL\x00inside"


def test_text_that_is_not_utf8_does_not_stop_capture(tmp_path: Path) -> None:
    conn = _fresh_db(tmp_path / "u.db")
    with source_on(tmp_path / "u.db") as src:
        conn.execute("INSERT INTO v (id, t, b, x) VALUES (1, CAST(X'61FF62' AS TEXT), CAST(X'C0' AS TEXT), 'ok')")
        conn.execute("INSERT INTO v (id, t) VALUES (2, CAST(X'EDA080' AS TEXT))")  # an encoded surrogate
        conn.execute("INSERT INTO v (id, t) VALUES (3, '한국어')")
        got, _ = read_decoded(src, 0, 3, Codecs(SchemaRegistry()))
    assert [e[3]["t"] for e in got if e[3]] == ["X'61FF62'", "X'EDA080'", "한국어"]
    assert got[0][3] is not None and got[0][3]["b"] == b"\xc0" and got[0][3]["x"] == "ok"


def test_a_row_read_by_select_converts_to_the_same_bytes_as_its_logged_change(tmp_path: Path) -> None:
    """SqliteSource.convert_row (for a snapshot/seed) and the change log agree byte for byte."""
    db = tmp_path / "s.db"
    conn = _fresh_db(db)
    conn.execute("CREATE TABLE k (a TEXT, b)")  # a rowid table: key __rowid__
    with source_on(db) as src:
        for i, v in enumerate(EDGE_VALUES[1:], 1):  # not None: some columns are NOT NULL
            conn.execute(
                f"INSERT INTO v (id, {', '.join(COLUMNS)}) VALUES ({i}{', ?' * len(COLUMNS)})", [v] * len(COLUMNS)
            )
            conn.execute("INSERT INTO k VALUES (?, ?)", (v, v))
        conn.execute("INSERT INTO k VALUES (NULL, NULL)")
        conn.execute("INSERT INTO v (id, t) VALUES (1000, CAST(X'61FF' AS TEXT))")
        codecs = Codecs(SchemaRegistry())
        stop = threading.Event()
        logged: dict[tuple[str, Any], tuple[Any, bytes]] = {}
        reader = src.read(0, stop)
        for w in reader:
            if w is None:
                if len(logged) == 2 * len(EDGE_VALUES):
                    break
                continue
            for c in w.changes:
                assert c.after is not None
                logged[(c.table.name, c.key[0])] = (c.table, codecs.for_change(c).encode(c.after))
        reader.close()
        sel = sqlite3.connect(db)
        sel.text_factory = text_or_bytes
        cur = sel.execute("SELECT * FROM v")
        names = [d[0] for d in cur.description]
        rows = [("v", dict(zip(names, r, strict=True))) for r in cur.fetchall()]
        rows += [("k", {"__rowid__": r[0], "a": r[1], "b": r[2]}) for r in sel.execute("SELECT rowid, a, b FROM k")]
        for table, row in rows:
            meta, want = logged[(table, row["id"] if table == "v" else row["__rowid__"])]
            change = RowChange(0, meta, Op.READ, (), None, src.convert_row(meta, row))
            assert codecs.for_change(change).encode(change.after) == want, (table, row)


def test_a_seeded_row_is_the_same_bytes_as_its_logged_change(tmp_path: Path) -> None:
    """The bootstrap seed of a SQLite table converts with the stream's conversion (SqliteSource.convert_row)."""
    from headrace.bootstrap import Store, apply_once, seed_sqlite

    db = tmp_path / "seed.db"
    conn = _fresh_db(db)
    conn.execute("CREATE TABLE k (a TEXT, b)")  # a rowid table
    with source_on(db) as src:
        for i, v in enumerate(EDGE_VALUES[1:], 1):
            conn.execute(
                f"INSERT INTO v (id, {', '.join(COLUMNS)}) VALUES ({i}{', ?' * len(COLUMNS)})", [v] * len(COLUMNS)
            )
            conn.execute("INSERT INTO k VALUES (?, ?)", (v, v))
        conn.execute("INSERT INTO k VALUES (CAST(X'61FF' AS TEXT), NULL)")
        codecs = Codecs(SchemaRegistry())
        stop = threading.Event()
        logged: dict[tuple[str, bytes], bytes] = {}
        reader = src.read(0, stop)
        for w in reader:
            if w is None:
                if len(logged) == 2 * len(EDGE_VALUES) - 1:
                    break
                continue
            for c in w.changes:
                assert c.after is not None
                logged[(c.table.name, encode_key(c.key))] = codecs.for_change(c).encode(c.after)
        reader.close()
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        seed_sqlite(store, f"sqlite:///{db}", ["v", "k"], page_rows=7)
        apply_once(store, 10)  # the seeded generation is served once ready
        rows, _ = store.snapshot_page(["k", "v"], None, 10_000)
        seeded = {(t, decode_event(f)[0].key): decode_event(f)[0].after for t, _k, f in rows}
    finally:
        store.close()
    assert seeded == logged


def test_delete_without_where_arrives_row_by_row(tmp_path: Path) -> None:
    """SQLite's truncate optimisation is off for a table with triggers: each row is a delete event."""
    conn = _fresh_db(tmp_path / "d.db")
    with source_on(tmp_path / "d.db") as src:
        w = Writer(conn)
        for k in range(5):
            w.insert(k, {"i": k, "r": k / 3, "t": f"row {k}"})
        w.events += [("d", [k], w._row(k), None) for k in range(5)]
        conn.execute("DELETE FROM v")
        got, _ = read_decoded(src, 0, 10, Codecs(SchemaRegistry()))
    compare(got, w.expected())


def test_a_second_relay_on_the_same_file_decodes_with_the_shapes_the_first_recorded(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT)")
    with source_on(db) as first, source_on(db) as second:
        codecs = Codecs(SchemaRegistry())
        conn.execute("INSERT INTO t VALUES (1, 'x')")
        _, last = read_decoded(second, 0, 1, codecs)
        conn.execute("ALTER TABLE t ADD COLUMN b INTEGER")
        read_decoded(first, last, 0, Codecs(SchemaRegistry()))  # one poll: the first relay re-creates the triggers
        conn.execute("INSERT INTO t VALUES (2, 'y', 5)")
        got, _ = read_decoded(second, last, 1, codecs)
    assert [e[3] for e in got] == [{"id": 2, "a": "y", "b": 5}]


def test_rows_of_a_table_created_after_capture_began_arrive_before_its_triggers_exist(tmp_path: Path) -> None:
    """A table created (and filled) while no relay ran, or between two polls of a running one, has no
    triggers when its first rows are committed: they are logged as inserts when the relay finds it."""
    db = tmp_path / "late.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE first (id INTEGER PRIMARY KEY)")
    with source_on(db):
        pass  # capture begins: the change log exists from here on
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE late (id INTEGER PRIMARY KEY, r REAL, b BLOB, t TEXT)")
    rows = [(1, 0.1, b"\x00\xff", "a"), (2, 1e308, None, None), (3, 5e-324, b"", "ü")]
    conn.executemany("INSERT INTO late VALUES (?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.execute("CREATE TABLE keyless (a TEXT, b INTEGER) ")
    conn.execute("INSERT INTO keyless VALUES ('x', 1), ('x', 1)")  # duplicates: logged twice, by rowid
    with source_on(db) as src:
        got, last = read_decoded(src, 0, 5, Codecs(SchemaRegistry()))
        conn.execute("INSERT INTO late VALUES (4, 2.5, NULL, 'after')")  # from here on, the triggers
        more, _ = read_decoded(src, last, 1, Codecs(SchemaRegistry()))
    inserts = [(e[0], e[3]) for e in got + more]
    assert [op for op, _ in inserts] == ["c"] * 6
    late = [a for a in (e[3] for e in got + more) if a is not None and "r" in a]
    assert [(a["id"], a["r"], a["b"], a["t"]) for a in late] == [*rows, (4, 2.5, None, "after")]
    assert sorted(a["a"] for a in (e[3] for e in got) if a is not None and "a" in a) == ["x", "x"]
    # the first relay's table had no rows; nothing else was logged twice
    assert len(got) == 5


_values = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=40),
    st.sampled_from(TEXTS + BLOBS + DOUBLES + INTEGERS),
)
_rows = st.lists(st.dictionaries(st.sampled_from(COLUMNS), _values, max_size=len(COLUMNS)), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows, _rows)
def test_hypothesis_rows_arrive_exactly(inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
    _check_rows(inserts, updates)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows, _rows)
def test_hypothesis_rows_arrive_exactly_many(inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
    _check_rows(inserts, updates)


def _check_rows(inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "h.db"
        conn = _fresh_db(db)
        with source_on(db) as src:
            w = Writer(conn)
            conn.execute("BEGIN")
            for k, row in enumerate(inserts):
                w.insert(k, {c: v for c, v in row.items() if v is not None or _nullable(c)})
            for k, row in enumerate(updates):
                values = {c: v for c, v in row.items() if v is not None or _nullable(c)}
                if k < len(inserts) and values:
                    w.update(k, values)
            if len(inserts) > 2:
                w.delete(0)
            conn.execute("COMMIT")
            got, _ = read_decoded(src, 0, len(w.events), Codecs(SchemaRegistry()))
        conn.close()
    compare(got, w.expected())


_doubles = st.lists(
    st.floats(allow_nan=False) | st.floats(max_value=1e-300, min_value=-1e-300) | st.sampled_from(DOUBLES),
    min_size=1,
    max_size=400,
)


@settings(max_examples=25, deadline=None)
@given(_doubles)
def test_doubles_arrive_bit_for_bit(values: list[float]) -> None:
    _check_doubles(values)


@pytest.mark.slow
@settings(max_examples=1000, deadline=None)
@given(_doubles)
def test_doubles_arrive_bit_for_bit_many(values: list[float]) -> None:
    _check_doubles(values)


def _check_doubles(values: list[float]) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "f.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("CREATE TABLE f (id INTEGER PRIMARY KEY, r REAL, a)")
        with source_on(db) as src:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO f VALUES (?, ?, ?)", [(i, v, v) for i, v in enumerate(values)])
            conn.execute("COMMIT")
            held = conn.execute("SELECT r, a FROM f ORDER BY id").fetchall()
            got, _ = read_decoded(src, 0, len(values), Codecs(SchemaRegistry()))
        conn.close()
    for (_op, _key, _b, a), (r, any_) in zip(got, held, strict=True):
        assert a is not None
        assert struct.pack(">d", a["r"]) == struct.pack(">d", r)
        assert a["a"] == repr(any_)  # an untyped column: the shortest text of the exact double


# -- through a real relay process ----------------------------------------------------------------------


def _events(windows: list[Any]) -> list[Expected]:
    return [(e.op.value, e.key, e.before, e.after) for w in windows for e in w.events]


def test_relay_delivers_edge_values_and_never_stops_on_a_value_that_does_not_fit(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = _fresh_db(db)
    _relay, url = start_relay(daemons, tmp_path, f"sqlite:///{db}", sqlite={"poll_ms": 10})
    w = Writer(conn)
    # the reported case: text in an INTEGER NOT NULL column stopped capture for every table
    w.insert(1, {"i": "abc", "r": "not a number", "bo": "yes", "t": b"\x00\x01"})
    nxt = write_edges(w, 2)
    w.insert(nxt, {"i": 42})  # a row after all of them still arrives
    want = w.expected()
    compare(_events(collect(url, ["v"], len(want), timeout=60)), want)
    assert want[0][3] is not None and want[0][3]["i"] == "abc" and want[0][3]["r"] == "not a number"


def test_changes_of_a_dropped_table_are_delivered_after_a_restart(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = _fresh_db(db)
    conn.execute("CREATE TABLE gone (id INTEGER PRIMARY KEY, amount NUMERIC(8,2) NOT NULL, r REAL)")
    relay, url = start_relay(daemons, tmp_path, f"sqlite:///{db}", sqlite={"poll_ms": 10})
    conn.execute("INSERT INTO gone VALUES (1, 12.5, 1.7976931348623157e308)")
    conn.execute("INSERT INTO v (id, i) VALUES (1, 1)")
    assert len(_events(collect(url, ["gone", "v"], 2, timeout=30))) == 2
    # altered, written, then dropped while the relay is down: decoded with the shape as of each change
    assert relay.stop() == 0
    conn.execute("ALTER TABLE gone ADD COLUMN note TEXT")
    conn.execute("INSERT INTO gone VALUES (2, 7, -0.5, 'written by the old trigger')")
    conn.execute("DROP TABLE gone")
    conn.execute("INSERT INTO v (id, i) VALUES (2, 2)")
    relay.start()
    relay.wait_http(url + "/healthz", timeout=30)
    got = [(e.table, e.op.value, e.key, e.after) for w in collect(url, ["gone", "v"], 4, timeout=30) for e in w.events]
    assert got == [
        ("gone", "c", [1], {"id": 1, "amount": decimal.Decimal("12.50"), "r": 1.7976931348623157e308}),
        ("v", "c", [1], got[1][3]),
        ("gone", "c", [2], {"id": 2, "amount": decimal.Decimal("7.00"), "r": -0.5}),
        ("v", "c", [2], got[3][3]),
    ]
    assert got[3][3] is not None and got[3][3]["i"] == 2
    # and again after a second restart (the shapes are kept in the database, not in the process)
    assert relay.stop() == 0
    relay.start()
    relay.wait_http(url + "/healthz", timeout=30)
    assert len(_events(collect(url, ["gone", "v"], 4, timeout=30))) == 4


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_headrace_subscribe_prints_strict_json_for_non_finite_floats(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = _fresh_db(db)
    _relay, url = start_relay(daemons, tmp_path, f"sqlite:///{db}", sqlite={"poll_ms": 10})
    conn.execute("INSERT INTO v (id, r, x, j) VALUES (1, ?, ?, 'Infinity')", (math.inf, -math.inf))
    conn.execute("INSERT INTO v (id, r, b, j) VALUES (2, 1.5, x'00ff', '[-Infinity, NaN, 1e999, 2.5]')")
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "subscribe", "--relay", url, "--sources", "v", "--idle-exit", "3"],
        capture_output=True,
        timeout=60,
    )
    lines = [_strict(line) for line in r.stdout.decode().splitlines()]
    assert [e["after"]["id"] for e in lines] == [1, 2], r.stderr.decode()[-2000:]
    assert lines[0]["after"]["r"] == "Infinity" and lines[0]["after"]["x"] == "-inf"
    assert lines[0]["after"]["j"] == "Infinity"
    assert lines[1]["after"]["r"] == 1.5 and lines[1]["after"]["j"] == ["-Infinity", "NaN", "1E+999", 2.5]
    assert base64.b64decode(lines[1]["after"]["b"]) == b"\x00\xff"
