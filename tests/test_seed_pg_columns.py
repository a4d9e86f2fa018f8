"""Seeding PostgreSQL a column at a time (headrace.bootstrap._seed_pgfast, relay.sources._pgcolumns)
against the reference path (PgSnapshot.pages parsing each row, the relay's codec encoding it): the
same store operations — keys, sort keys and ``r`` frames byte for byte — on the snapshot test's edge
rows and on generated rows of every PostgreSQL type the relay supports, through a private PostgreSQL;
and a whole seed gives the same store either way."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from db_servers import PgServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sources_pg_snapshot import ROWS, SCHEMA, TABLES

from headrace.bootstrap import _seed_pgfast
from headrace.bootstrap._apply import read_frames
from headrace.bootstrap._seed_pg import seed_postgres
from headrace.bootstrap._seed_source import read_ops
from headrace.bootstrap._store import Store
from headrace.relay import Codecs, Op, SchemaRegistry
from headrace.relay._config import RelayConfig
from headrace.relay._event import decode_event, encode_key
from headrace.relay.sources import RowChange
from headrace.relay.sources._pgcolumns import PageEncoder
from headrace.relay.sources._pgsnapshot import PgSnapshot, parse_rows
from headrace.relay.sources.postgres import PostgresSource

pytestmark = pytest.mark.postgres


def _compare(snap: PgSnapshot, table: str, page_rows: int) -> int:
    """Encode every page of ``table`` both ways; assert the same operations (or both failing). Rows seen."""
    codecs = Codecs(SchemaRegistry())
    meta = next(m for m in snap.tables if m.name == table)
    parsers = snap.parsers(table)
    codec = codecs.for_change(RowChange(snap.start_scn, meta, Op.READ, (), None, {}))
    fields = codec.version.schema["fields"]
    encs = [PageEncoder(meta, parsers, fields, snap.types(table)), PageEncoder(meta, parsers, fields)]
    assert encs[0].fused >= encs[1].fused
    seen = 0
    for scn, raw, _done in snap.raw_pages(table, page_rows):
        seen += len(raw)
        for enc in encs:
            try:
                ref = read_ops(codecs, table, scn, parse_rows(meta, scn, parsers, raw))
            except Exception as exc:  # the reference refuses: the fast path must not produce anything else
                with pytest.raises(Exception):  # noqa: B017
                    _seed_pgfast._encode_page(enc, table, scn, codec.version.fingerprint, raw)
                print("both refused:", exc)
                continue
            fast = _seed_pgfast._encode_page(enc, table, scn, codec.version.fingerprint, raw)
            assert fast == ref, [(a, b) for a, b in zip(fast, ref, strict=False) if a != b][:1]
    return seen


def test_snapshot_edge_rows_encode_the_same_a_column_at_a_time(pg_server: PgServer) -> None:
    db = pg_server.create_database("pgcols_edge")
    pg_server.execute(SCHEMA, db)
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        for sql in ROWS:
            cur.execute(sql)
    src = PostgresSource(
        RelayConfig(source=pg_server.url(db), tables=TABLES, postgres={"slot": "c", "publication": "c"})
    )
    src.open()
    try:
        with src.snapshot(TABLES) as snap:
            assert isinstance(snap, PgSnapshot)
            for table in TABLES:
                for page_rows in (1, 3, 100):
                    assert _compare(snap, table, page_rows) > 0
    finally:
        src.close()


def _seeded(store_path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(store_path)) as c:
        return c.execute("SELECT source, sort_key, scn, frame FROM headrace_boot_snapshot ORDER BY 1, 2").fetchall()


def test_a_seed_stores_the_same_rows_either_way(pg_server: PgServer, tmp_path: Path, monkeypatch: Any) -> None:
    db = pg_server.create_database("pgcols_seed")
    pg_server.execute(SCHEMA, db)
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        for sql in ROWS:
            cur.execute(sql)
        cur.execute("INSERT INTO t_idx SELECT g, 'c' || g, g FROM generate_series(3, 500) g")
    url = pg_server.url(db)
    src = PostgresSource(RelayConfig(source=url, tables=TABLES, postgres={"slot": "s", "publication": "s"}))
    src.open()
    src.close()
    stored = {}
    for enabled in (True, False):
        monkeypatch.setattr(_seed_pgfast, "ENABLED", enabled)
        path = tmp_path / f"boot-{enabled}.db"
        store = Store(f"sqlite:///{path}")
        state = seed_postgres(store, url, TABLES, 7, relay_slot="s", publication="s")
        store.close()
        assert state["done"] and state["rows"] == 4 + 2 + 500 + 1
        rows = _seeded(path)
        assert len(rows) == state["rows"] and {r[2] for r in rows} == {state["start_scn"]}
        # each seed has its own snapshot (SCN): the frames as if read at SCN 1, to compare byte for byte
        stored[enabled] = [(s, k, _at_scn_1(f)) for s, k, _scn, f in rows]
    assert stored[True] == stored[False]


def _at_scn_1(frame: bytes) -> bytes:
    e, _ = decode_event(frame)
    assert e.op is Op.READ and e.before is None and e.ts_ms == 0
    [again] = read_frames(e.scn, e.source, [e.fingerprint], [e.key], [e.after])
    assert again == frame
    [out] = read_frames(1, e.source, [e.fingerprint], [e.key], [e.after])
    return out


# -- generated rows of every type ----------------------------------------------------------------

GEN_SCHEMA = """
CREATE TYPE hmood AS ENUM ('sad', 'ok', 'very happy', 'ü ''quoted''');
CREATE DOMAIN hpos AS bigint CHECK (VALUE > 0);
CREATE TABLE th (
    id bigint PRIMARY KEY, i2 smallint, i4 int, i8 bigint, o oid, f4 real, f8 double precision,
    n numeric, n2 numeric(12, 2), n40 numeric(40, 20), nneg numeric(5, -2), b boolean, t text, tnn text NOT NULL,
    inn int NOT NULL, vc varchar(20), ch char(4), nm name, qc "char", by bytea, d date, tm time, ts timestamp,
    tstz timestamptz, iv interval, u uuid, j json, jb jsonb, ia int[], ba bigint[], ta text[], na numeric(6, 2)[],
    fa double precision[], da date[], tsa timestamptz[], ua uuid[], ja jsonb[], m hmood, ma hmood[], dom hpos,
    ip inet, pt point
);
CREATE TABLE tk (k text, d date, u uuid, v int, PRIMARY KEY (k, d, u));
"""

_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=40)
_SPECIAL_DATES = ["infinity", "-infinity", "0044-03-15 BC", "4713-01-01 BC", "10000-01-01", "5874897-12-31"]
_SPECIAL_TS = ["infinity", "-infinity", "0001-01-01 00:00:00 BC", "294276-12-31 23:59:59.999999", "10000-01-01 00:00"]


def _lit(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), s)


def _decimal(p: int, s: int) -> st.SearchStrategy[str]:
    return st.decimals(
        min_value=-(10 ** (p - s)) + 1, max_value=10 ** (p - s) - 1, places=max(s, 0), allow_nan=False
    ).map(str)


_TS = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
_OFFSET = st.integers(-15 * 60, 15 * 60).map(lambda m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}")
_TSTZ = st.one_of(
    st.builds(lambda t, o: f"{t.isoformat(' ')}{o}", _TS, _OFFSET),
    st.sampled_from([*_SPECIAL_TS, "0001-01-01 00:30:00+01", "9999-12-31 23:30:00-01"]),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_TEXT, kids, max_size=3),
    max_leaves=8,
)
_INTERVAL = st.builds(
    lambda y, mo, d, h, mi, s: f"{y} years {mo} mons {d} days {h} hours {mi} mins {s} secs",
    st.integers(-1000, 1000), st.integers(-20, 20), st.integers(-400, 400), st.integers(-100, 100),
    st.integers(-100, 100), st.decimals(-100, 100, places=6, allow_nan=False).map(str),
)  # fmt: skip
_I8 = st.integers(-(2**63), 2**63 - 1)
_NUMERIC = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0.000000000000000000000000000001", "1e300", "-0.0"]),
)
_FLOAT = st.floats().map(
    lambda f: "NaN" if f != f else ("Infinity" if f == float("inf") else repr(f).replace("inf", "Infinity"))
)
_FLOAT4 = st.floats(width=32).map(
    lambda f: "NaN" if f != f else ("Infinity" if f == float("inf") else repr(f).replace("inf", "Infinity"))
)

COLUMNS: list[tuple[str, str, st.SearchStrategy[Any]]] = [
    ("i2", "smallint", _lit(st.integers(-(2**15), 2**15 - 1))),
    ("i4", "int", _lit(st.integers(-(2**31), 2**31 - 1))),
    ("i8", "bigint", _lit(_I8)),
    ("o", "oid", _lit(st.integers(0, 2**32 - 1))),
    ("f4", "real", _lit(_FLOAT4)),
    ("f8", "double precision", _lit(_FLOAT)),
    ("n", "numeric", _lit(_NUMERIC)),
    ("n2", "numeric(12, 2)", _lit(st.one_of(_decimal(12, 2), st.just("NaN")))),
    ("n40", "numeric(40, 20)", _lit(st.one_of(_decimal(40, 20), st.just("NaN")))),
    ("nneg", "numeric(5, -2)", _lit(st.integers(-9_999_949, 9_999_949).map(str))),
    ("b", "boolean", _lit(st.booleans())),
    (
        "t",
        "text",
        _lit(
            st.one_of(_TEXT, st.builds(lambda a, n: a * n, st.sampled_from(["a", "€", "x🎉"]), st.integers(2700, 8300)))
        ),
    ),
    ("tnn", "text", _TEXT),
    ("inn", "int", st.integers(-(2**31), 2**31 - 1)),
    (
        "vc",
        "varchar(20)",
        _lit(st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)),
    ),
    ("ch", "char(4)", _lit(st.text("ab c", max_size=4))),
    ("nm", "name", _lit(st.text("xyz_", max_size=10))),
    ("qc", '"char"', _lit(st.sampled_from(["a", "Z", "!"]))),
    (
        "by",
        "bytea",
        _lit(
            st.one_of(
                st.binary(max_size=40),
                st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=3), st.integers(2800, 8300)),
            )
        ),
    ),
    ("d", "date", _lit(st.one_of(st.dates().map(str), st.sampled_from(_SPECIAL_DATES)))),
    ("tm", "time", _lit(st.one_of(st.times().map(str), st.just("24:00:00")))),
    ("ts", "timestamp", _lit(st.one_of(_TS.map(lambda t: t.isoformat(" ")), st.sampled_from(_SPECIAL_TS)))),
    ("tstz", "timestamptz", _lit(_TSTZ)),
    ("iv", "interval", _lit(_INTERVAL)),
    ("u", "uuid", _lit(st.uuids().map(str))),
    ("j", "json", _lit(_JSON.map(json.dumps))),
    ("jb", "jsonb", _lit(_JSON.map(json.dumps))),
    ("ia", "int[]", _lit(st.lists(_lit(st.integers(-(2**31), 2**31 - 1)), max_size=4))),
    (
        "ba",
        "bigint[]",
        _lit(st.one_of(st.lists(_lit(_I8), max_size=4), st.just("{{1,2},{3,4}}"), st.just("[0:1]={7,8}"))),
    ),
    ("ta", "text[]", _lit(st.lists(_lit(_TEXT), max_size=4))),
    ("na", "numeric(6, 2)[]", _lit(st.lists(_lit(st.one_of(_decimal(6, 2), st.just("NaN"))), max_size=3))),
    ("fa", "double precision[]", _lit(st.lists(_lit(_FLOAT), max_size=3))),
    ("da", "date[]", _lit(st.lists(_lit(st.one_of(st.dates().map(str), st.sampled_from(_SPECIAL_DATES))), max_size=3))),
    ("tsa", "timestamptz[]", _lit(st.lists(_lit(_TSTZ), max_size=3))),
    ("ua", "uuid[]", _lit(st.lists(_lit(st.uuids().map(str)), max_size=3))),
    ("ja", "jsonb[]", _lit(st.lists(_lit(_JSON.map(json.dumps)), max_size=3))),
    ("m", "hmood", _lit(st.sampled_from(["sad", "ok", "very happy", "ü 'quoted'"]))),
    ("ma", "hmood[]", _lit(st.lists(_lit(st.sampled_from(["sad", "very happy", "ü 'quoted'"])), max_size=3))),
    ("dom", "hpos", _lit(st.integers(1, 2**63 - 1))),
    ("ip", "inet", _lit(st.ip_addresses().map(str))),
    ("pt", "point", _lit(st.tuples(st.integers(-9, 9), st.integers(-9, 9)).map(lambda p: f"({p[0]},{p[1]})"))),
]

_ROW = st.fixed_dictionaries({name: s for name, _t, s in COLUMNS})
_KROW = st.tuples(
    _TEXT, st.one_of(st.dates().map(str), st.sampled_from(_SPECIAL_DATES)), st.uuids(), _lit(st.integers(0, 9))
)


def _param(v: Any) -> Any:
    if isinstance(v, bytes):
        return psycopg2.Binary(v)
    if isinstance(v, list):
        return [_param(x) for x in v]
    return v


@pytest.fixture(scope="module")
def gen_db(pg_server: PgServer) -> Any:
    db = pg_server.create_database("pgcols_gen")
    pg_server.execute(GEN_SCHEMA, db)
    src = PostgresSource(
        RelayConfig(source=pg_server.url(db), tables=["th", "tk"], postgres={"slot": "g", "publication": "g"})
    )
    src.open()
    conn = pg_server.connect(db)
    try:
        yield src, conn
    finally:
        conn.close()
        src.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=st.lists(st.tuples(_I8, _ROW), min_size=1, max_size=6, unique_by=lambda r: r[0]),
    krows=st.lists(_KROW, max_size=4, unique_by=lambda r: (r[0], r[1], r[2])),
    page_rows=st.sampled_from([1, 2, 5]),
)
def test_generated_rows_of_every_type_encode_the_same_a_column_at_a_time(
    gen_db: Any, rows: list[tuple[int, dict[str, Any]]], krows: list[tuple[Any, ...]], page_rows: int
) -> None:
    src, conn = gen_db
    names = [n for n, _t, _s in COLUMNS]
    casts = ", ".join(f"(%s)::{t}" for _n, t, _s in COLUMNS)
    with conn.cursor() as cur:
        cur.execute("TRUNCATE th, tk")
        for key, row in rows:
            cur.execute(
                f"INSERT INTO th (id, {', '.join(names)}) VALUES (%s, {casts})", [key, *(_param(row[n]) for n in names)]
            )
        for k, d, u, v in krows:
            cur.execute("INSERT INTO tk VALUES (%s, %s::date, %s, %s)", (k, d, str(u), v))
    with src.snapshot(["th", "tk"]) as snap:
        assert isinstance(snap, PgSnapshot)
        assert _compare(snap, "th", page_rows) == len(rows)
        assert _compare(snap, "tk", page_rows) == len(krows)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "uuid"), ("{a0eebc999c0b4ef8bb6d6bb9bd380a11}", "uuid")],
)
def test_non_canonical_uuid_text_takes_the_parser(value: str, kind: str) -> None:
    """PostgreSQL prints only canonical UUIDs; any other text still encodes as ``str(UUID(text))``."""
    from headrace.relay._schema import Column, ColumnType, TableMeta

    meta = TableMeta("x", (Column("id", ColumnType("long"), False), Column("u", ColumnType(kind))), ("id",))
    codecs = Codecs(SchemaRegistry())
    codec = codecs.for_change(RowChange(1, meta, Op.READ, (), None, {}))
    enc = PageEncoder(meta, [int, uuid.UUID], codec.version.schema["fields"])
    _keys, afters, _nums = enc.encode([("1", value)])
    assert afters == [codec.encode({"id": 1, "u": uuid.UUID(value)})]
    assert decimal.Decimal  # (imported for the generated strategies)


# -- the fused encoders on any text (PostgreSQL prints only its canonical forms; others must agree too) --

_DIGITS = st.text("0123456789", min_size=1, max_size=45)


@st.composite
def _numeric_case(draw: st.DrawFn) -> tuple[int, int, str]:
    p = draw(st.integers(1, 45))
    s = draw(st.integers(0, p))
    text = draw(
        st.one_of(
            st.builds(
                lambda sign, i, f: f"{sign}{i}.{f}" if s else f"{sign}{i}",
                st.sampled_from(["", "-"]),
                _DIGITS,
                st.text("0123456789", min_size=s, max_size=s),
            ),
            st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "0", "1e5", " 1", "1.", ".5", "+1"]),
            _DIGITS.map(lambda d: d[:1] + "." + d[1:]),
        )
    )
    return p, s, text


@settings(max_examples=400, deadline=None)
@given(
    case=_numeric_case(),
    ts=st.one_of(
        _TS.map(lambda t: t.isoformat(" ") + "+00"),
        st.builds(lambda t, o: f"{t.isoformat(' ')}{o}", _TS, _OFFSET),
        st.sampled_from([*_SPECIAL_TS, "2020-01-01 00:00:00+00 BC", "2020-13-01 00:00:00+00", "2020-01-01T00:00+00"]),
    ),
    i8=st.one_of(_I8.map(str), st.integers(-(2**70), 2**70).map(str), st.sampled_from(["+5", " 7", "0x10", "1_0"])),
    f8=st.one_of(_FLOAT, st.sampled_from(["nan", "-inf", "1e400", "-0", "1_0"])),
    b=st.sampled_from(["t", "f", "true", ""]),
    nullable=st.booleans(),
)
def test_fused_encoders_agree_with_the_reference_on_any_text(
    case: tuple[int, int, str], ts: str, i8: str, f8: str, b: str, nullable: bool
) -> None:
    from decimal import Decimal

    from headrace.relay.sources._pgtypes import resolve_type

    p, s, num = case
    kinds = [(20, -1, "long"), (1700, ((p << 16) | s) + 4, "n"), (1184, -1, "tstz"), (701, -1, "f8"), (700, -1, "f4")]
    types = [resolve_type(oid, mod) for oid, mod, _n in kinds] + [resolve_type(16, -1)]
    from headrace.relay._schema import Column, TableMeta
    from headrace.relay.sources._pgtypes import column_type

    cols = [Column("id", column_type(types[0]), False)]
    cols += [Column(n, column_type(t), nullable) for (_o, _m, n), t in zip(kinds[1:], types[1:-1], strict=True)]
    cols.append(Column("b", column_type(types[-1]), nullable))
    meta = TableMeta("x", tuple(cols), ("id",))
    parsers = [t.parse for t in types]
    assert parsers[1] is Decimal
    codecs = Codecs(SchemaRegistry())
    codec = codecs.for_change(RowChange(1, meta, Op.READ, (), None, {}))
    enc = PageEncoder(meta, parsers, codec.version.schema["fields"])
    assert enc.fused == len(cols)
    for raw in [(i8, num, ts, f8, f8, b), ("1", None, None, None, None, None)]:
        try:
            values = {c.name: None if v is None else prs(v) for c, prs, v in zip(cols, parsers, raw, strict=True)}
            want = (encode_key([values["id"]]), codec.encode(values))
        except Exception:
            with pytest.raises(Exception):  # noqa: B017
                enc.encode([raw])
            continue
        try:
            keys, afters, _nums = enc.encode([raw])
        except Exception:  # allowed: the page then takes the reference path (PostgreSQL's own text never does)
            continue
        assert (keys[0], afters[0]) == want


@given(st.one_of(_I8, st.integers(-(2**70), 2**70)))
def test_varint_is_the_writers_long(n: int) -> None:
    from headrace.relay._avrofast import write_long
    from headrace.relay.sources._pgcolumns import _varint

    try:
        want = bytes(write_long(n))
    except OverflowError:
        with pytest.raises(OverflowError):
            _varint(n)
        return
    assert _varint(n) == want


def test_prefetched_reads_ahead_in_one_thread_and_stops_with_its_caller() -> None:
    import threading

    from headrace._prefetch import prefetch

    def prefetched(items: Any) -> Any:
        return prefetch(items, 1, "headrace-seed-prefetch")

    seen: list[tuple[str, int]] = []
    closed: list[str] = []

    def pages(n: int, fail_at: int | None = None) -> Any:
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError("boom")
                seen.append((threading.current_thread().name, i))
                yield i
        finally:
            closed.append(threading.current_thread().name)

    assert list(prefetched(pages(5))) == [0, 1, 2, 3, 4]
    assert {name for name, _i in seen} == {"headrace-seed-prefetch"} and closed == ["headrace-seed-prefetch"]

    with pytest.raises(ValueError, match="boom"):
        list(prefetched(pages(5, fail_at=3)))

    closed.clear()
    it = prefetched(pages(1000))
    assert next(it) == 0
    it.close()  # the caller stops early: the thread stops, closes the pages itself, and is waited for
    assert closed == ["headrace-seed-prefetch"]
    assert not [t for t in threading.enumerate() if t.name == "headrace-seed-prefetch"]


class _StopAfter:
    """A stop flag that is set after ``n`` checks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


def test_a_seed_stopped_mid_table_leaves_no_reader_behind(pg_server: PgServer, tmp_path: Path) -> None:
    import threading

    db = pg_server.create_database("pgcols_stop")
    pg_server.execute("CREATE TABLE big (id int PRIMARY KEY, v text)", db)
    pg_server.execute("INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 2000) g", db)
    url = pg_server.url(db)
    src = PostgresSource(RelayConfig(source=url, tables=["big"], postgres={"slot": "st", "publication": "st"}))
    src.open()
    src.close()
    store = Store(f"sqlite:///{tmp_path / 'boot.db'}")
    try:
        state = seed_postgres(store, url, ["big"], 100, _StopAfter(4), relay_slot="st", publication="st")
        assert not state.get("done") and 0 < state["rows"] < 2000
        assert not [t for t in threading.enumerate() if t.name == "headrace-seed-prefetch"]
        state = seed_postgres(store, url, ["big"], 100, relay_slot="st", publication="st", reason="seed_interrupted")
        assert state["done"] and state["rows"] == 2000
    finally:
        store.close()
    temp = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'st_seed'"
    assert pg_server.execute(temp, db) == [(0,)]
