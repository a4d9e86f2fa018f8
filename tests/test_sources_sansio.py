"""The sans-io cores of the PostgreSQL and MySQL sources, without a server: SCN packing, MySQL type
mapping, the binlog transaction assembler and its spill buffer, pgoutput transaction assembly
(skip-after-reconnect, TOAST marking), and the retention marks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.relay import Op
from headrace.relay.sources._mysqlstream import BinlogAssembler, SpillBuffer, TableInfo, binlog_index
from headrace.relay.sources._mysqltypes import mysql_column, pack_scn, unpack_scn
from headrace.relay.sources._pgoutput import UNCHANGED, Begin, Column, Commit, Delete, Insert, Message, Relation, Update
from headrace.relay.sources._pgstream import UNCHANGED_COLUMN, PgChangeAssembler, RelationCatalog, TxnBegin, TxnEnd
from headrace.relay.sources._retention import ReadMarks


def test_scn_packing_orders_like_the_binlog() -> None:
    positions = [(1, 4), (1, 1_000_000), (2, 4), (2, 5), (41, 2**32 - 1), (42, 4)]
    scns = [pack_scn(f, p) for f, p in positions]
    assert scns == sorted(scns) and len(set(scns)) == len(scns)
    assert [unpack_scn(s) for s in scns] == positions
    assert pack_scn(42, 1234) == 42 * 2**32 + 1234
    with pytest.raises(ValueError):
        pack_scn(1, 2**32)
    assert binlog_index("mysql-bin.000042") == 42
    with pytest.raises(ValueError):
        binlog_index("binlog")


def col(name: str, data_type: str, column_type: str, nullable: str = "YES", p: int | None = None, s: int | None = None):  # type: ignore[no-untyped-def]
    return mysql_column(
        {"COLUMN_NAME": name, "DATA_TYPE": data_type, "COLUMN_TYPE": column_type, "IS_NULLABLE": nullable,
         "NUMERIC_PRECISION": p, "NUMERIC_SCALE": s}
    )  # fmt: skip


def test_mysql_type_mapping() -> None:
    b = col("b", "tinyint", "tinyint(1)")  # BOOLEAN holds -128..127: other values travel as their text
    assert b.column.type.kind == "boolean" and b.convert(1) is True and b.convert("0") is False
    assert b.convert(2) == "2" and b.convert(-128) == "-128"
    assert col("i", "int", "int(11) unsigned").column.type.kind == "long"
    assert col("i", "int", "int(11)").column.type.kind == "int"
    ubi = col("u", "bigint", "bigint(20) unsigned")
    assert (ubi.column.type.kind, ubi.column.type.precision) == ("decimal", 20)
    assert ubi.convert(2**64 - 1) == Decimal(2**64 - 1)
    d = col("d", "decimal", "decimal(12,3)", p=12, s=3)
    assert (d.column.type.precision, d.column.type.scale) == (12, 3)
    e = col("e", "enum", "enum('Sad','it''s ok')", "NO")
    assert e.column.type.symbols == ("Sad", "it's ok") and not e.column.nullable
    s = col("s", "set", "set('a','b','c')")
    assert s.convert({"c", "a"}) == "a,c" and s.column.type.kind == "string"
    t = col("t", "time", "time(6)")
    assert t.column.type.kind == "duration"
    assert t.convert(dt.timedelta(hours=-838)) == dt.timedelta(hours=-838)
    with pytest.raises(ValueError):
        t.convert("not a time")
    ts = col("ts", "timestamp", "timestamp(3)")
    assert ts.convert(dt.datetime(2024, 1, 1)) == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert col("bi", "bit", "bit(8)", p=8).convert(b"\x05") == 5 and col("bi", "bit", "bit(8)", p=8).convert(5) == 5
    j = mysql_column(
        {"COLUMN_NAME": "j", "DATA_TYPE": "longtext", "COLUMN_TYPE": "longtext", "IS_NULLABLE": "YES",
         "NUMERIC_PRECISION": None, "NUMERIC_SCALE": None},
        json_columns=frozenset({"j"}),
    )  # fmt: skip
    assert j.column.type.kind == "json" and j.convert('{"a": [1.50]}') == '{"a": [1.50]}'  # the text, exactly
    assert col("x", "geometry", "geometry").column.type.kind == "bytes"


def _info(table: str) -> TableInfo:
    cols = {
        "id": col("id", "int", "int(11)", "NO"),
        "v": col("v", "varchar", "varchar(10)"),
    }
    return TableInfo(table, cols, ("id",))


@settings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from([Op.INSERT, Op.DELETE]),
    rows=st.lists(
        st.fixed_dictionaries({"id": st.integers(-(2**31), 2**31 - 1), "v": st.none() | st.text(max_size=5)}),
        min_size=2,
        max_size=6,
    ),
    gone=st.booleans(),
)
def test_binlog_assembler_event_rows_equal_rows_one_by_one(op: Op, rows: list[dict[str, Any]], gone: bool) -> None:
    """The per-event fast path of ``rows`` (one metadata lookup) gives what converting row by row gives."""
    if gone:  # a column information_schema no longer has (travels as text)
        rows = [{**r, "old": r["id"]} for r in rows]
    images = [{"values": r} for r in rows]
    fast, slow = BinlogAssembler(_info, "db"), BinlogAssembler(_info, "db")
    fast.rows(op, "t", images)
    for image in images:
        slow.rows(op, "t", [image])
    a, b = fast.commit(100, 1), slow.commit(100, 1)
    assert a is not None and b is not None
    assert [(c.op, c.key, c.before, c.after, c.table) for c in a.changes] == [
        (c.op, c.key, c.before, c.after, c.table) for c in b.changes
    ]


def test_binlog_assembler_windows_spill_and_skip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    asm = BinlogAssembler(_info, "db", spill_rows=3, spill_dir=str(tmp_path))
    asm.rotate("binlog.000007")
    asm.begin("0-1-5")
    asm.rows(Op.INSERT, "t", [{"values": {"id": i, "v": f"r{i}"}} for i in range(10)])
    asm.rows(Op.UPDATE, "t", [{"before_values": {"id": 1, "v": "r1"}, "after_values": {"id": 1, "v": b"x"}}])
    asm.rows(Op.DELETE, "t", [{"values": {"id": 2, "v": None}}])
    assert asm.in_transaction
    txn = asm.commit(900, 1_700_000_000)
    assert txn is not None and not asm.in_transaction
    assert txn.scn == pack_scn(7, 900) and txn.ts_ms == 1_700_000_000_000 and txn.gtid == "0-1-5"
    assert txn.changes.buf.spilled and txn.changes.count == 12
    changes = list(txn.changes)
    assert [c.op for c in changes] == [Op.INSERT] * 10 + [Op.UPDATE, Op.DELETE]
    assert [c.key for c in changes][:3] == [(0,), (1,), (2,)]
    assert {c.scn for c in changes} == {txn.scn}
    assert changes[10].before == {"id": 1, "v": "r1"} and changes[10].after == {"id": 1, "v": "x"}
    assert changes[11].before == {"id": 2, "v": None} and changes[11].after is None
    assert changes[9].after == {"id": 9, "v": "r9"} and changes[9].table is changes[0].table
    # a transaction at or below skip_through (already delivered before a reconnect) is dropped
    asm.skip_through = pack_scn(7, 2000)
    asm.begin()
    asm.rows(Op.INSERT, "t", [{"values": {"id": 99, "v": None}}])
    assert asm.commit(1500, 1) is None
    # DDL forgets an open transaction and the cached metadata
    asm.begin()
    asm.ddl()
    assert not asm.in_transaction and asm.ddl_seen == 1


def test_spill_buffer_closes_its_file() -> None:
    buf = SpillBuffer(limit=1)
    assert not buf.spilled
    buf.close()


def _rel() -> Relation:
    return Relation(16385, "public", "t", "d", (Column("id", 23, -1, True), Column("big", 25, -1, False)))


def test_pg_assembler_skips_delivered_transactions_and_marks_toast() -> None:
    asm = PgChangeAssembler(lambda _relid: RelationCatalog(("id",), frozenset({"id"})), lambda _oid: None)
    assert asm.feed(_rel()) is not None
    assert asm.feed(Begin(100, 0, 1)) == TxnBegin(100, 946_684_800_000, 1)
    ins = asm.feed(Insert(16385, (b"1", b"hello")))
    upd = asm.feed(Update(16385, None, None, (b"1", UNCHANGED)))
    dele = asm.feed(Delete(16385, "K", (b"1", None)))
    end = asm.feed(Commit(0, 100, 150, 0))
    assert isinstance(end, TxnEnd) and (end.scn, end.end_lsn, end.rows) == (100, 150, 3)
    assert ins.after == {"id": 1, "big": "hello"} and ins.key == (1,)  # type: ignore[union-attr]
    assert upd.after == {"id": 1, "big": None, UNCHANGED_COLUMN: ["big"]}  # type: ignore[union-attr]
    assert UNCHANGED_COLUMN in [c.name for c in upd.table.columns]  # type: ignore[union-attr]
    assert dele.before == {"id": 1} and dele.op is Op.DELETE  # type: ignore[union-attr]
    # after a reconnect the server resends from the confirmed position: delivered transactions are skipped
    asm.reset()
    asm.skip_through = 100
    assert asm.feed(Begin(100, 0, 1)) is None
    assert asm.feed(Insert(16385, (b"1", b"hello"))) is None
    assert asm.feed(Commit(0, 100, 150, 0)) is None
    assert isinstance(asm.feed(Begin(200, 0, 2)), TxnBegin)
    with pytest.raises(ValueError):
        asm.feed(Begin(300, 0, 3))  # a Begin inside a transaction: the stream lost a Commit


def test_read_marks_bound_memory_and_trail_by_retention() -> None:
    marks = ReadMarks(retention_seconds=10)
    for i in range(1000):
        marks.read(100 + i * 0.01, i)  # 1000 windows within 10 s
    assert len(marks._marks) <= 11
    assert marks.durable(105) is None
    assert marks.durable(115) is not None and marks.durable(200) == 999
    assert marks.durable(300) is None


def test_marker_columns_never_take_a_user_columns_name() -> None:
    """A user column named like the relay's unchanged-TOAST marker stays the user's: the marker gets
    the next free name, is found by its schema property, and a subscriber sees it beside the row."""
    from headrace.relay import Event, encode_key
    from headrace.relay._codec import Codecs
    from headrace.relay._schema import MARKER_PROP, SchemaRegistry
    from headrace.relay.client import EventDecoder

    cols = (Column("id", 23, -1, True), Column(UNCHANGED_COLUMN, 25, -1, False), Column("big", 25, -1, False))
    rel = Relation(16386, "public", "reserved", "d", cols)
    asm = PgChangeAssembler(lambda _relid: RelationCatalog(("id",), frozenset({"id"})), lambda _oid: None)
    asm.feed(rel)
    asm.feed(Begin(100, 0, 1))
    upd = asm.feed(Update(16386, None, None, (b"1", b"still mine", UNCHANGED)))
    asm.feed(Commit(0, 100, 150, 0))
    assert upd is not None and not isinstance(upd, TxnBegin | TxnEnd)
    marker = f"{UNCHANGED_COLUMN}_2"
    assert [c.name for c in upd.table.columns] == ["id", UNCHANGED_COLUMN, "big", marker]
    assert upd.after == {"id": 1, UNCHANGED_COLUMN: "still mine", "big": None, marker: ["big"]}

    codecs = Codecs(SchemaRegistry())
    codec = codecs.for_change(upd)
    fields = {f["name"]: f for f in codec.version.schema["fields"]}
    assert MARKER_PROP not in fields[UNCHANGED_COLUMN] and fields[marker][MARKER_PROP] == "unchanged"
    assert upd.after is not None
    event = Event(100, "reserved", Op.UPDATE, encode_key([1]), 0, codec.version.fingerprint, None,
                  codec.encode(upd.after), True)  # fmt: skip
    got = EventDecoder(lambda _fp: codec.version).decode(event)
    assert got.after == {"id": 1, UNCHANGED_COLUMN: "still mine", "big": None}
    assert got.unchanged == ("big",)


def test_pg_assembler_collects_the_relays_own_notices() -> None:
    """The event trigger's logical decoding messages (prefix "headrace", a JSON object) are collected
    for the shell to report; other prefixes, malformed content and replayed transactions are not."""
    asm = PgChangeAssembler(lambda _relid: None, lambda _oid: None)
    asm.feed(Begin(100, 0, 1))
    asm.feed(Message(True, 90, "headrace", b'{"unpublished": "nokey"}'))
    asm.feed(Message(True, 91, "someone_else", b'{"unpublished": "x"}'))
    asm.feed(Message(True, 92, "headrace", b"not json"))
    asm.feed(Commit(0, 100, 150, 0))
    assert asm.notices == [{"unpublished": "nokey"}]
    asm.notices.clear()
    asm.skip_through = 200  # a transaction delivered before a reconnect: its notices were reported then
    asm.feed(Begin(200, 0, 2))
    asm.feed(Message(True, 190, "headrace", b'{"deferred": "t"}'))
    asm.feed(Commit(0, 200, 250, 0))
    assert asm.notices == []
