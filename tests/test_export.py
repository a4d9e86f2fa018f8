"""``headrace export``: database tables → Parquet. Typed values, full and incremental runs, refusals,
kill -9 at random moments, and (PostgreSQL) one consistent snapshot across tables while writers run."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from db_servers import PgServer
from support import wait_until, write_config
from test_logpath_flow import s3  # noqa: F401  (fixture: a local S3 server)

from headrace.batch._config import ExportConfig
from headrace.batch._export import read_export, run_export
from headrace.errors import UsageError


def _sqlite_db(path: Path, users: int, events: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as c:
        c.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, balance NUMERIC(10, 2), "
            "born DATE, seen DATETIME, active BOOLEAN, avatar BLOB);"
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, doc JSON);"
            "CREATE TABLE headrace_changes (scn INTEGER PRIMARY KEY);"  # headrace's own: not exported by default
        )
        c.executemany(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    i,
                    f"user {i}",
                    None if i % 7 == 0 else i / 3,
                    f"{i}.25",
                    f"2000-01-{1 + i % 28:02d}",
                    f"2026-11-26 10:{i % 60:02d}:00.{i % 1000:06d}",
                    i % 2,
                    bytes([i % 256]) * 3,
                )
                for i in range(1, users + 1)
            ],
        )
        add_events(c, 0, events)
        c.commit()


def add_events(c: sqlite3.Connection, start: int, n: int) -> None:
    c.executemany(
        "INSERT INTO events (kind, doc) VALUES (?, ?)",
        [(f"k{i % 3}", json.dumps({"i": i, "tags": ["a", i]})) for i in range(start, start + n)],
    )


def expected_users(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f"user {i}",
            "score": None if i % 7 == 0 else i / 3,
            "balance": decimal.Decimal(f"{i}.25"),
            "born": dt.date(2000, 1, 1 + i % 28),
            "seen": dt.datetime(2026, 11, 26, 10, i % 60, 0, i % 1000),
            "active": bool(i % 2),
            "avatar": bytes([i % 256]) * 3,
        }
        for i in range(1, n + 1)
    ]


def cfg(tmp_path: Path, **extra: Any) -> ExportConfig:
    return ExportConfig.model_validate(
        {"url": f"sqlite:///{tmp_path / 'app.db'}", "output": str(tmp_path / "out"), **extra}
    )


def export_dirs(out: Path, table: str) -> list[str]:
    return sorted(p.name for p in (out / f"table={table}").iterdir() if p.is_dir())


def test_sqlite_full_and_incremental_export_every_row_once_with_types(tmp_path: Path) -> None:
    _sqlite_db(tmp_path / "app.db", 3000, 1000)
    c = cfg(tmp_path, incremental={"events": "seq"}, batch_rows=700, part_rows=1000)
    s1 = run_export(c, run_id="r1")
    assert s1.ok and s1.records == 4000
    users = read_export(str(tmp_path / "out"), "users")
    assert users.to_pylist() == expected_users(3000)
    assert str(users.schema.field("balance").type) == "decimal128(10, 2)"
    assert str(users.schema.field("seen").type) == "timestamp[us]"
    assert len(list((tmp_path / "out" / "table=users" / "export=r1").glob("*.parquet"))) == 3, "part_rows"
    events = read_export(str(tmp_path / "out"), "events")
    assert events.column("seq").to_pylist() == list(range(1, 1001))
    assert json.loads(events.column("doc")[5].as_py()) == {"i": 5, "tags": ["a", 5]}

    # more events and changed users: the users snapshot is replaced, events get only the new rows
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as con:
        add_events(con, 1000, 250)
        con.execute("UPDATE users SET name = 'renamed' WHERE id = 1")
        con.commit()
    s2 = run_export(c, run_id="r2")
    assert s2.ok and s2.records == 3000 + 250
    users2 = read_export(str(tmp_path / "out"), "users")
    assert users2.num_rows == 3000 and users2.column("name")[0].as_py() == "renamed"
    assert export_dirs(tmp_path / "out", "users") == ["export=r2"], "the superseded snapshot is deleted"
    events2 = read_export(str(tmp_path / "out"), "events")
    assert events2.column("seq").to_pylist() == list(range(1, 1251)), "each row exactly once, in order"
    man = json.loads((tmp_path / "out" / "table=events" / "MANIFEST.json").read_text())
    assert man["watermark"] == 1250 and [e["rows"] for e in man["exports"]] == [1000, 250]

    # nothing new: the manifest stays as it is, and no empty export folder appears
    assert run_export(c, run_id="r3").ok
    assert export_dirs(tmp_path / "out", "events") == ["export=r1", "export=r2"]
    assert sorted(p.name for p in (tmp_path / "out").glob("table=*")) == ["table=events", "table=users"]


def test_incremental_on_a_timestamp_column_keeps_its_watermark_typed(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as con:
        con.execute("CREATE TABLE hits (at DATETIME NOT NULL, path TEXT)")
        con.executemany(
            "INSERT INTO hits VALUES (?, ?)", [(f"2026-11-26 10:00:{s:02d}.000000", "/a") for s in range(30)]
        )
        con.commit()
    c = cfg(tmp_path, incremental={"hits": "at"})
    assert run_export(c, run_id="a").records == 30
    man = json.loads((tmp_path / "out" / "table=hits" / "MANIFEST.json").read_text())
    assert man["watermark"] == "2026-11-26T10:00:29"
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as con:
        con.executemany(
            "INSERT INTO hits VALUES (?, ?)", [(f"2026-11-26 10:01:{s:02d}.000000", "/b") for s in range(5)]
        )
        con.commit()
    assert run_export(c, run_id="b").records == 5
    at = read_export(str(tmp_path / "out"), "hits").column("at").to_pylist()
    assert at == sorted(at) and len(at) == len(set(at)) == 35


def test_rows_to_batch_converts_only_what_arrow_does_not_take_and_names_bad_columns() -> None:
    from headrace.batch._export_arrow import rows_to_batch
    from headrace.relay import Column, ColumnType, TableMeta

    meta = TableMeta(
        "t",
        (
            Column("s", ColumnType("string")),
            Column("d", ColumnType("decimal", precision=6, scale=2)),
            Column("u", ColumnType("uuid")),
            Column("j", ColumnType("json")),
            Column("a", ColumnType("array", items=ColumnType("uuid"))),
        ),
    )
    u = uuid.UUID(int=7)
    rows = [("x", decimal.Decimal("1.50"), u, {"k": [1]}, [u, None]), (5, 2.25, None, "[1]", None)]
    got = rows_to_batch(meta, rows).to_pylist()
    assert got == [
        {"s": "x", "d": decimal.Decimal("1.50"), "u": str(u), "j": '{"k":[1]}', "a": [str(u), None]},
        {"s": "5", "d": decimal.Decimal("2.25"), "u": None, "j": "[1]", "a": None},
    ]
    assert rows_to_batch(meta, []).num_rows == 0
    bad = TableMeta("t", (Column("n", ColumnType("long")),))
    with pytest.raises(ValueError, match="column 'n' \\(long\\): a value does not fit int64"):
        rows_to_batch(bad, [(1,), ("not a number",)])


def test_bad_configuration_is_refused_naming_the_problem_and_writes_nothing(tmp_path: Path) -> None:
    _sqlite_db(tmp_path / "app.db", 10, 10)
    cases = [
        ({"tables": ["users", "nope"]}, "export.tables: ['nope'] not in the database"),
        ({"incremental": {"events": "missing"}}, "export.incremental.events: no column 'missing'"),
        ({"incremental": {"events": "doc"}}, "column 'doc' is json; an incremental column must be one of"),
        ({"tables": ["users"], "incremental": {"events": "seq"}}, "table 'events' is not exported"),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
            run_export(cfg(tmp_path, **extra))
        assert not list((tmp_path / "out").glob("table=*")), "nothing is written"
    # from the command line: exit 2 and the message
    path = write_config(tmp_path / "c.yaml", {"export": {**cfg(tmp_path).model_dump(by_alias=True), "tables": ["x"]}})
    p = subprocess.run(
        [sys.executable, "-m", "headrace", "export", "--config", str(path)], capture_output=True, text=True
    )
    assert p.returncode == 2 and "export.tables: ['x'] not in the database" in p.stderr
    bad = write_config(tmp_path / "d.yaml", {"export": {"url": "sqlite:///x.db", "batch_rows": 0, "tabels": []}})
    p = subprocess.run(
        [sys.executable, "-m", "headrace", "export", "--config", str(bad)], capture_output=True, text=True
    )
    assert p.returncode == 2 and "export.batch_rows" in p.stderr and "export.tabels" in p.stderr


def test_kill9_at_random_moments_then_rerun_leaves_every_row_once(tmp_path: Path) -> None:
    _sqlite_db(tmp_path / "app.db", 60_000, 60_000)
    path = write_config(
        tmp_path / "c.yaml",
        {
            "export": {
                **cfg(tmp_path).model_dump(by_alias=True),
                "incremental": {"events": "seq"},
                "batch_rows": 2000,
                "part_rows": 4000,
                "compression": "gzip",  # slower: more moments to be killed at
            }
        },
    )
    cmd = [sys.executable, "-m", "headrace", "export", "--config", str(path), "--log-format", "json"]
    rng = random.Random(5)
    out = tmp_path / "out"
    killed_mid_work = 0
    for round_ in range(6):
        with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as con:
            add_events(con, 60_000 + round_ * 500, 500)
            con.commit()
        before = sorted(str(p) for p in out.rglob("*")) if out.exists() else []
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(
            lambda b=before, p=proc: (
                (sorted(str(x) for x in out.rglob("*")) if out.exists() else []) != b or p.poll() is not None
            ),
            60,
            "the run to start writing",
        )
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.kill()
            killed_mid_work += 1
        proc.wait()
        # whatever the moment, the committed files hold each row at most once
        for table, key in (("users", "id"), ("events", "seq")):
            if (out / f"table={table}" / "MANIFEST.json").exists():
                ids = read_export(str(out), table, [key]).column(key).to_pylist()
                assert len(ids) == len(set(ids)), f"{table}: a row twice after a kill"
    assert killed_mid_work >= 3, f"only {killed_mid_work} runs were killed while working"
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "headrace export: ok: " in final.stdout and "records" in final.stdout and "chunks" not in final.stdout
    assert read_export(str(out), "users", ["id"]).column("id").to_pylist() == list(range(1, 60_001))
    assert read_export(str(out), "events", ["seq"]).column("seq").to_pylist() == list(range(1, 63_001))
    assert export_dirs(out, "users") == [
        e["name"] for e in json.loads((out / "table=users" / "MANIFEST.json").read_text())["exports"]
    ], "no orphan or superseded folder is left"


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    import fcntl
    import os

    _sqlite_db(tmp_path / "app.db", 5, 5)
    (tmp_path / "out").mkdir()
    fd = os.open(tmp_path / "out" / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Exception, match="another headrace export is using export output"):
            run_export(cfg(tmp_path))
    finally:
        os.close(fd)
    assert run_export(cfg(tmp_path)).ok


# -- PostgreSQL ----------------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE accounts (
    id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12, 2), score double precision,
    active boolean, born date, seen timestamptz, tags text[], doc jsonb, ref uuid, blob bytea, m mood,
    wait interval, at time
);
INSERT INTO accounts
SELECT g, 'name ' || g, (g * 1.25)::numeric(12, 2), g / 7.0, g % 2 = 0, date '2000-01-01' + g % 9000,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '1.5 second', ARRAY['t' || g % 5, NULL],
       jsonb_build_object('g', g), md5(g::text)::uuid, decode(md5(g::text), 'hex'),
       (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, g * interval '1 minute', time '10:00' + g * interval '1 s'
FROM generate_series(1, 5000) g;
CREATE TABLE left_side (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE right_side (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO left_side SELECT g, 1000 FROM generate_series(1, 20000) g;
INSERT INTO right_side SELECT g, 1000 FROM generate_series(1, 20000) g;
"""


@pytest.mark.postgres
def test_postgres_types_and_one_consistent_snapshot_across_tables_while_writers_run(
    tmp_path: Path, pg_server: PgServer
) -> None:
    db = pg_server.create_database("export_test")
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(PG_SCHEMA)
    # writers move amounts from left_side to right_side in one transaction each: the two tables'
    # sums always add up to 40,000,000, so only a snapshot across both tables keeps that total
    stop = threading.Event()
    moves = [0]

    def writer() -> None:
        rng = random.Random(9)
        with contextlib.closing(pg_server.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
            while not stop.is_set():
                a, b, x = rng.randint(1, 20000), rng.randint(1, 20000), rng.randint(1, 50)
                cur.execute("UPDATE left_side SET n = n - %s WHERE id = %s", (x, a))
                cur.execute("UPDATE right_side SET n = n + %s WHERE id = %s", (x, b))
                conn.commit()
                moves[0] += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_until(lambda: moves[0] > 50, 30, "writers running")
        c = ExportConfig.model_validate(
            {"url": pg_server.url(db), "output": str(tmp_path / "out"), "batch_rows": 500, "part_rows": 4000}
        )
        summary = run_export(c)
        assert summary.ok
        during = moves[0]
    finally:
        stop.set()
        t.join(10)
    assert during > 100, "writers committed while the export read"
    out = str(tmp_path / "out")
    left = sum(read_export(out, "left_side").column("n").to_pylist())
    right = sum(read_export(out, "right_side").column("n").to_pylist())
    assert left + right == 40_000_000, "the tables of one run are one snapshot"
    assert left != 20_000_000, "the snapshot was taken after some moves"

    got = read_export(out, "accounts")
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM accounts ORDER BY id")
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert got.column_names == names and got.num_rows == 5000
    types = {f.name: str(f.type) for f in got.schema}
    assert types["balance"] == "decimal128(12, 2)" and types["seen"] == "timestamp[us, tz=UTC]"
    assert types["tags"].startswith("list<") and types["tags"].endswith(": string>") and types["wait"] == "duration[us]"
    for want, have in zip(rows, got.to_pylist(), strict=True):
        want = {
            **want,
            "ref": str(want["ref"]),
            "doc": json.dumps(want["doc"], separators=(",", ":")),
            "blob": bytes(want["blob"]),
        }
        assert have == want
    assert uuid.UUID(got.column("ref")[0].as_py())
    # the files are plain Parquet: any reader opens them
    first = next((tmp_path / "out" / "table=accounts").rglob("*.parquet"))
    assert pq.read_metadata(first).num_rows > 0


def test_export_dag_runs_under_dag_test(tmp_path: Path, airflow_env: dict[str, str]) -> None:
    from airflow_support import run_dag

    _sqlite_db(tmp_path / "app.db", 200, 50)
    path = write_config(
        tmp_path / "headrace.yaml",
        {"export": {**cfg(tmp_path).model_dump(by_alias=True), "incremental": {"events": "seq"}}},
    )
    result = run_dag(airflow_env, "headrace_export", path)
    assert "headrace_export" in result["dags"] and result["tasks"] == ["export"]
    assert result["state"] == "success", result
    assert read_export(str(tmp_path / "out"), "users").to_pylist() == expected_users(200)
    assert read_export(str(tmp_path / "out"), "events").num_rows == 50


def test_export_to_s3_full_and_incremental(tmp_path: Path, s3: str) -> None:  # noqa: F811  (the fixture)
    from headrace._storage import resolve

    _sqlite_db(tmp_path / "app.db", 500, 100)
    output = f"s3://logs/exports?endpoint_override={s3}&scheme=http&region=us-east-1"
    c = cfg(tmp_path, output=output, incremental={"events": "seq"}, part_rows=200)
    assert run_export(c, run_id="one").ok
    with contextlib.closing(sqlite3.connect(tmp_path / "app.db")) as con:
        add_events(con, 100, 40)
        con.commit()
    assert run_export(c, run_id="two").ok
    assert read_export(output, "users").to_pylist() == expected_users(500)
    assert read_export(output, "events", ["seq"]).column("seq").to_pylist() == list(range(1, 141))
    store = resolve(output)
    assert store.list_dirs(store.path("table=users")) == ["export=two"], "the superseded snapshot is deleted"
    assert store.list_dirs(store.path("table=events")) == ["export=one", "export=two"]


@pytest.mark.mariadb
def test_mariadb_types_in_one_repeatable_read_snapshot(tmp_path: Path, mariadb_server: Any) -> None:
    db = mariadb_server.create_database("export_test")
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, price DECIMAL(10, 2), "
            "weight DOUBLE, made DATE, seen DATETIME(6), raw BLOB, size ENUM('s', 'm', 'l'), note TEXT)"
        )
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    i,
                    f"item {i}",
                    decimal.Decimal(i) / 4,
                    None if i % 5 == 0 else i * 1.5,
                    dt.date(2020, 1, 1) + dt.timedelta(days=i),
                    dt.datetime(2026, 11, 26, 12, 0, 0, i),
                    bytes([i % 256, 0]),
                    "sml"[i % 3],
                    "é" * (i % 4),
                )
                for i in range(1, 2001)
            ],
        )
    out = str(tmp_path / "out")
    assert run_export(ExportConfig(url=mariadb_server.url(db), output=out, batch_rows=300)).ok
    got = read_export(out, "items")
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM items ORDER BY id")
        names = [d[0] for d in cur.description]
        want = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert got.column_names == names and got.to_pylist() == want
    assert str(got.schema.field("price").type) == "decimal128(10, 2)"


def test_sqlite_unconstrained_numeric_is_exported_as_its_exact_positional_text(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    values = [0, 1.5, 0.1, -7, 2**62, 1e29, 1e-7, "12.50", float("inf"), None]
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n NUMERIC)")
        c.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
        c.commit()
    run_export(ExportConfig.model_validate({"url": f"sqlite:///{db}", "output": str(tmp_path / "out")}))
    got = read_export(str(tmp_path / "out"), "t").sort_by("id").column("n").to_pylist()
    # what SQLite stored (NUMERIC affinity turns "12.50" into the REAL 12.5), never in exponent form
    assert got == [
        "0", "1.5", "0.1", "-7", str(2**62), "100000000000000000000000000000", "0.0000001", "12.5", "Infinity", None
    ]  # fmt: skip
