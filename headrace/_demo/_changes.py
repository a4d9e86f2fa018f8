"""The demo's change path: SQLite → relay → a live subscriber; bootstrap server → a late subscriber.

The shop database starts with rows written before the relay runs (the relay only has changes since
it started, so only a snapshot has those); the demo then commits transactions, counts the changes a
subscriber following the relay receives, and finally starts ``headrace subscribe --from-snapshot``
(a late subscriber: snapshot from the bootstrap server, then the changes after it) and rebuilds the
tables from its output, to compare with the database row by row.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ..errors import FatalError
from ._procs import wait_for

__all__ = ["TABLES", "ChangeCounts", "create_shop", "export", "follow", "late_subscriber", "write_transactions"]

#: table → primary key column
TABLES = {"customers": "id", "orders": "id"}


@dataclass
class ChangeCounts:
    """Changes committed and delivered, and the late subscriber's copy against the database."""

    committed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, op) → changes
    delivered: Counter[tuple[str, str]] = field(default_factory=Counter)
    table_rows: Counter[str] = field(default_factory=Counter)
    snapshot_rows: Counter[str] = field(default_factory=Counter)  # "r" events of the late subscriber
    copy_rows: Counter[str] = field(default_factory=Counter)
    copy_equal: Counter[str] = field(default_factory=Counter)  # rows of the copy equal to the database's
    exported: Counter[str] = field(default_factory=Counter)  # rows in the Parquet export
    sample: str = ""


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
    con.execute("PRAGMA busy_timeout=30000")
    return con


def create_shop(db: Path, customers: int) -> None:
    """The shop database, with ``customers`` customers and their orders from before the relay ran."""
    con = _connect(db)
    try:
        con.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);"
            "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL,"
            " amount NUMERIC(10, 2) NOT NULL, placed_at TIMESTAMP NOT NULL);"
        )
        rng = random.Random(3)
        con.execute("BEGIN")
        for c in range(customers):
            con.execute("INSERT INTO customers VALUES (?, ?, ?)", (c, f"customer {c}", rng.choice(_CITIES)))
            con.execute(
                "INSERT INTO orders (customer_id, amount, placed_at) VALUES (?, ?, ?)",
                (c, round(rng.uniform(1, 500), 2), "2026-01-01 12:00:00"),
            )
        con.execute("COMMIT")
    finally:
        con.close()


_CITIES = ["Lyon", "Porto", "Graz", "Tartu", None]


def write_transactions(db: Path, first_customer: int, transactions: int, counts: ChangeCounts) -> None:
    """Commit ``transactions`` small transactions (inserts, updates, deletes); count each change."""
    rng = random.Random(7)
    con = _connect(db)
    try:
        for t in range(first_customer, first_customer + transactions):
            con.execute("BEGIN")
            con.execute("INSERT INTO customers VALUES (?, ?, ?)", (t, f"customer {t}", rng.choice(_CITIES)))
            counts.committed["customers", "c"] += 1
            for _ in range(rng.randint(1, 3)):
                con.execute(
                    "INSERT INTO orders (customer_id, amount, placed_at) VALUES (?, ?, ?)",
                    (t, round(rng.uniform(1, 500), 2), time.strftime("%Y-%m-%d %H:%M:%S")),
                )
                counts.committed["orders", "c"] += 1
            if rng.random() < 0.5:
                n = con.execute(
                    "UPDATE orders SET amount = amount + 1 WHERE id = (SELECT min(id) + ? FROM orders)",
                    (rng.randint(0, 50),),
                ).rowcount
                counts.committed["orders", "u"] += n
            if rng.random() < 0.3:
                n = con.execute("DELETE FROM orders WHERE id = (SELECT min(id) FROM orders)").rowcount
                counts.committed["orders", "d"] += n
            if rng.random() < 0.2:
                n = con.execute("UPDATE customers SET city = ? WHERE id = ?", ("Oslo", rng.randint(0, t))).rowcount
                counts.committed["customers", "u"] += n
            con.execute("COMMIT")
    finally:
        con.close()


def change_log_head(db: Path) -> int:
    """The SCN of the newest change the relay's triggers logged in ``db``."""
    con = _connect(db)
    try:
        row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'headrace_changes'").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0


def follow(relay: str, counts: ChangeCounts) -> None:
    """Receive, in this process, the changes the relay captured; stop once they match what was committed
    (or after 5 idle seconds)."""
    from ..relay.client import Subscriber
    from ..relay.client._cli import event_json

    sub = Subscriber([relay], list(TABLES))
    try:
        for window in sub.windows(idle_exit=5.0):
            for e in window.events:
                counts.delivered[e.table, e.op.value] += 1
                if not counts.sample:
                    counts.sample = event_json(e)
            if counts.delivered == counts.committed:
                break
    finally:
        sub.close()


def _norm(v: Any) -> Any:
    """A value as both sides can agree on: numbers as decimals to 2 places, times without the ``T``."""
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float | Decimal):
        return Decimal(str(v)).quantize(Decimal("0.01"))
    s = str(v)
    if len(s) >= 19 and s[4] == "-" and s[10] in "T ":
        return s[:10] + " " + s[11:19]
    try:
        return Decimal(s).quantize(Decimal("0.01"))
    except ArithmeticError:
        return s


def late_subscriber(base: Path, relay: str, bootstrap: str, db: Path, counts: ChangeCounts) -> None:
    """Wait until the bootstrap server has a snapshot that includes every change, run ``headrace
    subscribe --from-snapshot`` until it is idle, rebuild the tables from its output and compare."""
    head = change_log_head(db)

    def ready() -> bool:
        st = httpx.get(bootstrap + "/v1/status", timeout=5).json()
        return bool(st.get("snapshot_ready")) and int(st.get("applied_scn") or 0) >= head

    wait_for(ready, 60, f"the bootstrap server's snapshot to reach SCN {head}")
    out, err, checkpoint = base / "late-subscriber.jsonl", base / "late-subscriber.log", base / "late.checkpoint.json"
    with out.open("wb") as o, err.open("wb") as e:
        rc = subprocess.run(
            [sys.executable, "-m", "headrace", "subscribe", "--relay", relay, "--bootstrap", bootstrap,
             "--from-snapshot", "--idle-exit", "3", "--checkpoint", str(checkpoint), "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=120, check=False,
        ).returncode  # fmt: skip
    if rc != 0:
        raise FatalError(f"headrace subscribe --from-snapshot exited with status {rc}; see {err}")
    copy: dict[tuple[str, Any], dict[str, Any]] = {}
    with out.open() as f:
        for line in f:
            ev = json.loads(line)
            if ev.get("control") == "snapshot_restarted":
                copy.clear()
                counts.snapshot_rows.clear()
                continue
            key = (ev["table"], ev["key"][0])
            if ev["op"] == "r":
                counts.snapshot_rows[ev["table"]] += 1
            if ev["op"] == "d":
                copy.pop(key, None)
            else:
                copy[key] = ev["after"]
    con = _connect(db)
    con.row_factory = sqlite3.Row
    try:
        for table, pk in TABLES.items():
            for row in con.execute(f"SELECT * FROM {table}"):
                counts.table_rows[table] += 1
                got = copy.get((table, row[pk]))
                want = {k: _norm(row[k]) for k in row.keys()}  # noqa: SIM118 (a sqlite3.Row iterates values)
                if got is not None and {k: _norm(v) for k, v in got.items()} == want:
                    counts.copy_equal[table] += 1
    finally:
        con.close()
    for table, _ in copy:
        counts.copy_rows[table] += 1


def export(db: Path, out: Path, counts: ChangeCounts) -> list[str]:
    """``headrace export`` of the shop database into Parquet under ``out``; its failures."""
    from ..batch._config import ExportConfig
    from ..batch._export import read_export, run_export

    summary = run_export(ExportConfig(url=f"sqlite:///{db}", output=str(out), incremental={"orders": "id"}))
    for table in TABLES:
        counts.exported[table] = read_export(str(out), table).num_rows
    return [f"export: {f}" for f in summary.failures]
