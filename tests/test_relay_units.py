"""Sans-io parts of the relay: event frames, keys and partitions, schema mapping, row codec, buffer,
filters; plus the SQLite source's pruning and the checkpoint stores on real files."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.errors import InvalidInput
from headrace.relay import (
    JSON_NULL,
    ChangeWindow,
    Codecs,
    Column,
    ColumnType,
    Event,
    Op,
    RowChange,
    RowCodec,
    SchemaRegistry,
    TableMeta,
    avro_schema,
    decode_event,
    decode_key,
    encode_event,
    encode_key,
    iter_frames,
    key_partition,
    schema_fingerprint,
    split_windows,
    table_meta_from_sqlalchemy,
)
from headrace.relay._buffer import WINDOW_OVERHEAD, RingBuffer, TooOld
from headrace.relay._codec import EncodedWindow, encode_window
from headrace.relay._config import RelayConfig
from headrace.relay._event import peek_header, with_window_end
from headrace.relay._filter import Filter, parse_filter
from headrace.relay.client import Checkpoint, FileCheckpointStore, SqlCheckpointStore
from headrace.relay.sources.sqlite import SqliteSource

events = st.builds(
    Event,
    scn=st.integers(0, 2**64 - 1),
    source=st.text(min_size=1, max_size=30),
    op=st.sampled_from(list(Op)),
    key=st.binary(max_size=50),
    ts_ms=st.integers(-(2**63), 2**63 - 1),
    fingerprint=st.binary(min_size=8, max_size=8).map(bytes.hex),
    before=st.none() | st.binary(max_size=200),
    after=st.none() | st.binary(max_size=200),
    window_end=st.booleans(),
)


@given(st.lists(events, min_size=1, max_size=10))
def test_event_frames_round_trip(evs: list[Event]) -> None:
    body = b"".join(encode_event(e) for e in evs)
    assert list(iter_frames(body)) == evs
    off = 0
    for e in evs:
        h = peek_header(body, off)
        assert (h.scn, h.source, h.key, h.op, h.window_end) == (e.scn, e.source, e.key, e.op, e.window_end)
        off += h.length


@given(events, st.data())
def test_corrupt_or_cut_frames_are_refused(e: Event, data: st.DataObject) -> None:
    frame = bytearray(encode_event(e))
    i = data.draw(st.integers(4, len(frame) - 1))
    frame[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(InvalidInput):
        decode_event(bytes(frame))
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(InvalidInput):
        decode_event(encode_event(e)[:cut])


def test_window_end_patch_and_split_windows() -> None:
    e = Event(5, "t", Op.INSERT, b"[1]", 0, "00" * 8, None, b"x", False)
    patched, _ = decode_event(with_window_end(encode_event(e)))
    assert patched.window_end and patched.after == b"x"
    with pytest.raises(InvalidInput, match="partial_window"):
        list(split_windows([e]))


def test_keys_are_canonical_and_mod_partitions_cover_each_key_once() -> None:
    assert encode_key([1, "a", decimal.Decimal("1.50"), uuid.UUID(int=1), dt.date(2020, 1, 2), b"\x00"]) == (
        b'[1,"a","1.50","00000000-0000-0000-0000-000000000001","2020-01-02","AA=="]'
    )
    keys = [encode_key([i]) for i in range(2000)]
    for n in (1, 3, 4):
        owners = [[i for i in range(n) if key_partition(k, n) == i] for k in keys]
        assert all(len(o) == 1 for o in owners)
        assert {o[0] for o in owners} == set(range(n))


def test_sqlalchemy_types_map_to_avro() -> None:
    md = sa.MetaData()
    t = sa.Table(
        "orders",
        md,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("small", sa.SmallInteger, nullable=False),
        sa.Column("price", sa.Float),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("loose", sa.Numeric),
        sa.Column("name", sa.String(20)),
        sa.Column("data", sa.LargeBinary),
        sa.Column("ok", sa.Boolean),
        sa.Column("day", sa.Date),
        sa.Column("at", sa.DateTime),
        sa.Column("at_tz", sa.DateTime(timezone=True)),
        sa.Column("clock", sa.Time),
        sa.Column("ref", sa.Uuid),
        sa.Column("doc", sa.JSON),
        sa.Column("odd name", sa.Text),
    )
    meta = table_meta_from_sqlalchemy(t)
    assert meta.key == ("id",)
    schema = avro_schema(meta)
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["id"] == "long" and types["small"] == "int"
    assert types["price"] == ["null", "double"]
    assert types["amount"] == ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}]
    assert types["loose"] == ["null", {"type": "string", "headrace.type": "decimal"}]
    assert types["data"] == ["null", "bytes"] and types["ok"] == ["null", "boolean"]
    assert types["day"] == ["null", {"type": "int", "logicalType": "date"}]
    assert types["at"] == ["null", {"type": "long", "logicalType": "local-timestamp-micros"}]
    assert types["at_tz"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert types["clock"] == ["null", {"type": "long", "logicalType": "time-micros"}]
    assert types["ref"] == ["null", {"type": "string", "logicalType": "uuid"}]
    assert types["doc"] == ["null", {"type": "string", "headrace.type": "json"}]
    assert "odd_name" in types
    parsed = fastavro.parse_schema(schema)
    want = fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    assert schema_fingerprint(schema) == want and len(want) == 16


KINDS: dict[str, Any] = {
    "long": st.integers(-(2**63), 2**63 - 1),
    "double": st.floats(allow_nan=False),
    "decimal": st.decimals(min_value=-(10**9), max_value=10**9, places=2),
    "string": st.text(),
    "bytes": st.binary(),
    "boolean": st.booleans(),
    "date": st.dates(),
    "timestamp": st.datetimes(),
    "uuid": st.uuids(),
    # a JSON column carries the JSON text (a str is text, never a JSON string value)
    "json": st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
}


def _kind_column(k: str) -> Column:
    return Column(k, ColumnType(k, precision=12, scale=2) if k == "decimal" else ColumnType(k))


ROW_META = TableMeta("t", (Column("id", ColumnType("long"), False), *map(_kind_column, KINDS)), ("id",))


@settings(max_examples=150)
@given(st.fixed_dictionaries({"id": st.integers(0, 2**40)}, optional={k: st.none() | s for k, s in KINDS.items()}))
def test_row_codec_round_trips_every_kind(row: dict[str, Any]) -> None:
    codec = RowCodec(SchemaRegistry().register(ROW_META))
    back = codec.decode(codec.encode(row))
    want = {c.name: row.get(c.name) for c in ROW_META.columns}
    if want["json"] is not None:
        want["json"] = json.loads(want["json"])
        want["json"] = JSON_NULL if want["json"] is None else want["json"]
    assert back == want
    assert all(type(back[k]) is type(v) for k, v in want.items() if v is not None)


def test_row_codec_gives_sql_column_names_back_and_passes_plain_rows_through() -> None:
    odd = TableMeta(
        "t", (Column("order id", ColumnType("long"), False), Column("2nd", ColumnType("json"))), ("order id",)
    )
    codec = RowCodec(SchemaRegistry().register(odd))
    assert codec.decode(codec.encode({"order id": 7, "2nd": {"a": [1]}})) == {"order id": 7, "2nd": {"a": [1]}}
    plain = TableMeta("p", (Column("id", ColumnType("long"), False), Column("name", ColumnType("string"))), ("id",))
    codec = RowCodec(SchemaRegistry().register(plain))
    assert codec.decode(codec.encode({"id": 1})) == {"id": 1, "name": None}


def test_registry_versions_persist_and_old_rows_resolve_to_a_newer_reader(tmp_path: Path) -> None:
    v1 = TableMeta("c", (Column("id", ColumnType("long"), False), Column("n", ColumnType("string"))), ("id",))
    v2 = TableMeta("c", (*v1.columns, Column("level", ColumnType("long"))), ("id",))
    reg = SchemaRegistry(tmp_path)
    s1, s2 = reg.register(v1), reg.register(v2)
    assert (s1.version, s2.version) == (1, 2) and s1.fingerprint != s2.fingerprint
    assert reg.register(TableMeta("c", v1.columns, ("id",))).version == 1
    again = SchemaRegistry(tmp_path)
    assert [v.fingerprint for v in again.versions("c")] == [s1.fingerprint, s2.fingerprint]
    old = RowCodec(s1).encode({"id": 1, "n": "x"})
    assert RowCodec(again.get(s1.fingerprint), reader_schema=s2.schema).decode(old) == {
        "id": 1,
        "n": "x",
        "level": None,
    }


_JSON_SCALARS = st.one_of(st.integers(-(2**63), 2**63), st.text(max_size=8), st.booleans(), st.none())


@given(values=st.lists(_JSON_SCALARS, min_size=1, max_size=3))
def test_key_round_trip(values: list[Any]) -> None:
    assert decode_key(encode_key(values)) == values


@given(inner=st.text(alphabet="-+0123456789.e ", max_size=6))
def test_decode_key_fast_path_agrees_with_json(inner: str) -> None:
    import json

    key = f"[{inner}]".encode()
    try:
        expected: Any = json.loads(key)
    except ValueError:
        with pytest.raises(ValueError):
            decode_key(key)
        return
    assert decode_key(key) == expected and [type(v) for v in decode_key(key)] == [type(v) for v in expected]


def test_registry_maps_a_reannounced_equal_table_through_its_identity_fast_path() -> None:
    compared: list[str] = []

    class CountingMeta(TableMeta):  # counts the hash/eq work of the registry's slow path
        def __hash__(self) -> int:
            compared.append("hash")
            return super().__hash__()

    cols = (Column("id", ColumnType("long"), False), Column("n", ColumnType("string")))
    reg = SchemaRegistry()
    first = reg.register(CountingMeta("c", cols, ("id",)))
    again = CountingMeta("c", cols, ("id",))  # equal, another object: a re-sent Relation message
    assert reg.register(again) is first
    compared.clear()
    for _ in range(100):
        assert reg.register(again) is first
    assert compared == [], "every later change of the re-announced table takes the identity fast path"


_TABLE_SETS: dict[str, frozenset[str]] = {}


def _window(scn: int, n: int = 1, size: int = 10, table: str = "t") -> EncodedWindow:
    data = b"".join(
        encode_event(
            Event(
                scn - n + 1 + i,
                table,
                Op.INSERT,
                encode_key([scn * 10 + i]),
                0,
                "00" * 8,
                None,
                b"x" * size,
                i == n - 1,
            )
        )
        for i in range(n)
    )
    return EncodedWindow(scn, scn - n + 1, 0, n, data, _TABLE_SETS.setdefault(table, frozenset({table})))


def test_buffer_keeps_whole_windows_within_its_bound_and_finds_by_scn() -> None:
    w = _window(1, size=2000)
    cost = len(w.data) + WINDOW_OVERHEAD
    buf = RingBuffer(cost * 10 + cost // 2, start_scn=0)
    for scn in range(1, 101):
        buf.append(_window(scn, size=2000))
        assert buf.bytes <= buf.capacity
    assert len(buf) == 10 and buf.oldest_scn == 90 and buf.newest_scn == 100
    assert buf.measured_bytes() <= buf.capacity * 1.1
    for since in range(90, 101):
        assert buf.first_after(since) == since - 90
    with pytest.raises(TooOld) as exc:
        buf.read(89, 1 << 20)
    assert exc.value.oldest_scn == 90
    res = buf.read(95, 1)  # at least one whole window, even past max_bytes
    assert res.windows == 1 and res.scn == 96
    res = buf.read(90, 1 << 20)
    assert [e.scn for e in iter_frames(res.data)] == list(range(91, 101)) and res.scn == 100
    assert buf.read(100, 1 << 20).data == b""
    buf.append(_window(200, size=cost * 20))  # larger than the whole buffer: a gap
    assert len(buf) == 0 and buf.oldest_scn == 200


def test_filters_patch_the_window_end_and_report_scan_position() -> None:
    buf = RingBuffer(1 << 20)
    buf.append(_window(4, n=4, table="a"))
    buf.append(_window(8, n=4, table="b"))
    f = Filter(sources=frozenset({"a"}), mod=(2, 0))
    res = buf.read(0, 1 << 20, f)
    evs = list(iter_frames(res.data))
    want = [s for s in range(1, 5) if key_partition(encode_key([4 * 10 + s - 1]), 2) == 0]
    assert [e.scn for e in evs] == want and evs[-1].window_end
    assert res.scn == 8  # window 8 was scanned and filtered out
    assert buf.read(0, 1 << 20, parse_filter("range:82:84")).events == 2


@pytest.mark.parametrize("text", ["mod:0:0", "mod:2:2", "mod:2", "mod:a:b", "range", "other:1"])
def test_bad_filters_say_why(text: str) -> None:
    with pytest.raises(InvalidInput, match="bad_filter"):
        parse_filter(text)


def test_encode_window_marks_the_last_event_and_drops_oversize_windows() -> None:
    meta = TableMeta("t", (Column("id", ColumnType("long"), False),), ("id",))
    changes = [RowChange(i, meta, Op.INSERT, (i,), None, {"id": i}) for i in range(1, 4)]
    codecs = Codecs(SchemaRegistry())
    ew = encode_window(ChangeWindow(3, 0, iter(changes)), codecs)
    assert ew is not None and [e.window_end for e in iter_frames(ew.data)] == [False, False, True]
    big = encode_window(ChangeWindow(3, 0, iter(changes)), codecs, limit=10)
    assert big is not None and big.count == 3 and big.data == b""
    assert encode_window(ChangeWindow(3, 0, []), codecs) is None


def test_sqlite_prunes_only_acknowledged_and_old_changes_at_window_ends(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    cfg = RelayConfig(source=f"sqlite:///{db}", sqlite={"poll_ms": 5, "retention_seconds": 0})
    src = SqliteSource(cfg)
    src.open()
    src.open()  # idempotent
    for i in range(10):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, 'x')", (i,))
        conn.execute("INSERT INTO t VALUES (?, 'y')", (100 + i,))
        conn.execute("COMMIT")
    stop = threading.Event()
    got: list[ChangeWindow] = []
    for w in src.read(None, stop):
        if w is not None:
            got.append(w)
        elif got and got[-1].scn == 20:
            break
    assert all(len(list(w.changes)) % 2 == 0 for w in got), "a window split a transaction"
    src.acknowledge(6)
    pruned = src.prune(now_ms=int(time.time() * 1000) + 1000)  # only at a window end ≤ the acknowledged SCN
    assert pruned == max([w.scn for w in got if w.scn <= 6], default=0)
    assert conn.execute("SELECT min(scn) FROM headrace_changes").fetchall()[0][0] == pruned + 1
    assert src.start_scn() == pruned
    src.acknowledge(None)  # no durable consumer: retention (0 s here) alone decides
    assert src.prune(now_ms=int(time.time() * 1000) + 1000) == 20
    assert conn.execute("SELECT count(*) FROM headrace_changes").fetchall()[0][0] == 0
    src.uninstall()
    src.close()


def test_checkpoint_stores_round_trip(tmp_path: Path) -> None:
    fs = FileCheckpointStore(tmp_path / "cp" / "sub.json")
    assert fs.load() is None
    fs.save(Checkpoint(42))
    fs.save(Checkpoint(43, "snapshot", {"key": [5]}))
    assert fs.load() == Checkpoint(43, "snapshot", {"key": [5]})
    assert [p.name for p in (tmp_path / "cp").iterdir()] == ["sub.json"]
    ss = SqlCheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", "sub-a")
    assert ss.load() is None
    ss.save(Checkpoint(7))
    ss.save(Checkpoint(9))
    assert SqlCheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", "sub-a").load() == Checkpoint(9)
    assert SqlCheckpointStore(f"sqlite:///{tmp_path / 'cp.db'}", "sub-b").load() is None


def test_sqlite_streams_a_window_too_large_to_read_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import headrace.relay.sources.sqlite as sq

    monkeypatch.setattr(sq, "LARGE_WINDOW_ROWS", 50)
    db = tmp_path / "a.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    src = SqliteSource(RelayConfig(source=f"sqlite:///{db}", sqlite={"poll_ms": 5}))
    src.open()
    for i in range(10):  # written while no relay ran: no cut between these transactions
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i * 10 + j,) for j in range(10)])
        conn.execute("COMMIT")
    stop = threading.Event()
    for w in src.read(None, stop):
        if w is not None:
            assert not isinstance(w.changes, list)  # a generator: not held in memory
            assert w.scn == 100 and [c.scn for c in w.changes] == list(range(1, 101))
            break
    src.close()


def test_an_update_that_moves_a_row_to_another_key_deletes_the_old_key_first() -> None:
    from headrace.relay import ChangeWindow, Codecs, Op, RowChange, decode_key, iter_frames
    from headrace.relay._codec import encode_window

    meta = TableMeta("acc", (Column("id", ColumnType("long"), False), Column("v", ColumnType("string"))), ("id",))
    moved = RowChange(9, meta, Op.UPDATE, (2,), {"id": 1, "v": "a"}, {"id": 2, "v": "a"})
    same = RowChange(9, meta, Op.UPDATE, (2,), {"id": 2, "v": "a"}, {"id": 2, "v": "b"})
    no_before = RowChange(9, meta, Op.UPDATE, (2,), None, {"id": 2, "v": "c"})
    ew = encode_window(ChangeWindow(9, 0, [moved, same, no_before]), Codecs(SchemaRegistry()))
    assert ew is not None and ew.count == 4
    frames = list(iter_frames(ew.data))
    assert [(f.op, decode_key(f.key)) for f in frames] == [
        (Op.DELETE, [1]),
        (Op.UPDATE, [2]),
        (Op.UPDATE, [2]),
        (Op.UPDATE, [2]),
    ]
    assert frames[0].before == frames[1].before and frames[0].after is None  # the old row, as the update has it
    assert [f.window_end for f in frames] == [False, False, False, True]
