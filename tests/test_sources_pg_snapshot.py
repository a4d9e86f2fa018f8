"""PostgresSource.snapshot (the ChangeSource snapshot API) against a private PostgreSQL: rows read by
the snapshot and the same rows read from the stream are identical events — same schema fingerprint,
same Avro payload bytes — over many types and edge values and every replica-identity shape; and the
snapshot's ``start_scn`` splits the stream exactly (nothing missing, nothing twice)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
from db_servers import PgServer

from headrace.errors import UsageError
from headrace.relay import Codecs, SchemaRegistry
from headrace.relay._config import RelayConfig
from headrace.relay.sources import ChangeWindow, RowChange
from headrace.relay.sources.postgres import PostgresSource

pytestmark = pytest.mark.postgres

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'very happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE t_all (
    id bigint PRIMARY KEY, i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision,
    n numeric, n2 numeric(12, 2), n40 numeric(40, 20), b boolean, t text, vc varchar(10), ch char(3),
    by bytea, d date, tm time, tmtz timetz, ts timestamp, tstz timestamptz, iv interval, u uuid,
    j json, jb jsonb, ia int[], ta text[], na numeric(6, 2)[], m mood, ma mood[], dom posint, pt point,
    ip inet, big text
);
CREATE TABLE t_full (a int, b text, c jsonb);
ALTER TABLE t_full REPLICA IDENTITY FULL;
CREATE TABLE t_idx (id int PRIMARY KEY, code text NOT NULL, v int);
CREATE UNIQUE INDEX t_idx_code ON t_idx (code);
ALTER TABLE t_idx REPLICA IDENTITY USING INDEX t_idx_code;
CREATE TABLE "Odd Name" ("the key" int PRIMARY KEY, "a-b" text, a_b text,
                         gen int GENERATED ALWAYS AS ("the key" * 2) STORED);
"""

ROWS = [
    # ordinary values
    "INSERT INTO t_all (id, i2, i4, i8, f4, f8, n, n2, n40, b, t, vc, ch, by, d, tm, tmtz, ts, tstz, iv, u, j, jb, "
    "ia, ta, na, m, ma, dom, pt, ip, big) VALUES (1, -32768, 2147483647, -9223372036854775808, 1.5, 0.1, "
    "12345678901234567890.123456789, 12.50, 12345678901234567890.12345678901234567890, true, 'héllo 🎉', 'abc', "
    "'x', '\\x0001ff00', '2024-02-29', '13:45:01.25', '13:45:01+02', '2024-02-29 23:59:59.999999', "
    "'2024-01-01 10:00:00+02', '1 year 2 mons 3 days 04:05:06.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
    '\'{"x": 1.0000000000000000001, "y": [null, true]}\', \'{"k": 10.50, "n": null}\', \'{1,NULL,3}\', '
    "'{\"a b\",\"c,d\",NULL}', '{1.50,NULL}', 'very happy', '{sad,ok}', 7, '(1,2)', '10.0.0.1/8', repeat('z', 3000))",
    # edge values
    "INSERT INTO t_all (id, f4, f8, n, n2, d, tm, ts, tstz, iv, ia, j, jb, t, by) VALUES (2, 'NaN', '-Infinity', "
    "'NaN', 'NaN', 'infinity', '24:00:00', '-infinity', 'infinity', '-178000000 years', '{{1,2},{3,4}}', 'null', "
    "'null', '', '\\x')",
    "INSERT INTO t_all (id, f8, d, ts, tstz, ia, ta) VALUES (3, 5e-324, '0044-03-15 BC', '10000-01-01 00:00:00', "
    "'0001-01-01 00:00:00+00 BC', '[0:1]={7,8}', '{}')",
    "INSERT INTO t_all (id) VALUES (4)",
    "INSERT INTO t_full VALUES (1, 'b', '{\"a\": 1}'), (2, 'x', '[]')",
    "INSERT INTO t_idx VALUES (1, 'one', 1), (2, 'two', NULL)",
    "INSERT INTO \"Odd Name\" VALUES (1, 'dash', 'underscore')",
]
TABLES = ["t_all", "t_full", "t_idx", "Odd Name"]


def _source(pg: PgServer, db: str) -> PostgresSource:
    return PostgresSource(
        RelayConfig(source=pg.url(db), tables=TABLES, postgres={"slot": "snap", "publication": "snap"})
    )


def _drain(
    src: PostgresSource, after: int | None, windows: int, timeout: float = 30.0
) -> list[tuple[int, list[RowChange]]]:
    out: list[tuple[int, list[RowChange]]] = []
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    reader = src.read(after, stop)
    for w in reader:
        if isinstance(w, ChangeWindow):
            out.append((w.scn, list(w.changes)))
        if len(out) >= windows or time.monotonic() > deadline:
            stop.set()
            break
    reader.close()
    assert len(out) == windows, f"got {len(out)} of {windows} windows"
    return out


def _payloads(codecs: Codecs, changes: list[RowChange]) -> dict[tuple[str, tuple[Any, ...]], tuple[str, bytes]]:
    """(table, key) → (fingerprint, Avro bytes of the row) as the relay encodes them."""
    out = {}
    for c in changes:
        version, _before, after = codecs.encode_change(c)
        assert after is not None
        out[(c.table.name, tuple(str(k) for k in c.key))] = (version.fingerprint, after)
    return out


def test_snapshot_rows_are_the_streams_events_byte_for_byte_and_split_the_stream_exactly(pg_server: PgServer) -> None:
    db = pg_server.create_database("pgsnap")
    pg_server.execute(SCHEMA, db)
    src = _source(pg_server, db)
    src.open()
    after = src.start_scn()
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        for sql in ROWS:
            cur.execute(sql)
    streamed = _drain(src, after, len(ROWS))
    stream_changes = [c for _scn, cs in streamed for c in cs]

    snap = src.snapshot(TABLES)
    try:
        assert [m.name for m in snap.tables] == sorted(TABLES)
        assert snap.start_scn >= max(scn for scn, _ in streamed) and not snap.resumable
        snap_changes: list[RowChange] = []
        for table in TABLES:
            pages = list(snap.pages(table, 2))
            assert pages[-1].done and all(not p.done for p in pages[:-1])
            assert all(p.scn == snap.start_scn and len(p.rows) <= 2 for p in pages)
            snap_changes += [c for p in pages for c in p.rows]
        with pytest.raises(UsageError):
            next(snap.pages("t_all", 2, after=(1,)))
    finally:
        snap.close()
    mine = "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
    slots = {s for (s,) in pg_server.execute(mine, db)}
    assert slots == {"snap"}  # the temporary snapshot slot is gone

    codecs = Codecs(SchemaRegistry())
    from_stream = _payloads(codecs, stream_changes)
    from_snapshot = _payloads(codecs, snap_changes)
    assert sorted(from_snapshot) == sorted(from_stream)
    different = [k for k in from_stream if from_stream[k] != from_snapshot[k]]
    assert not different, [(k, stream_changes, snap_changes) for k in different[:1]]
    # the same TableMeta as the stream's Relation messages: keys of every identity shape
    keys = {c.table.name: c.table.key for c in snap_changes}
    assert keys == {"t_all": ("id",), "t_full": ("a", "b", "c"), "t_idx": ("code",), "Odd Name": ("the key",)}
    assert [c.name for c in next(c for c in snap_changes if c.table.name == "Odd Name").table.columns] == [
        "the key",
        "a-b",
        "a_b",
    ]  # fmt: skip  (the generated column is not published)

    # aligned: the stream after start_scn holds exactly what the snapshot does not
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO t_idx VALUES (3, 'three', 3)")
    [(scn, [late])] = _drain(src, snap.start_scn, 1)
    assert scn > snap.start_scn and (late.table.name, late.key) == ("t_idx", ("three",))
    src.close()
