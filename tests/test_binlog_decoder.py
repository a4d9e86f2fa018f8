"""The relay's own binlog decoder (``_binlogevents`` + ``_binlogconn``) against the reference path.

The reference is what the MySQL source did before: ``mysql-replication``'s ``BinLogStreamReader``
parses the events and table maps, :func:`binlog_column` reduces each table-map column, and
:func:`decode_rows` decodes the row images from the bytes left in the event. The real-server test
writes the edge values of every type of the MariaDB conformance test (the same tables, the same
edge rows) plus hypothesis-generated rows, updates and deletes, then reads that stretch of binlog
with both paths and requires the same events: table-map columns (every field that decides how a
value decodes), the decoded wire values (compared by ``repr``: types, Decimal digits, float bits,
tz) and positions. The binlog file on disk is decoded too, and every truncation of its events must
fail as :class:`BinlogEventError`, never as another exception.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest
from db_servers import MariaDbServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_conformance_mariadb import EDGES, TABLES, edge_rows, row_strategy

from headrace.relay.sources._binlogconn import BinlogConnection
from headrace.relay.sources._binlogevents import (
    HEADER_LEN,
    BinlogDecoder,
    BinlogEndOfStream,
    BinlogEventError,
    BinlogServerError,
    Gtid,
    Heartbeat,
    PacketFramer,
    Query,
    Rotate,
    Rows,
    XaPrepare,
    Xid,
    dump_command,
)
from headrace.relay.sources._mysqlfastrows import decode_rows_fast
from headrace.relay.sources._mysqlrows import BinlogColumn, binlog_column, decode_rows

# tables beyond the conformance ones: signedness after YEAR, GEOMETRY (a character column on MariaDB),
# CHAR wider than 255 bytes (2-byte length), the blob sizes, ENUM/SET in another character set, no key
EXTRA = {
    "mixed": "id INT PRIMARY KEY, y YEAR, u INT UNSIGNED, bu BIGINT UNSIGNED, g GEOMETRY, p POINT, "
    "e ENUM('x','ÿ') CHARACTER SET latin1, s SET('p','q') CHARACTER SET latin1, ch CHAR(100), "
    "tt TINYTEXT, mt MEDIUMTEXT, lb LONGBLOB, tb TINYBLOB, bt BIT(12), dd DECIMAL(20,10), vb VARBINARY(300), "
    "l1 CHAR(5) CHARACTER SET latin1, dt DATETIME(2), ts TIMESTAMP(4) NULL, tm TIME(5)",
    "nokey": "a INT, b VARCHAR(10)",
}
EXTRA_ROWS = [
    "INSERT INTO mixed VALUES (1, 2024, 4294967295, 18446744073709551615, ST_GeomFromText('POINT(1 2)'), "
    "POINT(3, 4), 'ÿ', 'p,q', REPEAT('é', 100), 'tiny', REPEAT('m', 70000), REPEAT(x'00ff', 40000), x'00', "
    "b'101010101010', -1234567890.0123456789, x'00', 'àé', '2024-02-29 01:02:03.45', "
    "'2001-02-03 04:05:06.7891', '-12:34:56.78901')",
    "INSERT INTO mixed (id) VALUES (2)",
    "UPDATE mixed SET u = 0, y = 0, e = 'x', s = '' WHERE id = 1",
    "INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (NULL, NULL)",
    "DELETE FROM nokey WHERE a = 1",
    "DELETE FROM mixed WHERE id = 2",
]


def _settings(m: MariaDbServer) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": m.port, "user": "root", "password": "", "charset": "utf8mb4"}


def _rows_record(op: str, table: str, bcols: Any, rows: Any, log_pos: int) -> tuple[Any, ...]:
    return ("rows", op, table, [c.signature() for c in bcols], repr(rows), log_pos)


def reference_events(m: MariaDbServer, db: str, file: str, pos: int, end: int) -> list[tuple[Any, ...]]:
    """The stretch as the old path decoded it (mysql-replication + binlog_column + decode_rows)."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import MariadbGtidEvent, QueryEvent, RotateEvent, XAPrepareEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    stream = BinLogStreamReader(
        connection_settings=_settings(m),
        server_id=4711,
        log_file=file,
        log_pos=pos,
        resume_stream=True,
        blocking=False,
        is_mariadb=False,
        only_schemas=[db],
        only_events=[RotateEvent, MariadbGtidEvent, QueryEvent, XidEvent, XAPrepareEvent,
                     WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False,
    )  # fmt: skip
    out: list[tuple[Any, ...]] = []
    try:
        for ev in stream:
            log_pos = ev.packet.log_pos
            if isinstance(ev, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                op = type(ev).__name__
                bcols = [binlog_column(c, i) for i, c in enumerate(ev.columns)]
                data = ev.packet.read(ev.event_size - ev.packet.read_bytes)
                after = getattr(ev, "columns_present_bitmap2", None)
                rows = decode_rows(bcols, data, ev.columns_present_bitmap, after)
                out.append(_rows_record(op, ev.table, bcols, rows, log_pos))
            elif isinstance(ev, XidEvent):
                out.append(("xid", log_pos, ev.timestamp))
            elif isinstance(ev, MariadbGtidEvent):
                out.append(("gtid", str(ev.gtid), log_pos))
            elif isinstance(ev, QueryEvent):
                schema = ev.schema.decode() if isinstance(ev.schema, bytes) else ev.schema
                out.append(("query", schema, ev.query, log_pos, ev.timestamp))
            elif isinstance(ev, RotateEvent):
                out.append(("rotate", ev.next_binlog))
            elif isinstance(ev, XAPrepareEvent):
                out.append(("xa_prepare", ev.one_phase, log_pos))
            if log_pos >= end and not isinstance(ev, RotateEvent):
                break
    finally:
        stream.close()
    return out


_OPS = {"INSERT": "WriteRowsEvent", "UPDATE": "UpdateRowsEvent", "DELETE": "DeleteRowsEvent"}


def record(ev: Any) -> tuple[Any, ...] | None:
    """One decoded event in the reference's record shape (None: not recorded)."""
    if isinstance(ev, Rows):
        return _rows_record(_OPS[ev.op.name], ev.table, ev.columns, ev.rows, ev.log_pos)
    if isinstance(ev, Xid):
        return ("xid", ev.log_pos, ev.timestamp)
    if isinstance(ev, Gtid):
        return ("gtid", ev.gtid, ev.log_pos)
    if isinstance(ev, Query):
        return ("query", ev.schema, ev.query, ev.log_pos, ev.timestamp)
    if isinstance(ev, Rotate):
        return ("rotate", ev.next_binlog)
    if isinstance(ev, XaPrepare):
        return ("xa_prepare", ev.one_phase, ev.log_pos)
    assert isinstance(ev, Heartbeat), ev
    return None


def our_events(m: MariaDbServer, db: str, file: str, pos: int, end: int) -> list[tuple[Any, ...]]:
    conn = BinlogConnection(
        _settings(m), server_id=4712, file=file, position=pos, read_timeout=30, heartbeat=1, only_schema=db
    )
    out: list[tuple[Any, ...]] = []
    try:
        for ev in conn.events():
            rec = record(ev)
            if rec is None:
                continue
            out.append(rec)
            if not isinstance(ev, Rotate) and ev.log_pos >= end:
                break
    finally:
        conn.close()
    return out


def file_events(path: Path, checksum: bool, db: str, start: int, end: int) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    """The same stretch decoded from the binlog file on disk (and the raw events, for fuzzing)."""
    data = path.read_bytes()
    assert data[:4] == b"\xfebin"
    dec = BinlogDecoder(checksum=checksum, dbms="mariadb", only_schema=db)
    pos, out, raw = 4, [], []
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos + 9)
        ev_bytes = data[pos : pos + size]
        ev = dec.decode(ev_bytes)  # the format description and table maps before ``start`` count too
        if pos >= start:
            raw.append(ev_bytes)
            rec = record(ev) if ev is not None else None
            if rec is not None:
                out.append(rec)
        pos += size
        if pos >= end:
            break
    return out, raw


def _stmt(table: str, values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    names = list(values)
    cols = ", ".join(f"`{n}`" for n in names)
    return f"INSERT INTO `{table}` ({cols}) VALUES ({', '.join(['%s'] * len(names))})", tuple(values.values())


def test_decoder_matches_mysql_replication_on_a_real_binlog(mariadb_server: MariaDbServer) -> None:
    m = mariadb_server
    db = m.create_database("decequiv")
    for table, (keys, others) in TABLES.items():
        cols = ", ".join(f"`{c.name}` {c.ddl}" for c in keys + others)
        m.execute(f"CREATE TABLE `{table}` ({cols}, PRIMARY KEY ({', '.join(f'`{k.name}`' for k in keys)}))", db)
    for table, ddl in EXTRA.items():
        m.execute(f"CREATE TABLE `{table}` ({ddl})", db)
    other = m.create_database("decequiv_other")  # another schema: filtered out by both paths
    m.execute("CREATE TABLE t (id INT PRIMARY KEY)", other)
    file, start = (lambda r: (str(r[0]), int(r[1])))(m.execute("SHOW MASTER STATUS")[0])
    conn = m.connect(db, autocommit=False)
    cur = conn.cursor()
    cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
    cur.execute("SET SESSION time_zone = '+00:00'")
    next_id = [1]

    def insert(table: str, row: dict[str, Any]) -> None:
        if table in ("nums", "strs", "times"):
            row = {"id": next_id[0], **row}
            next_id[0] += 1
        cur.execute(*_stmt(table, row))

    try:
        # 1. the conformance test's edge rows, one transaction per table, then keys, updates, deletes
        for table, (_keys, others) in TABLES.items():
            if table in ("bkeys", "ukeys"):
                continue
            for row in edge_rows(others):
                insert(table, row)
            conn.commit()
        for v, k in enumerate([b"\x01", b"\x01\x00\x02", b"\x00", b"\x00\x00\x00\x01", b"\xff\xff\xff\xff"]):
            insert("bkeys", {"k": k, "v": v})
        for v, u in enumerate(EDGES["uu"]):
            insert("ukeys", {"u": u, "v": v})
        cur.execute("INSERT INTO decequiv_other.t VALUES (1)")
        conn.commit()
        cur.execute("UPDATE times SET da = '2024-00-00', ts0 = NULL, tm = '-838:59:59' WHERE id = 1")
        cur.execute("UPDATE strs SET s = '', j = 'null' WHERE id > 0")
        cur.execute("UPDATE nums SET bu = 18446744073709551615 WHERE id > 0")
        cur.execute("DELETE FROM bkeys WHERE v = 1")
        cur.execute("DELETE FROM times WHERE id = 2")
        conn.commit()
        for sql in EXTRA_ROWS:
            cur.execute(sql)
            conn.commit()
        cur.execute("XA START 'x1'")
        cur.execute("INSERT INTO nokey VALUES (7, 'xa')")
        cur.execute("XA END 'x1'")
        cur.execute("XA PREPARE 'x1'")
        cur.execute("XA COMMIT 'x1'")

        # 2. hypothesis-generated rows: inserts, then an update and a delete of what was written
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )  # fmt: skip
        @given(
            table=st.sampled_from(["nums", "strs", "times"]),
            rows=st.data(),
        )
        def generated(table: str, rows: st.DataObject) -> None:
            first = next_id[0]
            for row in rows.draw(st.lists(row_strategy(table), min_size=1, max_size=4)):
                insert(table, row)
            change = rows.draw(row_strategy(table))
            if change:
                sets = ", ".join(f"`{k}` = %s" for k in change)
                cur.execute(f"UPDATE `{table}` SET {sets} WHERE id = %s", (*change.values(), first))
            cur.execute(f"DELETE FROM `{table}` WHERE id = %s", (next_id[0] - 1,))
            conn.commit()

        generated()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()
    end = int(m.execute("SHOW MASTER STATUS")[0][1])

    ref = reference_events(m, db, file, start, end)
    ours = our_events(m, db, file, start, end)
    assert sum(1 for r in ref if r[0] == "rows") > 100
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert a == b, f"event {i}: ours {a!r:.2000} != reference {b!r:.2000}"

    # the binlog file on disk holds the same events (the dump's fake rotate aside)
    checksum = str(m.execute("SELECT @@GLOBAL.binlog_checksum")[0][0]).upper() != "NONE"
    on_disk, raw = file_events(m.root / file, checksum, db, start, end)
    assert on_disk == [r for r in ref if r[0] != "rotate"]

    # every truncation of a real event is a clean BinlogEventError (the decoder keeps its table maps)
    dec = BinlogDecoder(checksum=checksum, dbms="mariadb", only_schema=db)
    for ev in raw:
        dec.decode(ev)
    for ev in raw[:400]:
        for cut in {HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 3, len(ev) // 2, len(ev) - 5, len(ev) - 1}:
            if 0 <= cut < len(ev):
                with pytest.raises(BinlogEventError):
                    dec.decode(ev[:cut])  # shorter than its header says
                if cut >= HEADER_LEN:  # the size field fixed up: the body itself is cut short
                    with contextlib.suppress(BinlogEventError):
                        dec.decode(ev[:9] + struct.pack("<I", cut) + ev[13:cut])


# -- sans-io: packets, bad input ------------------------------------------------------------------


def _packet(payload: bytes, seq: int = 1) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


def _event(etype: int, body: bytes, log_pos: int = 1000, checksum: bool = True) -> bytes:
    size = HEADER_LEN + len(body) + (4 if checksum else 0)
    head = struct.pack("<IBIIIH", 1700000000, etype, 1, size, log_pos, 0)
    return head + body + (b"\xaa\xbb\xcc\xdd" if checksum else b"")


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=8), big=st.integers(0, 3))
def test_framer_yields_the_same_events_however_the_bytes_arrive(cuts: list[int], big: int) -> None:
    events = [_event(16, struct.pack("<Q", i), 100 + i) for i in range(5)]
    events.append(_event(2, b"\x00" * 13 + b"db\x00BEGIN" + b"x" * (0xFFFFFF * big // 3)))
    stream = b""
    for ev in events:
        payload = b"\x00" + ev
        while len(payload) >= 0xFFFFFF:  # a long event continues in the next packet
            stream += _packet(payload[:0xFFFFFF])
            payload = payload[0xFFFFFF:]
        stream += _packet(payload)
    framer = PacketFramer()
    got: list[bytes] = []
    last = 0
    for c in [*sorted(min(c * 1000, len(stream)) for c in cuts), len(stream)]:
        got.extend(framer.feed(stream[last:c]))
        last = c
    assert got == events


def test_framer_error_and_end_packets() -> None:
    with pytest.raises(BinlogServerError) as info:
        list(PacketFramer().feed(_packet(b"\xff" + (1236).to_bytes(2, "little") + b"#HY000Could not find log")))
    assert info.value.code == 1236 and info.value.message == "Could not find log"
    with pytest.raises(BinlogEndOfStream):
        list(PacketFramer().feed(_packet(b"\xfe\x00\x00\x02\x00")))
    with pytest.raises(BinlogEventError):
        list(PacketFramer().feed(_packet(b"\x07abc")))


def test_dump_command_layout() -> None:
    cmd = dump_command("binlog.000042", 1234, 77)
    assert cmd[:4] == (len(cmd) - 4).to_bytes(3, "little") + b"\x00"
    assert cmd[4:] == b"\x12" + struct.pack("<IHI", 1234, 0, 77) + b"binlog.000042"


@settings(max_examples=500, deadline=None)
@given(etype=st.sampled_from([2, 4, 15, 16, 19, 23, 24, 25, 30, 31, 32, 33, 38, 162]), body=st.binary(max_size=200))
def test_garbage_events_fail_cleanly(etype: int, body: bytes) -> None:
    dec = BinlogDecoder(checksum=True, dbms="mariadb")
    dec.decode(_event(19, b"\x01\x00\x00\x00\x00\x00" + b"\x00\x00" + b"\x02db\x00\x01t\x00\x01\x03\x00\x01"))
    with contextlib.suppress(BinlogEventError):
        dec.decode(_event(etype, body))
    with contextlib.suppress(BinlogEventError):  # a rows event of the mapped table with garbage rows
        dec.decode(_event(30, b"\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01\x01" + body))


# -- the compiled row-image reader against the reference, on generated columns and bytes -----------

_ENCODINGS = [None, "utf8", "cp1252", "utf-16-be", "latin-1", "sjis"]
_COLUMN = st.one_of(
    st.builds(
        lambda t, u: BinlogColumn("", t, unsigned=u), st.sampled_from([1, 2, 3, 8, 9, 4, 5, 13, 10]), st.booleans()
    ),
    st.builds(
        lambda t, enc, n: BinlogColumn("", t, encoding=enc, length=n),
        st.sampled_from([15, 253, 254]),
        st.sampled_from(_ENCODINGS),
        st.sampled_from([1, 10, 255, 256, 1000]),
    ),
    st.builds(
        lambda enc, n: BinlogColumn("", 252, encoding=enc, length=n), st.sampled_from(_ENCODINGS), st.integers(1, 4)
    ),
    st.builds(lambda p, s: BinlogColumn("", 246, meta=(p, min(p, s))), st.integers(1, 65), st.integers(0, 30)),
    st.builds(lambda f: BinlogColumn("", 18, fsp=f), st.integers(0, 6)),
)


def _outcome(f: Any, cols: list[BinlogColumn], data: bytes, present: bytes, after: bytes | None) -> str:
    try:
        return repr(f(cols, data, present, after))
    except Exception as exc:  # the fast path falls back to the reference, so it fails the same way
        return f"{type(exc).__name__} {exc}"


@settings(max_examples=300, deadline=None)
@given(
    cols=st.lists(_COLUMN, min_size=1, max_size=12),
    names=st.lists(st.text(max_size=6), min_size=12, max_size=12),
    rows=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
    update=st.booleans(),
    nulls=st.integers(0, 2**12 - 1),
)
def test_compiled_reader_equals_the_reference(
    cols: list[BinlogColumn], names: list[str], rows: list[bytes], update: bool, nulls: int
) -> None:
    for c, name in zip(cols, names, strict=False):
        c.name = name  # any text: quotes, backslashes, duplicates — the generated code must not care
    present = ((1 << len(cols)) - 1).to_bytes((len(cols) + 7) // 8, "little")
    # images that are mostly well formed: a null bitmap, then random bytes for the values
    nb = len(present)
    data = b"".join((nulls & ((1 << len(cols)) - 1)).to_bytes(nb, "little") + r for r in rows)
    after = present if update else None
    assert _outcome(decode_rows_fast, cols, data, present, after) == _outcome(decode_rows, cols, data, present, after)


def test_table_maps_without_names_take_them_from_the_catalog() -> None:
    """Servers without ``binlog_row_metadata=FULL``: names come from the callback (as the reference
    path reads them from information_schema), when their count matches; else ``UNKNOWN_COL<i>``."""
    tmap = _event(19, b"\x01\x00\x00\x00\x00\x00" + b"\x00\x00" + b"\x02db\x00\x01t\x00\x02\x03\x0f\x02\x14\x00\x03")
    rows = _event(30, b"\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x02\x03" + b"\x00" + struct.pack("<i", -5) + b"\x02ab")
    asked: list[tuple[str, str]] = []

    def names(schema: str, table: str) -> list[str]:
        asked.append((schema, table))
        return ["id", "v"]

    for catalog, want in ((names, ["id", "v"]), (lambda s, t: ["only one"], ["UNKNOWN_COL0", "UNKNOWN_COL1"])):
        dec = BinlogDecoder(checksum=True, dbms="mariadb", column_names=catalog)
        dec.decode(tmap)
        ev = dec.decode(rows)
        assert isinstance(ev, Rows) and [c.name for c in ev.columns] == want
        assert list(ev.rows[0]["values"].values()) == [-5, b"ab"]  # no character set known: bytes
    assert asked == [("db", "t")]
    dec = BinlogDecoder(checksum=True, dbms="mariadb", column_names=names)
    dec.decode(tmap)
    dec.forget_tables()  # after DDL the catalog is asked again
    dec.decode(tmap)
    assert asked == [("db", "t")] * 3
