"""PostgreSQL source against a private PostgreSQL 15: types, TOAST, replica identity, DDL, refusals,
slot feedback and invalidation, snapshot export, relay kill -9 and server restart, a 1,000,000-row
transaction in bounded memory."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_servers import PgServer
from sources_harness import collect, events_of, restart_relay, start_relay
from sources_workload import TABLES, apply, create_tables, expected, transactions
from support import free_port, wait_until, write_config

from headrace.errors import FatalError, UsageError
from headrace.relay import Codecs, Interval, RowCodec, SchemaRegistry
from headrace.relay._config import RelayConfig
from headrace.relay.sources import ChangeWindow, RowChange
from headrace.relay.sources._pgoutput import parse_lsn
from headrace.relay.sources._pgstream import UNCHANGED_COLUMN
from headrace.relay.sources.postgres import PostgresSource, export_snapshot

pytestmark = pytest.mark.postgres


def source_for(pg: PgServer, db: str, tables: list[str] | None, slot: str) -> PostgresSource:
    cfg = RelayConfig(source=pg.url(db), tables=tables, postgres={"slot": slot, "publication": slot})
    return PostgresSource(cfg)


def drain(
    src: PostgresSource, after: int | None, windows: int, timeout: float = 20.0
) -> list[tuple[int, list[RowChange]]]:
    """Read ``windows`` windows from the source in this thread (materialising each one)."""
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
    reader.close()  # runs the source's cleanup now (closes the stream), not at garbage collection
    assert len(out) == windows, f"got {len(out)} of {windows} windows"
    return out


def roundtrip(codecs: Codecs, change: RowChange) -> dict[str, Any] | None:
    """The change's after image encoded to Avro by the relay and decoded as a subscriber would."""
    if change.after is None:
        return None
    codec = codecs.for_change(change)
    return RowCodec(codec.version).decode(codec.encode(change.after))


def test_types_toast_and_replica_identity(pg_server: PgServer) -> None:
    db = pg_server.create_database("pgtypes")
    pg_server.execute(
        """
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'very happy');
        CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
        CREATE TABLE t_types (id int PRIMARY KEY, i2 smallint, f4 real, n numeric, n2 numeric(10,2)[], arr int[],
            tarr text[], m mood, ms mood[], iv interval, tm time, ts timestamp, tstz timestamptz, d posint, pt point);
        CREATE TABLE t_toast (id int PRIMARY KEY, big text, n int);
        CREATE TABLE t_toast_full (id int PRIMARY KEY, big text, n int);
        ALTER TABLE t_toast_full REPLICA IDENTITY FULL;
        ALTER TABLE t_toast ALTER big SET STORAGE EXTERNAL;  -- out of line, uncompressed: surely TOASTed
        ALTER TABLE t_toast_full ALTER big SET STORAGE EXTERNAL;
        CREATE TABLE t_default (id int PRIMARY KEY, v text NOT NULL);
        """,
        db,
    )
    src = source_for(pg_server, db, ["t_types", "t_toast", "t_toast_full", "t_default"], slot="types")
    src.open()
    after = src.start_scn()
    big = "x" * 5000 + "é" * 3000  # > 2 kB: stored out of line (TOAST)
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO t_types VALUES (1, -32768, 1.5, 12345678901234567890.123456789, '{1.50,NULL}', '{1,NULL,3}', "
            "'{\"a b\",\"c,d\",NULL,\"q\\\"x\"}', 'very happy', '{sad,ok}', '1 year 2 mons 3 days 04:05:06.5', "
            "'13:45:01.25', '2024-02-29 23:59:59.999999', '2024-01-01 10:00:00+02', 7, '(1,2)')"
        )
        cur.execute("INSERT INTO t_toast VALUES (1, %s, 1)", (big,))
        cur.execute("INSERT INTO t_toast_full VALUES (1, %s, 1)", (big,))
        cur.execute("UPDATE t_toast SET n = 2")
        cur.execute("UPDATE t_toast_full SET n = 2")
        cur.execute("INSERT INTO t_default VALUES (1, 'a')")
        cur.execute("UPDATE t_default SET v = 'b'")
        cur.execute("UPDATE t_default SET id = 2")
        cur.execute("DELETE FROM t_default")
    got = drain(src, after, 9)
    codecs = Codecs(SchemaRegistry())
    [types_ins], [toast_ins], [_full_ins], [toast_upd], [full_upd], [d_ins], [d_upd], [d_key], [d_del] = [
        w[1] for w in got
    ]
    assert [w[0] for w in got] == sorted(w[0] for w in got)
    assert all(c.scn == scn for scn, cs in got for c in cs)

    row = roundtrip(codecs, types_ins)
    assert row == {
        "id": 1, "i2": -32768, "f4": 1.5, "n": Decimal("12345678901234567890.123456789"),
        "n2": [Decimal("1.50"), None], "arr": [1, None, 3], "tarr": ["a b", "c,d", None, 'q"x'], "m": "very happy",
        "ms": ["sad", "ok"], "iv": Interval(14, 3, ((4 * 60 + 5) * 60 + 6) * 1_000_000 + 500_000),
        "tm": dt.time(13, 45, 1, 250000), "ts": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "tstz": dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC), "d": 7, "pt": "(1,2)",
    }  # fmt: skip
    kinds = {c.name: c.type.kind for c in types_ins.table.columns}
    assert kinds["m"] == "enum" and types_ins.table.column("m").type.symbols == ("sad", "ok", "very happy")
    assert kinds["d"] == "int" and kinds["pt"] == "string" and kinds["iv"] == "interval"

    assert roundtrip(codecs, toast_ins) == {"id": 1, "big": big, "n": 1}
    # REPLICA IDENTITY DEFAULT: the unchanged TOASTed value is not sent; it is marked, never a silent NULL
    assert toast_upd.before is None
    assert roundtrip(codecs, toast_upd) == {"id": 1, "big": None, "n": 2, UNCHANGED_COLUMN: ["big"]}
    # REPLICA IDENTITY FULL: the old row carries it, so it is filled in
    assert full_upd.before == {"id": 1, "big": big, "n": 1}
    assert roundtrip(codecs, full_upd) == {"id": 1, "big": big, "n": 2}
    assert UNCHANGED_COLUMN not in [c.name for c in full_upd.table.columns]

    # REPLICA IDENTITY DEFAULT: old key only when the key changed, and on delete
    assert d_ins.after == {"id": 1, "v": "a"} and d_upd.before is None and d_upd.key == (1,)
    assert d_key.before == {"id": 1} and d_key.after == {"id": 2, "v": "b"} and d_key.key == (2,)
    assert d_del.op.value == "d" and d_del.before == {"id": 2} and d_del.key == (2,)
    # a key-only old row must encode even though v is NOT NULL: without FULL, non-key columns are nullable
    codec = codecs.for_change(d_del)
    assert RowCodec(codec.version).decode(codec.encode(d_del.before or {})) == {"id": 2, "v": None}
    # the metadata the relay registers at start is the same as what the stream's Relation messages give
    at_start = {m.name: m for m in src.tables()}
    assert at_start["t_default"] == d_del.table and at_start["t_types"] == types_ins.table
    assert at_start["t_toast_full"] == full_upd.table
    src.uninstall()
    src.close()


def test_ddl_mid_stream_new_schema_versions_old_events_decode(pg_server: PgServer) -> None:
    db = pg_server.create_database("pgddl")
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, a int, b text)", db)
    src = source_for(pg_server, db, ["t"], slot="ddl")
    src.open()
    after = src.start_scn()
    for sql in [
        "INSERT INTO t VALUES (1, 10, 'one')",
        "ALTER TABLE t ADD COLUMN c date",
        "INSERT INTO t VALUES (2, 20, 'two', '2024-05-06')",
        "ALTER TABLE t DROP COLUMN b",
        "INSERT INTO t VALUES (3, 30, '2024-05-07')",
        "ALTER TABLE t ALTER COLUMN a TYPE numeric(8,1)",
        "INSERT INTO t VALUES (4, 40.5, '2024-05-08')",
    ]:
        pg_server.execute(sql, db)
    got = drain(src, after, 4)
    registry = SchemaRegistry()
    codecs = Codecs(registry)
    encoded = []
    for _scn, [change] in got:
        codec = codecs.for_change(change)
        encoded.append((codec.version.fingerprint, codec.encode(change.after or {})))
    versions = registry.versions("t")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert len({fp for fp, _ in encoded}) == 4
    decoded = [RowCodec(registry.get(fp)).decode(data) for fp, data in encoded]  # type: ignore[arg-type]
    assert decoded == [
        {"id": 1, "a": 10, "b": "one"},
        {"id": 2, "a": 20, "b": "two", "c": dt.date(2024, 5, 6)},
        {"id": 3, "a": 30, "c": dt.date(2024, 5, 7)},
        {"id": 4, "a": Decimal("40.5"), "c": dt.date(2024, 5, 8)},
    ]
    # an old event read with the newest compatible reader schema (v3): added column defaults to null
    v1 = registry.get(encoded[0][0])
    v3 = versions[2]
    assert v1 is not None
    assert RowCodec(v1, reader_schema=v3.schema).decode(encoded[0][1]) == {"id": 1, "a": 10, "c": None}
    src.uninstall()
    src.close()


def run_relay_cli(tmp_path: Path, source: str, *args: str, **relay: Any) -> subprocess.CompletedProcess[str]:
    cfg = write_config(
        tmp_path / "cli.yaml",
        {"relay": {"source": source, "state_dir": str(tmp_path / "s"), "listen": f"127.0.0.1:{free_port()}", **relay}},
    )
    return subprocess.run(
        [sys.executable, "-m", "headrace", "relay", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_wrong_wal_level_and_missing_replication_right(pg_server: PgServer, tmp_path: Path) -> None:
    db = pg_server.create_database("pgrefuse")
    pg_server.execute("DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN", db)
    r = run_relay_cli(tmp_path, pg_server.url(db, user="plain"), postgres={"slot": "refuse"})
    assert r.returncode == 2, r.stderr
    assert "REPLICATION" in r.stderr and "ALTER ROLE" in r.stderr
    # PostgreSQL will not even start with wal_level = replica while logical slots exist: drop them first
    pg_server.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")
    pg_server.set_config(wal_level="replica")
    try:
        r = run_relay_cli(tmp_path, pg_server.url(db), postgres={"slot": "refuse"})
        assert r.returncode == 2, r.stderr
        assert "wal_level = replica" in r.stderr and "wal_level = logical" in r.stderr
        assert not pg_server.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'refuse'")
    finally:
        pg_server.set_config(wal_level="logical")


def test_slot_invalidation_is_a_clear_fatal_error(pg_server: PgServer) -> None:
    db = pg_server.create_database("pginval")
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", db)
    src = source_for(pg_server, db, ["t"], slot="inval")
    src.open()
    pg_server.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    pg_server.execute("SELECT pg_reload_conf()")
    try:
        for i in range(6):  # the slot is not advanced while WAL moves on: the server invalidates it
            pg_server.execute(f"INSERT INTO t VALUES ({i}, repeat('x', 1000)); SELECT pg_switch_wal()", db)
        pg_server.execute("CHECKPOINT")
        wait_until(
            lambda: (
                pg_server.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'inval'")
                == [("lost",)]
            ),
            20,
            "the slot to be invalidated",
        )
        with pytest.raises(FatalError, match=r"invalidated.*max_slot_wal_keep_size.*[Rr]e-seed"):
            src.open()
        with pytest.raises(FatalError, match=r"invalidated|no longer"):
            list(src.read(None, threading.Event()))
    finally:
        pg_server.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        pg_server.execute("SELECT pg_reload_conf()")
        src.uninstall()
        src.close()


def test_export_snapshot_lines_up_with_the_slot(pg_server: PgServer) -> None:
    db = pg_server.create_database("pgsnap")
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'before')", db)
    cfg = RelayConfig(source=pg_server.url(db), tables=["t"], postgres={"slot": "snap", "publication": "snap"})
    with export_snapshot(cfg) as snap, contextlib.closing(pg_server.connect(db, autocommit=False)) as c:
        pg_server.execute("INSERT INTO t VALUES (2, 'after')", db)  # committed after the snapshot
        with c.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snap.snapshot_name,))
            cur.execute("SELECT id, v FROM t ORDER BY id")
            assert cur.fetchall() == [(1, "before")]
        c.rollback()
    with pytest.raises(UsageError), export_snapshot(cfg):  # a new snapshot would not line up with the slot
        pass
    src = source_for(pg_server, db, ["t"], slot="snap")
    src.open()  # finds the slot the snapshot created
    assert src.start_scn() == snap.after_scn
    [(_scn, [change])] = drain(src, snap.after_scn, 1)
    assert change.after == {"id": 2, "v": "after"}
    src.uninstall()
    src.close()


def _confirmed_flush(pg: PgServer, slot: str) -> int:
    [(lsn,)] = pg.execute(f"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return parse_lsn(lsn)


def test_flush_position_follows_durable_acks_and_slot_survives_stop(
    pg_server: PgServer, tmp_path: Path, daemons: Any
) -> None:
    db = pg_server.create_database("pgack")
    with contextlib.closing(pg_server.connect(db, autocommit=False)) as conn:
        create_tables("postgresql", conn)
        relay, url = start_relay(
            daemons, tmp_path, pg_server.url(db), durable_consumers=["bootstrap"],
            postgres={"slot": "ack", "publication": "ack", "status_interval": 1},
        )  # fmt: skip
        start = _confirmed_flush(pg_server, "ack")
        txns = transactions(7, 20)
        apply("postgresql", conn, txns)
    windows = collect(url, list(TABLES), sum(len(t) for t in txns), timeout=30)
    time.sleep(2.5)  # two status intervals: an (incorrect) advance would show by now
    # psycopg2 may confirm a keepalive's position over WAL that carried no change for us (before the
    # first change arrived); it must never move past a change no durable consumer acknowledged.
    unacked = _confirmed_flush(pg_server, "ack")
    assert start <= unacked <= windows[0].scn, "the slot moved past an unacknowledged change"
    mid = windows[9].scn
    r = httpx.post(url + "/v1/ack", json={"consumer": "bootstrap", "scn": mid})
    assert r.status_code == 200, r.text
    wait_until(lambda: _confirmed_flush(pg_server, "ack") == mid + 1, 15, "flush position = acked SCN + 1")
    info = httpx.get(url + "/v1/status").json()["source_info"]
    assert info["slot"] == "ack" and info["retained_wal_bytes"] >= 0
    metrics = httpx.get(url + "/metrics").text
    assert "headrace_relay_pg_slot_retained_wal_bytes" in metrics
    assert relay.stop() == 0
    # stopping the relay never drops the slot; only `headrace relay uninstall` does
    assert pg_server.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'ack'") == [(1,)]
    r2 = run_relay_cli(tmp_path, pg_server.url(db), "uninstall", postgres={"slot": "ack", "publication": "ack"})
    assert r2.returncode == 0, r2.stderr
    assert pg_server.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'ack'") == []


def test_relay_kill9_and_postgres_restart_mid_stream(pg_server: PgServer, tmp_path: Path, daemons: Any) -> None:
    db = pg_server.create_database("pgrestart")
    conn = pg_server.connect(db, autocommit=False)
    create_tables("postgresql", conn)
    conn.close()
    relay, url = start_relay(daemons, tmp_path, pg_server.url(db), postgres={"slot": "rs", "publication": "rs"})
    txns = transactions(11, 600)
    want = expected(txns)
    total = sum(len(t) for t in want)
    gate = threading.Event()
    gate.set()
    written = [0]

    def writer() -> None:
        c = pg_server.connect(db, autocommit=False)
        for i, t in enumerate(txns):
            gate.wait()
            try:
                apply("postgresql", c, [t])
            except Exception:  # the server went away between gate checks: reconnect and write it again
                gate.wait()
                c = pg_server.connect(db, autocommit=False)
                apply("postgresql", c, [t])
            written[0] = i + 1
            time.sleep(0.002)
        c.close()

    w = threading.Thread(target=writer)
    w.start()
    seen = []
    ck = tmp_path / "sub.ckpt"

    def on_window(win: Any) -> None:
        seen.append(win)
        n = len(seen)
        if n == 150:  # kill -9 the relay in the middle of the stream, start it again
            relay.kill9()
            restart_relay(relay, url)
        if n == 350:  # restart PostgreSQL under the relay (the writer pauses meanwhile)
            gate.clear()
            pg_server.restart("fast")
            gate.set()

    collect(url, list(TABLES), total, timeout=150, checkpoint=ck, on_window=on_window)
    w.join(60)
    got = events_of(seen)
    flat = [e for t in want for e in t]
    assert len(got) == len(flat), "every change exactly once"
    assert got == flat, "in commit order, values equal"
    assert [len(x.events) for x in seen] == [len(t) for t in want], "one whole window per transaction"
    assert relay.alive() and relay.starts == 2
    assert "source_unavailable" in relay.output(), "the relay saw PostgreSQL go away and came back by itself"


def _rss_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_million_row_transaction_in_bounded_memory(pg_server: PgServer, tmp_path: Path, daemons: Any) -> None:
    rows = int(os.environ.get("HEADRACE_TEST_BIG_ROWS", "1000000"))
    db = pg_server.create_database("pgbig")
    pg_server.execute("CREATE TABLE big (id int PRIMARY KEY, v int)", db)
    buffer_bytes = 96 << 20
    relay, url = start_relay(
        daemons, tmp_path, pg_server.url(db), tables=["big"], buffer_bytes=buffer_bytes,
        postgres={"slot": "big", "publication": "big"},
    )  # fmt: skip
    assert relay.proc is not None
    base_kib = _rss_hwm_kib(relay.proc.pid)
    pg_server.execute(f"INSERT INTO big SELECT g, g * 2 FROM generate_series(1, {rows}) g", db)
    [(commit_lsn,)] = pg_server.execute("SELECT pg_current_wal_lsn()::text", db)

    wait_until(lambda: httpx.get(url + "/v1/status").json()["events"] >= rows, 300, "the million-row window")
    window_mib = httpx.get(url + "/v1/status").json()["bytes"] / (1 << 20)
    hwm_mib = _rss_hwm_kib(relay.proc.pid) / 1024  # before serving it (a response copies the window once more)
    # count the window's frames from the raw stream (decoding a million rows here would only slow the test)
    from headrace.relay._event import peek_header

    r = httpx.get(url + "/v1/stream", params={"max_bytes": 1 << 20, "wait_ms": 0}, timeout=60)  # one whole window
    assert r.status_code == 200
    body, offset, count, ends = r.content, 0, 0, []
    while offset < len(body):
        h = peek_header(body, offset)
        offset += h.length
        count += 1
        if h.window_end:
            ends.append((count, h.scn))
    assert count == rows and ends == [(rows, ends[0][1])], "one window of exactly a million events"
    assert ends[0][1] <= parse_lsn(commit_lsn)
    # The source streams the transaction row by row (alone it drains a million rows with no RSS growth);
    # what the relay holds is the encoded window, which its buffer must keep whole, and building it costs
    # about 4x its size transiently (a list of frames, then one joined bytes object). Holding the rows as
    # Python objects instead would take ~400 MiB (measured with tracemalloc) on top of that.
    growth = hwm_mib - base_kib / 1024
    assert growth < 4.5 * window_mib and growth < 3 * buffer_bytes / (1 << 20), (
        f"relay peak RSS {hwm_mib:.0f} MiB, baseline {base_kib / 1024:.0f}, window {window_mib:.0f}"
    )
    print(f"\nmillion-row transaction: relay peak RSS {hwm_mib:.0f} MiB, baseline {base_kib / 1024:.0f} MiB, "
          f"encoded window {window_mib:.0f} MiB")  # fmt: skip
