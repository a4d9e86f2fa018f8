"""A source table for bootstrap tests, a writer process, and a materialiser of subscriber output.

As a script: ``python bootstrap_workload.py DB SEED STOP_FILE [SLEEP_MS]`` runs small random
transactions (inserts, updates, deletes on ``accounts`` and ``tags``) against the SQLite file until
``STOP_FILE`` exists, then prints how many transactions it committed.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = [
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, balance INTEGER, score REAL, note TEXT)",
    "CREATE TABLE tags (k TEXT PRIMARY KEY, v INTEGER)",
]
TABLES = {"accounts": "id", "tags": "k"}


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=60.0)
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


def _account(rng: random.Random, i: int) -> tuple[Any, ...]:
    note = None if rng.random() < 0.2 else "n" * rng.randint(0, 20) + "é'\""
    return (
        i,
        f"acct-{i}-{rng.randint(0, 999)}",
        rng.randint(-(10**12), 10**12),
        round(rng.uniform(-1e4, 1e4), 3),
        note,
    )


def create(path: str | Path, rows: int, seed: int = 1) -> None:
    """A WAL-mode SQLite file with ``rows`` accounts (ids 1…rows) and 100 tags."""
    conn = connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in SCHEMA:
        conn.execute(sql)
    rng = random.Random(seed)
    conn.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?)", (_account(rng, i) for i in range(1, rows + 1)))
    conn.executemany("INSERT INTO tags VALUES (?, ?)", ((f"tag-{i:03d}", i) for i in range(100)))
    conn.commit()
    conn.close()


def write_one(conn: sqlite3.Connection, rng: random.Random, max_id: int) -> None:
    """One transaction of 1–5 random changes."""
    with conn:
        for _ in range(rng.randint(1, 5)):
            r = rng.random()
            if r < 0.45:
                i = rng.randint(1, max_id)
                conn.execute(
                    "UPDATE accounts SET balance = ?, score = ? WHERE id = ?",
                    (rng.randint(-(10**12), 10**12), round(rng.uniform(-1e4, 1e4), 3), i),
                )
            elif r < 0.7:
                conn.execute(
                    "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?)",
                    _account(rng, rng.randint(1, max_id + 50_000)),
                )
            elif r < 0.85:
                conn.execute("DELETE FROM accounts WHERE id = ?", (rng.randint(1, max_id + 50_000),))
            elif r < 0.95:
                conn.execute(
                    "INSERT OR REPLACE INTO tags VALUES (?, ?)",
                    (f"tag-{rng.randint(0, 200):03d}", rng.randint(0, 10**6)),
                )
            else:
                conn.execute("DELETE FROM tags WHERE k = ?", (f"tag-{rng.randint(0, 200):03d}",))


def final_scn(path: str | Path) -> int:
    """The SCN of the newest change captured in the source (the change log's row-id counter)."""
    conn = connect(path)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'headrace_changes'").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def source_rows(path: str | Path) -> dict[tuple[str, Any], dict[str, Any]]:
    """Every row of the source tables, keyed by (table, key)."""
    conn = connect(path)
    conn.row_factory = sqlite3.Row
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    for table, key in TABLES.items():
        for r in conn.execute(f"SELECT * FROM {table}"):
            out[(table, r[key])] = dict(r)
    conn.close()
    return out


def materialise(
    lines: Iterable[str], into: dict[tuple[str, Any], dict[str, Any]] | None = None
) -> dict[tuple[str, Any], dict[str, Any]]:
    """Apply ``headrace subscribe`` JSON lines in order: c/u/r upsert the after image, d deletes, and a
    ``{"control": "snapshot_restarted"}`` line empties the copy (the snapshot that follows replaces it)."""
    copy: dict[tuple[str, Any], dict[str, Any]] = {} if into is None else into
    for line in lines:
        if not line.strip():
            continue
        e = json.loads(line)
        if e.get("control") == "snapshot_restarted":
            copy.clear()
            continue
        k = (e["table"], e["key"][0])
        if e["op"] == "d":
            copy.pop(k, None)
        else:
            copy[k] = e["after"]
    return copy


def main() -> None:
    path, seed, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sleep = int(sys.argv[4]) / 1000.0 if len(sys.argv) > 4 else 0.0
    rng = random.Random(seed)
    conn = connect(path)
    max_id = conn.execute("SELECT max(id) FROM accounts").fetchone()[0] or 1
    n = 0
    while not os.path.exists(stop_file):
        write_one(conn, rng, max_id)
        n += 1
        if sleep:
            time.sleep(sleep)
    conn.close()
    print(n, flush=True)


if __name__ == "__main__":
    main()


def change_log_head(path: str | Path) -> int:
    """The SCN of the newest change the relay's triggers logged."""
    conn = connect(path)
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'headrace_changes'").fetchone()
    conn.close()
    return int(row[0]) if row else 0


def pruned_scn(path: str | Path) -> int:
    """The SCN the relay pruned the change log up to."""
    conn = connect(path)
    try:
        row = conn.execute("SELECT v FROM headrace_state WHERE k = 'pruned_scn'").fetchone()
    except sqlite3.OperationalError:
        row = None
    conn.close()
    return int(row[0]) if row else 0
