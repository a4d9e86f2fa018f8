"""MariaDB consistent snapshot (``MysqlSource.snapshot_rows``): rows byte-identical to the binlog stream's,
and a snapshot position that splits concurrent writes exactly (snapshot + stream after it = the table)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from db_servers import MariaDbServer
from test_conformance_mariadb import TABLES, edge_rows

from headrace.relay import Codecs, SchemaRegistry
from headrace.relay._config import RelayConfig
from headrace.relay._event import Op, encode_key
from headrace.relay.sources import ChangeWindow, RowChange
from headrace.relay.sources.mysql import MysqlSource

pytestmark = pytest.mark.mariadb


def source_for(m: MariaDbServer, db: str, tmp_path: Path, tables: list[str] | None = None) -> MysqlSource:
    cfg = RelayConfig(
        source=m.url(db),
        state_dir=str(tmp_path / "state"),
        tables=tables,
        mysql={"server_id": 4646, "stall_seconds": 5},
    )
    return MysqlSource(cfg)


def stream_until(src: MysqlSource, after: int, done: Any, timeout: float = 60.0) -> list[RowChange]:
    """Changes after ``after`` until ``done(changes)`` says enough."""
    out: list[RowChange] = []
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    reader = src.read(after, stop)
    try:
        for w in reader:
            if isinstance(w, ChangeWindow):
                out.extend(w.changes)
            if done(out):
                break
            assert time.monotonic() < deadline, f"stream: {len(out)} changes after {timeout}s"
    finally:
        stop.set()
        reader.close()
    return out


def test_snapshot_rows_are_byte_identical_to_streamed_rows(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mysnapbytes")
    for table, (keys, others) in TABLES.items():
        cols = ", ".join(f"`{c.name}` {c.ddl}" for c in keys + others)
        mariadb_server.execute(f"CREATE TABLE `{table}` ({cols}, PRIMARY KEY ({', '.join(k.name for k in keys)}))", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    after = src.start_scn()
    n = 0
    with contextlib.closing(mariadb_server.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("SET SESSION time_zone = '+00:00'")
        for table in ("nums", "strs", "times"):
            for i, row in enumerate(edge_rows(TABLES[table][1])):
                row = {"id": i, **row}
                names = ", ".join(f"`{c}`" for c in row)
                cur.execute(
                    f"INSERT INTO `{table}` ({names}) VALUES ({', '.join(['%s'] * len(row))})", tuple(row.values())
                )
                n += 1
        for v, k in enumerate([b"\x01", b"\x01\x00\x02", b"\x00", b"\xff\xff\xff\xff"]):
            cur.execute("INSERT INTO bkeys VALUES (%s, %s)", (k, v))
            n += 1
        for v, u in enumerate(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a00", "00000000-0000-0000-0000-000000000000"]):
            cur.execute("INSERT INTO ukeys VALUES (%s, %s)", (u, v))
            n += 1
        conn.commit()
    streamed = stream_until(src, after, lambda cs: len(cs) >= n)
    snap = [c for page in src.snapshot_rows(list(TABLES), page_rows=3) for c in page.rows]
    assert len(streamed) == len(snap) == n
    assert {c.scn for c in snap} == {snap[0].scn} and snap[0].scn >= streamed[-1].scn

    codecs = Codecs(SchemaRegistry())
    by_key = {(c.table.name, encode_key(c.key)): c for c in streamed}
    for c in snap:
        s = by_key[(c.table.name, encode_key(c.key))]
        sc, cc = codecs.for_change(s), codecs.for_change(c)
        assert sc.version.fingerprint == cc.version.fingerprint, c.table.name
        diff = {k: (v, s.after[k]) for k, v in c.after.items() if repr(v) != repr(s.after[k])}  # type: ignore[index,union-attr]
        assert cc.encode(c.after) == sc.encode(s.after), (c.table.name, c.key, diff)  # type: ignore[arg-type]
    src.close()


def test_snapshot_position_splits_concurrent_writes_exactly(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mysnapsplit")
    mariadb_server.execute("CREATE TABLE acc (id INT PRIMARY KEY, v BIGINT NOT NULL, t VARCHAR(20))", db)
    mariadb_server.execute("INSERT INTO acc SELECT seq, 0, 'seed' FROM seq_1_to_3000", db)
    src = source_for(mariadb_server, db, tmp_path, tables=["acc"])
    src.open()
    stop = threading.Event()
    written = {"txns": 0}

    def writer() -> None:
        rnd = random.Random(7)
        next_id = 10_000
        with contextlib.closing(mariadb_server.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
            while not stop.is_set():
                for _ in range(rnd.randint(1, 4)):
                    r = rnd.random()
                    if r < 0.5:
                        cur.execute(
                            "UPDATE acc SET v = v + 1, t = %s WHERE id = %s", (f"w{next_id}", rnd.randint(1, 3000))
                        )
                    elif r < 0.8:
                        next_id += 1
                        cur.execute("INSERT INTO acc VALUES (%s, 1, 'new')", (next_id,))
                    else:
                        cur.execute("DELETE FROM acc WHERE id = %s", (rnd.randint(1, 3000),))
                conn.commit()
                written["txns"] += 1
            cur.execute("INSERT INTO acc VALUES (-1, 0, 'marker')")
            conn.commit()

    w = threading.Thread(target=writer)
    w.start()
    try:
        deadline = time.monotonic() + 30
        while written["txns"] < 20:  # the snapshot starts while transactions are committing
            assert time.monotonic() < deadline
            time.sleep(0.01)
        copy: dict[int, tuple[int, str | None]] = {}
        scn = None
        pages = 0
        for page in src.snapshot_rows(["acc"], page_rows=250):
            scn = page.scn
            pages += 1
            for c in page.rows:
                assert c.op is Op.READ and c.after is not None
                copy[c.after["id"]] = (c.after["v"], c.after["t"])
            time.sleep(0.02)  # writers keep committing while the snapshot is read
        before_stop = written["txns"]
    finally:
        stop.set()
        w.join(30)
    assert scn is not None and pages >= 12
    assert written["txns"] > before_stop >= 20
    changes = stream_until(src, scn, lambda cs: any(c.key == (-1,) for c in cs))
    assert changes and changes[0].scn > scn
    for c in changes:
        if c.op is Op.DELETE:
            copy.pop(c.key[0])
        else:
            assert c.after is not None
            copy[c.key[0]] = (c.after["v"], c.after["t"])
    table = {int(i): (int(v), t) for i, v, t in mariadb_server.execute("SELECT id, v, t FROM acc", db)}
    assert copy == table
    src.close()


def test_snapshot_resumes_after_a_key_and_reads_keyless_tables(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mysnapresume")
    mariadb_server.execute("CREATE TABLE comp (a VARCHAR(10), b TIME(1), c INT, PRIMARY KEY (a, b))", db)
    mariadb_server.execute(
        "INSERT INTO comp SELECT CHAR(65 + seq % 5), SEC_TO_TIME((CAST(seq AS SIGNED) - 500) * 7.3), seq "
        "FROM seq_1_to_1000",
        db,
    )
    mariadb_server.execute("CREATE TABLE nokey (x INT, y VARCHAR(5))", db)
    mariadb_server.execute("INSERT INTO nokey SELECT seq % 7, 'y' FROM seq_1_to_130", db)
    src = source_for(mariadb_server, db, tmp_path)
    src.open()
    whole = [(p.table.name, c.key, c.after) for p in src.snapshot_rows(["comp", "nokey"], 100) for c in p.rows]
    assert len(whole) == 1130
    first: list[Any] = []
    saved = None
    for page in src.snapshot_rows(["comp", "nokey"], page_rows=64):  # a seeding run that crashes mid-table
        first.extend((page.table.name, c.key, c.after) for c in page.rows)
        saved = (page.table.name, page.last_key)
        if len(first) >= 64 * 5:
            break
    assert saved is not None and saved[0] == "comp"
    rest = [
        (p.table.name, c.key, c.after) for p in src.snapshot_rows(["comp", "nokey"], 64, resume=saved) for c in p.rows
    ]
    assert first + rest == whole, "resumed after the saved key: no row twice, none missing, same order"
    negative = [k for t, k, _ in whole if t == "comp" and k[1].total_seconds() < 0]
    assert negative, "negative TIME keys paginate too"
    nokey = [a for t, k, a in whole if t == "nokey"]
    assert len(nokey) == 130 and all(k == () for t, k, _ in whole if t == "nokey")
    src.close()
