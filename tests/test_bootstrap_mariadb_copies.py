"""MariaDB bootstrap end to end (issue 10): a new subscriber of a 100,000-row MariaDB table while
writers run; its copy equals the table.

A private MariaDB, a ``headrace relay`` process on its row binlog, and a ``headrace bootstrap``
process seeding from MariaDB (``bootstrap.seed: mysql://…``: ``START TRANSACTION WITH CONSISTENT
SNAPSHOT`` and ``binlog_snapshot_file``/``binlog_snapshot_position``) and following the relay as a
durable consumer. The table predates the relay (so only the seed can provide its rows) and has an
integer key, INT, VARCHAR, DECIMAL, DATETIME(6), a TEXT column with large values and a nullable
column. A writer thread commits inserts, updates and deletes (1–3 statements per transaction) from
before the seed starts until the new subscriber is back on the relay. The subscriber (client library,
``from_snapshot=True``) goes snapshot → catch-up → relay; after the writer stops and one last marker
transaction commits, the subscriber passes the marker's SCN and its copy is compared with
``SELECT`` of the table, value by value, with the MariaDB conformance test's comparison rule. The
seed runs as a user with only ``SELECT``, and a table of the same database the relay does not
capture must not be served.

Second test: a bootstrap server started before the relay waits for it before taking its snapshot
(one taken earlier would be older than the relay's first position), and a seed cut by kill -9 is
replaced by a new generation from a newer snapshot — one ``seed_interrupted`` re-seed — after which a
new subscriber's copy (client library, and ``headrace subscribe --from-snapshot``) again equals the
table.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_servers import MariaDbServer
from support import free_port, wait_until, write_config
from test_conformance_mariadb import Col, mismatch, select_expr

from headrace.relay.client import MemoryCheckpointStore, SnapshotRestarted, Subscriber
from headrace.relay.sources._mysqlstream import binlog_index
from headrace.relay.sources._mysqltypes import pack_scn

pytestmark = pytest.mark.mariadb

ROWS = 100_000
COLS = [
    Col("id", "INT NOT NULL", "int"),
    Col("n", "INT NOT NULL", "int"),
    Col("name", "VARCHAR(100) NOT NULL", "text"),
    Col("amount", "DECIMAL(14,4) NOT NULL", "dec"),
    Col("at", "DATETIME(6) NOT NULL", "datetime", 6),
    Col("body", "TEXT", "text"),
    Col("opt", "BIGINT NULL", "int"),
]
DDL = f"CREATE TABLE t ({', '.join(f'`{c.name}` {c.ddl}' for c in COLS)}, PRIMARY KEY (id)) ENGINE=InnoDB"
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 éü中😀"


def _body(rng: random.Random, i: int) -> str | None:
    if i % 40 == 0:  # large values: 8–16 k characters, multi-byte ones included (about 9–19 kB)
        return "".join(rng.choices(ALPHABET, k=rng.randint(8_000, 16_000)))
    if i % 7 == 0:
        return None
    return f"body {i} " + "x" * (i % 50)


def _row(rng: random.Random, i: int) -> tuple[Any, ...]:
    return (
        i,
        rng.randint(-(2**31), 2**31 - 1),
        f"name-{i}-ü",
        f"{rng.randint(-(10**10), 10**10 - 1)}.{rng.randint(0, 9999):04d}",
        f"20{rng.randint(10, 30)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}",
        _body(rng, i),
        None if i % 3 == 0 else rng.randint(-(2**63), 2**63 - 1),
    )


def _load(m: MariaDbServer, db: str, rows: int) -> None:
    """``rows`` rows in multi-row INSERTs (PyMySQL's executemany rewrites INSERT … VALUES into one)."""
    rng = random.Random(1)
    with contextlib.closing(m.connect(db, autocommit=False)) as conn, conn.cursor() as cur:
        for lo in range(1, rows + 1, 2_000):
            cur.executemany(
                "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s)", [_row(rng, i) for i in range(lo, lo + 2_000)]
            )
            conn.commit()


def _position(cur: Any) -> int:
    cur.execute("SHOW MASTER STATUS")
    file, pos = cur.fetchone()[:2]
    return pack_scn(binlog_index(str(file)), int(pos))


class Writers:
    """A thread committing 1–3-statement transactions (inserts, updates, deletes) until stopped or bounded."""

    def __init__(self, m: MariaDbServer, db: str, rows: int, max_txns: int = 30_000, max_seconds: float = 70.0) -> None:
        self.conn = m.connect(db, autocommit=False)
        self.rows = rows
        self.max_txns, self.max_seconds = max_txns, max_seconds
        self.stop_event = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, cur: Any, rng: random.Random, next_id: list[int]) -> None:
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            i = rng.randint(1, self.rows + 2_000)
            if r < 0.5:
                cur.execute(
                    "UPDATE t SET n = n + 1, amount = amount + %s, at = %s, opt = %s WHERE id = %s",
                    (
                        f"{rng.randint(0, 99)}.{rng.randint(0, 9999):04d}",
                        f"2026-12-{rng.randint(1, 28):02d} 12:{rng.randint(0, 59):02d}:00.{rng.randint(0, 999999):06d}",
                        None if rng.random() < 0.3 else rng.randint(-(10**12), 10**12),
                        i,
                    ),
                )
            elif r < 0.65:  # a large TEXT value replaced (or removed)
                cur.execute("UPDATE t SET body = %s, name = %s WHERE id = %s", (_body(rng, 40 * i), f"w{i}", i))
            elif r < 0.85:
                next_id[0] += 1
                cur.execute(
                    "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s)", _row(rng, next_id[0])
                )  # ids above rows + 2,000 never collide with the updates' picks
            else:
                cur.execute("DELETE FROM t WHERE id = %s", (i,))

    def _run(self) -> None:
        rng = random.Random(10)
        next_id = [self.rows + 10_000]
        deadline = time.monotonic() + self.max_seconds
        try:
            with self.conn.cursor() as cur:
                while not self.stop_event.is_set() and self.commits < self.max_txns and time.monotonic() < deadline:
                    self._one(cur, rng, next_id)
                    self.conn.commit()
                    self.commits += 1
                    time.sleep(0.002)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Writers:
        self.thread.start()
        return self

    def stop(self) -> int:
        if not self.stop_event.is_set():
            self.stop_event.set()
            self.thread.join(30)
            self.conn.close()
        assert self.error is None, self.error
        return self.commits


def _table(m: MariaDbServer, db: str) -> dict[int, dict[str, str | None]]:
    """Every row as the database's text under the conformance rule's SELECT expressions."""
    out: dict[int, dict[str, str | None]] = {}
    with contextlib.closing(m.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {', '.join(select_expr(c) for c in COLS)} FROM t")
        for r in cur.fetchall():
            row = {c.name: (v.decode() if isinstance(v, bytes) else v) for c, v in zip(COLS, r, strict=True)}
            out[int(str(row["id"]))] = row
    return out


class MariaStack:
    """A MariaDB database with ``rows`` rows in ``t`` (and an uncaptured ``aside``), a relay capturing
    ``t`` and a bootstrap server seeding from it as a SELECT-only user."""

    def __init__(
        self, m: MariaDbServer, tmp: Path, daemons: Any, db: str, rows: int, server_id: int, page_rows: int = 5_000
    ) -> None:
        self.m, self.rows = m, rows
        self.db = m.create_database(db)
        m.execute(DDL, db)
        # a table of the same database the relay does not capture: the bootstrap server must not
        # serve it (its copy would never change)
        m.execute("CREATE TABLE aside (id INT PRIMARY KEY, v INT) ENGINE=InnoDB", db)
        m.execute("INSERT INTO aside VALUES (1, 1), (2, 2)", db)
        # the seed runs as a user with SELECT on the database and nothing else (docs/bootstrap.md)
        m.execute(f"CREATE OR REPLACE USER '{db}_seed'@'%' IDENTIFIED BY 'seedpw'")
        m.execute(f"GRANT SELECT ON `{db}`.* TO '{db}_seed'@'%'")
        _load(m, db, rows)
        self.relay_url = f"http://127.0.0.1:{free_port()}"
        self.boot_url = f"http://127.0.0.1:{free_port()}"
        config = write_config(
            tmp / "headrace.yaml",
            {
                "relay": {
                    "listen": self.relay_url.removeprefix("http://"),
                    "source": m.url(db),
                    "tables": ["t"],
                    "state_dir": str(tmp / "relay"),
                    "durable_consumers": ["bootstrap"],
                    "buffer_bytes": 64 << 20,
                    "mysql": {"server_id": server_id, "stall_seconds": 10},
                },
                "bootstrap": {
                    "listen": self.boot_url.removeprefix("http://"),
                    "relays": [self.relay_url],
                    "store": f"sqlite:///{tmp / 'boot.db'}",
                    "seed": m.url(db).replace("root@", f"{db}_seed:seedpw@"),
                    "seed_page_rows": page_rows,
                    "compact_interval_seconds": 0.5,
                    "retention_seconds": 0,
                    "session_timeout_seconds": 5,
                },
            },
        )
        self.relay = daemons(["relay", "--config", str(config)], "relay")
        self.boot = daemons(["bootstrap", "--config", str(config)], "bootstrap")

    def start_relay(self) -> None:
        self.relay.start()
        self.relay.wait_http(self.relay_url + "/healthz", timeout=30)

    def start_bootstrap(self) -> None:
        self.boot.start()
        self.boot.wait_http(self.boot_url + "/healthz", timeout=30)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.boot_url + "/v1/status", timeout=10).json()
        return body

    def follow(self, writers: Writers) -> tuple[dict[int, dict[str, Any]], list[str], int]:
        """A brand-new subscriber from the snapshot, to the relay; then the writers stop, a marker
        commits and the subscriber passes it. Returns its copy, its phases and its snapshot rows."""
        copy: dict[int, dict[str, Any]] = {}
        phases: list[str] = []
        snapshot_rows = 0
        sub = Subscriber(
            [self.relay_url],
            ["t"],
            MemoryCheckpointStore(),
            bootstrap=[self.boot_url],
            from_snapshot=True,
            wait_ms=500,
            subscriber_id="maria",
            snapshot_rows=5_000,
            max_bytes=4 << 20,
        )
        marker: int | None = None
        on_relay = 0
        deadline = time.monotonic() + 60
        try:
            for w in sub.windows(idle_exit=20):
                assert not isinstance(w, SnapshotRestarted), (w.reason, w.detail)
                for e in w.events:
                    assert e.table == "t"
                    k = int(e.key[0])
                    if e.op.value == "r":
                        snapshot_rows += 1
                    if e.op.value == "d" or e.after is None:
                        copy.pop(k, None)
                    else:
                        copy[k] = dict(e.after)
                phase = sub.checkpoint.phase if sub.checkpoint else None  # (saved when the next window is asked for)
                if phase is not None and (not phases or phases[-1] != phase):
                    phases.append(phase)
                on_relay += phase == "relay"
                if marker is None and phase == "relay" and on_relay >= 20:
                    # back on the relay with the writers still running: stop them, commit a marker
                    writers.stop()
                    with contextlib.closing(self.m.connect(self.db, autocommit=False)) as conn, conn.cursor() as cur:
                        cur.execute("UPDATE t SET n = n + 1 WHERE id = (SELECT min(id) FROM t)")
                        conn.commit()
                        marker = _position(cur)  # the position after the marker: its SCN
                if marker is not None and w.scn >= marker:
                    return copy, phases, snapshot_rows
                assert time.monotonic() < deadline, f"the subscriber is still in {phases} after 60 s"
            relay_st = httpx.get(self.relay_url + "/v1/status", timeout=10).json()
            raise AssertionError(
                f"the subscriber went idle in {phases} at {sub.checkpoint} before passing the marker {marker}; "
                f"relay: {relay_st}"
            )
        finally:
            sub.close()

    def assert_served(self, copy: dict[int, dict[str, Any]]) -> int:
        """The copy equals ``SELECT`` of the table value for value; only ``t`` is served. Returns the row count."""
        table = _table(self.m, self.db)
        missing = sorted(set(table) - set(copy))
        extra = sorted(set(copy) - set(table))
        wrong = []
        for k, text in table.items():
            if k in copy:
                problems = [p for c in COLS if (p := mismatch(c, copy[k].get(c.name), text[c.name])) is not None]
                if problems:
                    wrong.append((k, problems[:3]))
        assert not missing and not extra and not wrong, (len(missing), missing[:5], len(extra), extra[:5], wrong[:3])
        big = sum(1 for r in table.values() if r["body"] is not None and len(r["body"]) > 16_000)
        assert big > self.rows // 50, big
        served = httpx.get(self.boot_url + "/v1/sources", timeout=10).json()["sources"]
        assert [s["name"] for s in served] == ["t"], served
        return len(table)


def test_new_subscriber_of_a_100k_row_mariadb_table_while_writers_run_gets_the_table(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    t0 = time.monotonic()
    stack = MariaStack(mariadb_server, tmp_path, daemons, "bootmaria", ROWS, 4747)
    loaded = time.monotonic() - t0
    stack.start_relay()
    writers = Writers(mariadb_server, stack.db, ROWS).start()
    try:
        # the seed starts while the writers commit
        wait_until(lambda: writers.commits >= 50 or writers.error, 30, "the writers to start")
        at_seed = writers.commits
        stack.start_bootstrap()
        wait_until(lambda: stack.status()["snapshot_ready"], 60, "the MariaDB seed to be served", 0.2)
        seeded = time.monotonic() - t0
        assert writers.commits > at_seed, "the writers committed while the seed ran"
        copy, phases, snapshot_rows = stack.follow(writers)
    finally:
        writers.stop()
    st = stack.status()
    assert st["seed"]["method"] == "mysql_consistent_snapshot" and st["seed"]["done"], st["seed"]
    assert st["seed"]["rows"] >= ROWS - 10_000, st["seed"]
    assert st["reseeds"]["count"] == 0, st["reseeds"]
    assert phases == ["snapshot", "catchup", "relay"], phases
    assert snapshot_rows >= ROWS - 10_000, snapshot_rows
    compared = stack.assert_served(copy)
    print(
        f"mariadb bootstrap: loaded {ROWS} rows in {loaded:.1f}s, served after {seeded:.1f}s, "
        f"{writers.commits} writer transactions, {compared} rows compared, total {time.monotonic() - t0:.1f}s"
    )


def test_seed_waits_for_the_relay_and_a_seed_cut_by_kill9_starts_a_new_generation(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    rows = 20_000
    stack = MariaStack(mariadb_server, tmp_path, daemons, "bootmaria9", rows, 4848, page_rows=200)
    writers = Writers(mariadb_server, stack.db, rows).start()
    cli: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: writers.commits >= 50 or writers.error, 30, "the writers to start")
        # the bootstrap server first: a snapshot taken now would be older than the relay's first
        # position (a re-seed later); it waits for the relay instead, and says so
        stack.start_bootstrap()
        wait_until(lambda: "seed_waiting_for_relay" in stack.boot.output(), 20, "the seed to wait for the relay")
        assert stack.status()["building"] is None
        stack.start_relay()
        first = wait_until(
            lambda: (
                (b := stack.status()["building"]) and b["seed"].get("rows", 0) >= 2_000 and not b["seed"]["done"] and b
            ),
            60,
            "the seed to be under way",
            0.05,
        )
        stack.boot.kill9()
        stack.start_bootstrap()
        wait_until(lambda: stack.status()["snapshot_ready"], 60, "the new generation to be served", 0.2)
        st = stack.status()
        # the cut seed's snapshot died with its connection: a new generation from a new snapshot
        assert st["generation"] == first["gen"] + 1, (first, st)
        assert st["seed"]["start_scn"] > first["seed"]["start_scn"], (first, st["seed"])
        assert st["seed"]["done"] and st["seed"]["rows"] >= rows - 2_000, st["seed"]
        assert st["reseeds"]["count"] == 1 and st["reseeds"]["last_reason"] == "seed_interrupted", st["reseeds"]
        # `headrace subscribe --from-snapshot` too, started while the writers run (it exits when idle)
        cli_out = tmp_path / "cli.out"
        with open(cli_out, "wb") as o, open(tmp_path / "cli.err", "wb") as e:
            cli = subprocess.Popen(
                [sys.executable, "-m", "headrace", "subscribe", "--relay", stack.relay_url, "--bootstrap",
                 stack.boot_url, "--from-snapshot", "--checkpoint", str(tmp_path / "cli.cp.json"),
                 "--idle-exit", "4", "--sources", "t"],
                stdout=o, stderr=e, env={**os.environ},
            )  # fmt: skip
        copy, phases, _ = stack.follow(writers)
        assert cli.wait(60) == 0, (tmp_path / "cli.err").read_text()[-3000:]
    finally:
        writers.stop()
        if cli is not None and cli.poll() is None:
            cli.kill()
    assert phases == ["snapshot", "catchup", "relay"], phases
    stack.assert_served(copy)
    stack.assert_served(_cli_copy(cli_out.read_text()))


def _cli_copy(text: str) -> dict[int, dict[str, Any]]:
    """The copy ``headrace subscribe`` prints (JSON lines; decimals and datetimes as text) as typed rows."""
    copy: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        d = json.loads(line)
        assert "control" not in d, d  # no snapshot restart for this subscriber
        k = int(d["key"][0])
        after = d["after"]
        if d["op"] == "d" or after is None:
            copy.pop(k, None)
            continue
        copy[k] = {
            **after,
            "amount": Decimal(after["amount"]),
            "at": dt.datetime.fromisoformat(after["at"]),
        }
    return copy


def test_snapshot_refuses_a_table_hidden_by_privileges(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    """A table the seeding user may not read looks absent in ``information_schema``; skipping it would
    leave a copy with only the rows changed later, so the snapshot says which grant is missing. A
    table that really is gone is skipped (with a warning)."""
    from headrace.errors import UsageError
    from headrace.relay._config import RelayConfig
    from headrace.relay.sources.mysql import MysqlSource

    db = mariadb_server.create_database("bootmariapriv")
    mariadb_server.execute("CREATE TABLE t (id INT PRIMARY KEY)", db)
    mariadb_server.execute("CREATE TABLE secret (id INT PRIMARY KEY)", db)
    mariadb_server.execute("CREATE OR REPLACE USER 'hr_one'@'%' IDENTIFIED BY 'pw'")
    mariadb_server.execute(f"GRANT SELECT ON `{db}`.`t` TO 'hr_one'@'%'")
    url = mariadb_server.url(db).replace("root@", "hr_one:pw@")
    source = MysqlSource(RelayConfig(source=url, state_dir=str(tmp_path)))
    with pytest.raises(UsageError, match=r"cannot read bootmariapriv\.secret .*grant the user SELECT"):
        source.snapshot(["t", "secret"])
    mariadb_server.execute(f"GRANT SELECT ON `{db}`.* TO 'hr_one'@'%'")
    snap = source.snapshot(["t", "gone"])
    try:
        assert [m.name for m in snap.tables] == ["t"]
    finally:
        snap.close()
        source.close()
