"""Bootstrap seeding from MariaDB, end to end: a private MariaDB, real relay and bootstrap server processes,
writers committing throughout, and a new subscriber (the client library) that bootstraps from nothing
(the bootstrap server seeds from ``MysqlSource.snapshot``: a consistent snapshot at an exact binlog
position) and switches to the relay. Its materialised copy must equal the table, typed values and all."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_servers import MariaDbServer
from support import free_port, wait_until, write_config

from headrace.relay import JSON_NULL
from headrace.relay.client import MemoryCheckpointStore, Subscriber

# the same shapes run in the default suite in test_bootstrap_mariadb_copies.py; these are the slow variants
pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TABLES = ["accounts", "order_lines"]
LINES = 2_000


def schema(rows: int) -> list[str]:
    return [
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, balance DECIMAL(12,2), "
        "score DOUBLE, active BOOLEAN, born DATE, seen TIMESTAMP(6) NULL, t TIME(3), bin BINARY(6), ref UUID, "
        "doc JSON, m ENUM('sad','ok','happy'))",
        f"INSERT INTO accounts SELECT seq, CONCAT('name ', seq), seq * 1.25, seq / 7, seq % 2, "
        f"DATE '2000-01-01' + INTERVAL (seq % 9000) DAY, TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq * 1.5 SECOND, "
        f"SEC_TO_TIME((CAST(seq AS SIGNED) - {rows // 2}) * 10.001), UNHEX(LPAD(HEX(seq % 256), 4, '0')), "
        f"UUID(), CONCAT('{{\"g\": ', seq, ', \"x\": [1.50, \"two\", null]}}'), ELT(seq % 3 + 1, 'sad', 'ok', 'happy') "
        f"FROM seq_1_to_{rows}",
        "CREATE TABLE order_lines (order_id INT, line INT, qty INT NOT NULL, note VARCHAR(40), "
        "PRIMARY KEY (order_id, line))",
        f"INSERT INTO order_lines SELECT seq DIV 4, seq % 4, seq, IF(seq % 3 = 0, NULL, CONCAT('n', seq)) "
        f"FROM seq_1_to_{LINES}",
    ]


class Writers:
    """A thread committing small random transactions (insert, update, delete) until stopped."""

    def __init__(self, m: MariaDbServer, db: str, rows: int) -> None:
        self.conn = m.connect(db, autocommit=False)
        self.rows = rows
        self.stop_event = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, cur: Any, rng: random.Random, next_id: list[int]) -> None:
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.25:
                next_id[0] += 1
                i = next_id[0]
                cur.execute(
                    "INSERT INTO accounts VALUES (%s, %s, %s, %s, %s, CURRENT_DATE, NOW(6), '-838:59:59.999', "
                    "%s, UUID(), %s, 'happy')",
                    (i, f"new {i}", Decimal(rng.randint(-10**11, 10**11)) / 100, rng.random(), rng.randint(0, 1),
                     bytes([rng.randrange(256), 0]), '{"new": true, "n": 1.0000000000000000001}'),
                )  # fmt: skip
            elif op < 0.75:
                cur.execute(
                    "UPDATE accounts SET balance = balance + 1, name = CONCAT(name, '+'), seen = NOW(6), "
                    "score = %s, doc = JSON_SET(doc, '$.u', 1), m = 'sad', active = 2 WHERE id = %s",
                    (rng.random() * 1e9, rng.randint(1, next_id[0])),
                )
            elif op < 0.85:
                cur.execute("DELETE FROM accounts WHERE id = %s", (rng.randint(1, next_id[0]),))
            elif op < 0.95:
                cur.execute(
                    "UPDATE order_lines SET qty = qty + 1, note = NULL WHERE order_id = %s",
                    (rng.randint(0, LINES // 4),),
                )
            else:
                cur.execute(
                    "INSERT INTO order_lines VALUES (%s, %s, 7, 'w') ON DUPLICATE KEY UPDATE qty = 0",
                    (rng.randint(0, LINES), rng.randint(0, 9)),
                )

    def _run(self) -> None:
        rng = random.Random(6)
        next_id = [self.rows + 1_000]
        try:
            with self.conn.cursor() as cur:
                cur.execute("SET SESSION time_zone = '+00:00'")
                while not self.stop_event.is_set():
                    self._one(cur, rng, next_id)
                    self.conn.commit()
                    self.commits += 1
                    time.sleep(0.004)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Writers:
        self.thread.start()
        return self

    def stop(self) -> int:
        self.stop_event.set()
        self.thread.join(30)
        self.conn.close()
        assert self.error is None, self.error
        return self.commits


def _json(text: str) -> Any:  # the client's documented rule (docs/type-mapping.md)
    def number(t: str) -> float | Decimal:
        f = float(t)
        return f if repr(f) == t else Decimal(t)

    v = json.loads(text, parse_float=number)
    return JSON_NULL if v is None else v


def _source_rows(m: MariaDbServer, db: str) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    """Every row of the tables as the values a subscriber gets (the documented mapping), by (table, key)."""
    import pymysql

    out: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    with contextlib.closing(m.connect(db)) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SET SESSION time_zone = '+00:00'")
        for table, key in (("accounts", ("id",)), ("order_lines", ("order_id", "line"))):
            cur.execute(f"SELECT * FROM {table}")
            for r in cur.fetchall():
                if table == "accounts":
                    a = r["active"]
                    r["active"] = None if a is None else bool(a) if a in (0, 1) else str(a)  # BOOLEAN: 0/1, else text
                    r["seen"] = r["seen"].replace(tzinfo=dt.UTC) if r["seen"] is not None else None
                    r["ref"] = uuid.UUID(r["ref"]) if r["ref"] is not None else None
                    r["doc"] = _json(r["doc"]) if r["doc"] is not None else None
                out[(table, tuple(r[k] for k in key))] = dict(r)
    return out


class MariaStack:
    """A MariaDB database with a relay and a bootstrap server seeding from it."""

    def __init__(self, m: MariaDbServer, tmp: Path, daemons: Any, db: str, rows: int, page_rows: int) -> None:
        self.m, self.db = m, m.create_database(db)
        for sql in schema(rows):
            m.execute(sql, self.db)
        self.relay_url = f"http://127.0.0.1:{free_port()}"
        self.boot_url = f"http://127.0.0.1:{free_port()}"
        config = write_config(
            tmp / "headrace.yaml",
            {
                "relay": {
                    "listen": self.relay_url.removeprefix("http://"),
                    "source": m.url(self.db),
                    "tables": TABLES,
                    "state_dir": str(tmp / "relay"),
                    "durable_consumers": ["bootstrap"],
                    "buffer_bytes": 64 << 20,
                    "mysql": {"server_id": 4747},
                },
                "bootstrap": {
                    "listen": self.boot_url.removeprefix("http://"),
                    "relays": [self.relay_url],
                    "store": f"sqlite:///{tmp / 'boot.db'}",
                    "seed": m.url(self.db),
                    "seed_page_rows": page_rows,
                    "compact_interval_seconds": 0.5,
                    "retention_seconds": 0,
                    "session_timeout_seconds": 5,
                },
            },
        )
        self.relay = daemons(["relay", "--config", str(config)], "relay")
        self.boot = daemons(["bootstrap", "--config", str(config)], "bootstrap")

    def start(self) -> None:
        self.relay.start()
        self.relay.wait_http(self.relay_url + "/healthz", timeout=30)
        self.boot.start()
        self.boot.wait_http(self.boot_url + "/healthz", timeout=30)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.boot_url + "/v1/status", timeout=10).json()
        return body


def run_bootstrap(
    m: MariaDbServer, tmp_path: Path, daemons: Any, rows: int, page_rows: int = 5_000, kill_mid_seed: bool = False
) -> None:
    stack = MariaStack(m, tmp_path, daemons, f"bootmaria{rows}{'k' if kill_mid_seed else ''}", rows, page_rows)
    writers = Writers(m, stack.db, rows).start()
    copy: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    fingerprints: dict[tuple[str, str], set[str]] = {}
    phases: list[str] = []
    try:
        stack.start()
        first = None
        if kill_mid_seed:

            def mid_seed() -> dict[str, Any] | None:
                seed = stack.status()["seed"]
                return seed if seed and not seed["done"] and seed["rows"] > 0 else None

            first = wait_until(mid_seed, 60, "seeding to be under way", 0.02)
            stack.boot.kill9()
            time.sleep(0.5)  # writers commit past the first snapshot
            stack.boot.start()
            stack.boot.wait_http(stack.boot_url + "/healthz", timeout=30)
        wait_until(lambda: stack.status()["snapshot_ready"], 180, "the bootstrap snapshot to be ready", 0.2)
        seed = stack.status()["seed"]
        if first is not None:  # seeded again from a new snapshot, at a later binlog position
            assert seed["start_scn"] > first["start_scn"], (first, seed)
        assert seed["done"] and seed["method"] == "mysql_consistent_snapshot", seed
        assert seed["rows"] >= rows + LINES - 500, seed
        prog = stack.status()["seeding"]  # progress: the rows seeded, with the server's estimate per table
        assert prog["done"] and prog["rows"] == seed["rows"] and set(prog["tables"]) == set(TABLES), prog
        assert all(isinstance(t["estimated_rows"], int) for t in prog["tables"].values()), prog
        sub = Subscriber(
            [stack.relay_url], TABLES, MemoryCheckpointStore(), bootstrap=[stack.boot_url], from_snapshot=True,
            wait_ms=500, subscriber_id="maria-new",
        )  # fmt: skip
        reached: float | None = None
        try:
            for w in sub.windows(idle_exit=4.0):
                for e in w.events:
                    fingerprints.setdefault((e.table, e.op.value), set()).add(e.fingerprint)
                    k = (e.table, tuple(e.key))
                    if e.after is None:
                        copy.pop(k, None)
                    else:
                        copy[k] = e.after
                phase = sub.checkpoint.phase if sub.checkpoint else None
                if phase is not None and (not phases or phases[-1] != phase):
                    phases.append(phase)
                if phase == "relay" and reached is None:
                    reached = time.monotonic()
                if reached is not None and time.monotonic() - reached > 1.0 and not writers.stop_event.is_set():
                    writers.stop()
        finally:
            sub.close()
        assert writers.stop_event.is_set(), f"the subscriber never reached the relay: {phases}"
    finally:
        if not writers.stop_event.is_set():
            writers.stop()
    src = _source_rows(m, stack.db)
    assert len(src) > rows * 0.9 + LINES * 0.9
    assert writers.commits > 50, writers.commits  # writers really ran during the bootstrap
    assert phases[0] == "snapshot" and phases[-1] == "relay", phases
    missing = [k for k in src if k not in copy][:5]
    extra = [k for k in copy if k not in src][:5]
    wrong = [(src[k], copy[k]) for k in src if k in copy and copy[k] != src[k]][:3]
    assert not missing and not extra and not wrong, (missing, extra, wrong)
    # the seeded `r` events carry the relay's own schemas: subscribers cannot tell them apart
    for table in TABLES:
        seeded, streamed = fingerprints[(table, "r")], fingerprints.get((table, "u"), set())
        assert len(seeded) == 1 and streamed and seeded <= streamed, (table, seeded, streamed)


def test_new_subscriber_bootstraps_from_mariadb_then_follows_the_relay(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    run_bootstrap(mariadb_server, tmp_path, daemons, rows=10_000)


@pytest.mark.slow
def test_new_subscriber_of_a_100k_row_mariadb_table(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    run_bootstrap(mariadb_server, tmp_path, daemons, rows=100_000)


def test_kill9_of_bootstrap_mid_seed_from_mariadb_still_equals_the_table(
    mariadb_server: MariaDbServer, tmp_path: Path, daemons: Any
) -> None:
    run_bootstrap(mariadb_server, tmp_path, daemons, rows=10_000, page_rows=200, kill_mid_seed=True)
