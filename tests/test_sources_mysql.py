"""MariaDB (row binlog) source against a private MariaDB: types, DDL, refusals, a spilled big transaction,
purged binlogs, binlog rotation, a stalled stream, server restart and relay kill -9 mid-stream."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from db_servers import MariaDbServer
from sources_harness import collect, events_of, restart_relay, start_relay
from sources_workload import TABLES, apply, create_tables, expected, transactions
from support import free_port, wait_until, write_config

from headrace.errors import FatalError
from headrace.relay import JSON_NULL, Codecs, RowCodec, SchemaRegistry
from headrace.relay._config import RelayConfig
from headrace.relay.sources import ChangeWindow, RowChange
from headrace.relay.sources._mysqltypes import unpack_scn
from headrace.relay.sources.mysql import MysqlSource

pytestmark = pytest.mark.mariadb


def source_for(m: MariaDbServer, db: str, tmp_path: Path, **mysql: Any) -> MysqlSource:
    cfg = RelayConfig(
        source=m.url(db), state_dir=str(tmp_path / "state"), mysql={"server_id": 4242, "stall_seconds": 5, **mysql}
    )
    return MysqlSource(cfg)


def drain(
    src: MysqlSource, after: int | None, windows: int, timeout: float = 30.0
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
    reader.close()  # runs the source's cleanup now (closes the stream), not at garbage collection
    assert len(out) == windows, f"got {len(out)} of {windows} windows"
    return out


def test_types_ddl_and_spilled_transaction(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mytypes")
    mariadb_server.execute(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, ti TINYINT, b BOOLEAN, ui INT UNSIGNED, ubi BIGINT UNSIGNED, "
        "si SMALLINT UNSIGNED, dec1 DECIMAL(12,3), f FLOAT, d DOUBLE, vc VARCHAR(20), tx TEXT, bl BLOB, "
        "vb VARBINARY(10), dt DATETIME(6), ts TIMESTAMP(3) NULL, da DATE, tm TIME(6), yr YEAR, j JSON, "
        "e ENUM('sad','very happy'), s SET('a','b','c'), bi BIT(8), uu UUID)",
        db,
    )
    mariadb_server.execute("CREATE TABLE big (id INT PRIMARY KEY, v INT)", db)
    src = source_for(mariadb_server, db, tmp_path, spill_rows=1000)
    src.open()
    after = src.start_scn()
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute(
            "INSERT INTO t VALUES (1, -128, true, 4294967295, 18446744073709551615, 65535, -1234.5, 1.5, 2.25, "
            "'héllo 😀', 'text', x'00ff', x'01', '2024-02-29 23:59:59.999999', '2024-01-01 10:00:00.5', "
            "'2024-02-29', '13:45:01.5', 2024, '{\"a\": [1, 2], \"b\": null}', 'very happy', 'c,a', b'101', "
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')"
        )
        cur.execute("UPDATE t SET ti = 6, s = '' WHERE id = 1")
        cur.execute("ALTER TABLE t ADD COLUMN extra INT")
        cur.execute("UPDATE t SET extra = 5 WHERE id = 1")
        cur.execute("ALTER TABLE t DROP COLUMN tx")
        cur.execute("DELETE FROM t")
        cur.execute("BEGIN")
        cur.executemany("INSERT INTO big VALUES (%s, %s)", [(i, i * 3) for i in range(25_000)])
        cur.execute("COMMIT")
    got = drain(src, after, 5)
    assert [scn for scn, _ in got] == sorted(scn for scn, _ in got)
    registry = SchemaRegistry()
    codecs = Codecs(registry)

    def rt(c: RowChange, image: str = "after") -> dict[str, Any]:
        codec = codecs.for_change(c)
        return RowCodec(codec.version).decode(codec.encode(getattr(c, image)))

    [ins], [upd], [upd2], [dele], bigtxn = [cs for _, cs in got]
    assert rt(ins) == {
        "id": 1, "ti": -128, "b": True, "ui": 4294967295, "ubi": Decimal(18446744073709551615), "si": 65535,
        "dec1": Decimal("-1234.500"), "f": 1.5, "d": 2.25, "vc": "héllo 😀", "tx": "text", "bl": b"\x00\xff",
        "vb": b"\x01", "dt": dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        "ts": dt.datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=dt.UTC), "da": dt.date(2024, 2, 29),
        "tm": dt.timedelta(hours=13, minutes=45, seconds=1.5), "yr": 2024, "j": {"a": [1, 2], "b": None},
        "e": "very happy", "s": "a,c", "bi": 5, "uu": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    }  # fmt: skip
    kinds = {c.name: c.type.kind for c in ins.table.columns}
    assert kinds["ubi"] == "decimal" and kinds["e"] == "enum" and kinds["j"] == "json" and kinds["b"] == "boolean"
    assert ins.table.column("e").type.symbols == ("sad", "very happy")
    assert upd.before is not None and rt(upd, "before")["ti"] == -128 and rt(upd)["ti"] == 6
    assert rt(upd)["s"] == ""  # the empty SET is not NULL
    assert rt(upd2)["extra"] == 5  # a column added mid-stream: a new schema version
    assert dele.op.value == "d" and rt(dele, "before")["extra"] == 5 and "tx" not in rt(dele, "before")
    assert [v.version for v in registry.versions("t")] == [1, 2, 3]
    # a transaction bigger than spill_rows went through a temporary file, in order, whole
    assert [c.after["id"] for c in bigtxn] == list(range(25_000))  # type: ignore[index]
    assert {c.scn for c in bigtxn} == {got[-1][0]}
    src.close()


def run_relay_cli(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = write_config(
        tmp_path / "cli.yaml",
        {"relay": {"source": source, "state_dir": str(tmp_path / "s"), "listen": f"127.0.0.1:{free_port()}"}},
    )
    return subprocess.run(
        [sys.executable, "-m", "headrace", "relay", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_wrong_binlog_settings(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("myrefuse")
    for name, bad in [
        ("binlog_format", "STATEMENT"),
        ("binlog_row_image", "MINIMAL"),
        ("binlog_row_metadata", "NO_LOG"),
    ]:
        good = mariadb_server.execute(f"SELECT @@GLOBAL.{name}")[0][0]
        mariadb_server.execute(f"SET GLOBAL {name} = '{bad}'")
        try:
            r = run_relay_cli(tmp_path, mariadb_server.url(db))
        finally:
            mariadb_server.execute(f"SET GLOBAL {name} = '{good}'")
        assert r.returncode == 2, r.stderr
        assert f"{name} = {bad.upper()}" in r.stderr and f"{name} = {good}" in r.stderr


def test_purged_binlog_is_a_clear_fatal_error(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mypurge")
    mariadb_server.execute("CREATE TABLE t (id INT PRIMARY KEY)", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    saved = src.start_scn()
    mariadb_server.execute("INSERT INTO t VALUES (1)", db)
    mariadb_server.execute("FLUSH BINARY LOGS")
    [(current, _pos, *_)] = mariadb_server.execute("SHOW MASTER STATUS")
    for pid, _u, _h, _db, command, *_ in mariadb_server.execute("SHOW PROCESSLIST"):
        if command == "Binlog Dump":  # readers left by earlier tests keep their file from being purged
            with contextlib.suppress(Exception):
                mariadb_server.execute(f"KILL {pid}")

    def purged() -> bool:  # MariaDB keeps a file until InnoDB has checkpointed its transactions: retry
        mariadb_server.execute(f"PURGE BINARY LOGS TO '{current}'")
        first = mariadb_server.execute("SHOW BINARY LOGS")[0][0]
        return unpack_scn(saved)[0] < int(first.rsplit(".", 1)[1])

    wait_until(purged, 30, "the binlog file of the saved position to be purged", interval=0.5)
    with pytest.raises(FatalError, match=r"gone from the server.*[Rr]e-seed"):
        next(iter(src.read(None, threading.Event())))
    src.close()


def test_rotation_stall_restart_and_relay_kill9_mid_stream(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    db = mariadb_server.create_database("myrestart")
    conn = mariadb_server.connect(db, autocommit=False)
    create_tables("mariadb", conn)
    conn.close()
    relay, url = start_relay(
        daemons, tmp_path, mariadb_server.url(db), tables=list(TABLES), mysql={"server_id": 4343, "stall_seconds": 2}
    )
    txns = transactions(13, 600)
    want = expected(txns)
    total = sum(len(t) for t in want)
    gate = threading.Event()
    gate.set()

    def writer() -> None:
        c = mariadb_server.connect(db, autocommit=False)
        for t in txns:
            gate.wait()
            try:
                apply("mariadb", c, [t])
            except Exception:  # the server went away: wait for it, reconnect, write the transaction again
                gate.wait()
                with contextlib.suppress(Exception):
                    c.rollback()
                c = mariadb_server.connect(db, autocommit=False)
                apply("mariadb", c, [t])
            time.sleep(0.002)
        c.close()

    w = threading.Thread(target=writer)
    w.start()
    seen: list[Any] = []
    files_before = len(mariadb_server.execute("SHOW BINARY LOGS"))

    def on_window(win: Any) -> None:
        seen.append(win)
        n = len(seen)
        if n in (100, 120):  # binlog rotation mid-stream
            mariadb_server.execute("FLUSH BINARY LOGS")
        if n == 200:  # a stalled server: no events, no heartbeats (SIGSTOP) for longer than stall_seconds
            assert mariadb_server.proc is not None
            os.kill(mariadb_server.proc.pid, signal.SIGSTOP)
            time.sleep(4)
            os.kill(mariadb_server.proc.pid, signal.SIGCONT)
        if n == 300:  # server restart mid-stream (the writer pauses meanwhile)
            gate.clear()
            mariadb_server.restart()
            gate.set()
        if n == 450:  # kill -9 of the relay
            relay.kill9()
            restart_relay(relay, url)

    collect(url, list(TABLES), total, timeout=150, checkpoint=tmp_path / "sub.ckpt", on_window=on_window)
    w.join(60)
    got = events_of(seen)
    flat = [e for t in want for e in t]
    assert len(got) == len(flat) and got == flat, "every change exactly once, in commit order, values equal"
    assert [len(x.events) for x in seen] == [len(t) for t in want], "one whole window per transaction"
    scns = [x.scn for x in seen]
    assert scns == sorted(set(scns))
    assert len({unpack_scn(s)[0] for s in scns}) >= 3, "the stream followed the rotations into new binlog files"
    assert len(mariadb_server.execute("SHOW BINARY LOGS")) >= files_before + 3
    out = relay.output() if relay.starts == 1 else (tmp_path / "relay.1.log").read_text()
    assert "binlog_stream_stalled" in out, "the watchdog noticed the stalled stream"
    assert relay.alive() and relay.starts == 2


@pytest.mark.parametrize(
    ("case", "ddl", "literal", "want"),
    [
        ("uuid_last_byte_zero", "UUID", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a00'",
         uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a00")),
        ("binary_trailing_zeros", "BINARY(4)", "x'0100'", b"\x01\x00\x00\x00"),
        ("decimal_65_30", "DECIMAL(65,30)", "-99999999999999999999999999999999999.999999999999999999999999999999",
         Decimal("-99999999999999999999999999999999999.999999999999999999999999999999")),
        ("time_beyond_a_day", "TIME(6)", "'-838:59:59.999999'",
         -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999)),
        ("zero_date", "DATE", "'0000-00-00'", "0000-00-00"),
        ("partial_date", "DATE", "'2024-00-10'", "2024-00-10"),
        ("zero_datetime", "DATETIME(3)", "'0000-00-00 00:00:00'", "0000-00-00 00:00:00.000"),
        ("zero_timestamp", "TIMESTAMP NULL", "'0000-00-00 00:00:00'", "0000-00-00 00:00:00"),
        ("empty_set", "SET('a','b')", "''", ""),
        ("json_exact_number", "JSON", "'1.0000000000000000001'", Decimal("1.0000000000000000001")),
        ("json_null", "JSON", "'null'", JSON_NULL),
    ],
)  # fmt: skip
def test_values_that_stopped_capture_or_came_out_wrong(
    mariadb_server: MariaDbServer, tmp_path: Path, case: str, ddl: str, literal: str, want: Any
) -> None:
    """Issue 10's MariaDB cases, each on its own: the value arrives exactly, also as a primary key."""
    db = mariadb_server.create_database(f"my_{case}")
    mariadb_server.execute(f"CREATE TABLE t (id INT NOT NULL, v {ddl}, PRIMARY KEY (id))", db)
    keyed = ddl.split("(")[0] in ("UUID", "BINARY", "DECIMAL", "TIME", "DATE", "DATETIME")
    if keyed:
        mariadb_server.execute(f"CREATE TABLE k (v {ddl} NOT NULL PRIMARY KEY)", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    after = src.start_scn()
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute("BEGIN")
        cur.execute(f"INSERT INTO t VALUES (1, {literal})")
        if keyed:
            cur.execute(f"INSERT INTO k VALUES ({literal})")
        cur.execute("COMMIT")
    [(_scn, changes)] = drain(src, after, 1)
    codecs = Codecs(SchemaRegistry())
    for c in changes:
        codec = codecs.for_change(c)
        got = RowCodec(codec.version).decode(codec.encode(c.after))["v"]  # type: ignore[arg-type]
        assert type(got) is type(want) and got == want, (c.table.name, got)
        if c.table.name == "k":
            assert c.key == (want,)
    src.close()


def test_events_from_before_an_alter_keep_their_own_types(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    """The relay reads old events after the table changed: values decode with the table map's types."""
    db = mariadb_server.create_database("myalter")
    mariadb_server.execute("CREATE TABLE d (id INT PRIMARY KEY, v VARCHAR(10), n DECIMAL(5,2), gone DATE)", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    after = src.start_scn()
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("INSERT INTO d VALUES (1, 'abc', 1.5, '2024-02-29')")
        cur.execute("ALTER TABLE d MODIFY v BIGINT, MODIFY n DECIMAL(10,4), DROP COLUMN gone")
        cur.execute("INSERT INTO d VALUES (2, 7, 2.25)")
    got = drain(src, after, 2)  # read only now, with information_schema already changed
    codecs = Codecs(SchemaRegistry())

    def rt(c: RowChange) -> tuple[dict[str, Any], dict[str, str]]:
        codec = codecs.for_change(c)
        kinds = {col.name: col.type.kind for col in c.table.columns}
        return RowCodec(codec.version).decode(codec.encode(c.after)), kinds  # type: ignore[arg-type]

    (old, old_kinds), (new, new_kinds) = rt(got[0][1][0]), rt(got[1][1][0])
    assert old == {"id": 1, "v": "abc", "n": Decimal("1.50"), "gone": dt.date(2024, 2, 29)}
    assert old_kinds == {"id": "int", "v": "string", "n": "decimal", "gone": "date"}
    assert new == {"id": 2, "v": 7, "n": Decimal("2.2500")} and new_kinds["v"] == "long"
    assert got[0][1][0].table.column("n").type.scale == 2 and got[1][1][0].table.column("n").type.scale == 4
    src.close()


def test_savepoints_and_xa_transactions(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    """A SAVEPOINT inside a transaction is not DDL (it used to drop the rows before it); XA transactions
    are delivered at their XA COMMIT, and a rolled-back one never."""
    db = mariadb_server.create_database("myxa")
    mariadb_server.execute("CREATE TABLE t (id INT PRIMARY KEY)", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    after = src.start_scn()
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        other = mariadb_server.connect(db)
        for sql in [
            "BEGIN", "INSERT INTO t VALUES (1)", "SAVEPOINT a", "INSERT INTO t VALUES (2)", "ROLLBACK TO SAVEPOINT a",
            "INSERT INTO t VALUES (3)", "RELEASE SAVEPOINT a", "COMMIT",
            "XA START 'x1'", "INSERT INTO t VALUES (10)", "XA END 'x1'", "XA PREPARE 'x1'",
            "other: INSERT INTO t VALUES (11)",  # committed between the prepare and the commit of x1
            "XA COMMIT 'x1'",
            "XA START 'x2'", "INSERT INTO t VALUES (20)", "XA END 'x2'", "XA COMMIT 'x2' ONE PHASE",
            "XA START 'x3'", "INSERT INTO t VALUES (30)", "XA END 'x3'", "XA PREPARE 'x3'", "XA ROLLBACK 'x3'",
            "INSERT INTO t VALUES (99)",
        ]:  # fmt: skip
            if sql.startswith("other: "):
                with other.cursor() as c2:
                    c2.execute(sql.removeprefix("other: "))
            else:
                cur.execute(sql)
        other.close()
    got = drain(src, after, 5)
    assert [[c.key[0] for c in changes] for _scn, changes in got] == [[1, 3], [11], [10], [20], [99]]
    assert [scn for scn, _ in got] == sorted(scn for scn, _ in got)
    src.close()
