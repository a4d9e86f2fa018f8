"""A deterministic mixed workload for relay tests: tables, transactions, and the events they must yield.

Run as a script it applies transactions ``[start, start+count)`` of the workload with ``seed`` to a
SQLite file, as another process would (``python relay_workload.py DB SEED START COUNT [SLEEP_MS]``).
In the test process :func:`expected_events` computes what a subscriber must receive.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import sqlite3
import sys
import time
import uuid
from typing import Any

SCHEMA = {
    "orders": (
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount NUMERIC(12,2), "
        "price REAL, note TEXT, paid BOOLEAN, created DATE, updated_at TIMESTAMP, ref UUID, meta JSON, blob BLOB)"
    ),
    "customers": (
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, score REAL, "
        "vip BOOLEAN, born DATE, tags JSON)"
    ),
    "items": "CREATE TABLE items (sku TEXT PRIMARY KEY, qty INTEGER, weight REAL, data BLOB, seen TIMESTAMP, uid UUID)",
}
KEYS = {"orders": "id", "customers": "id", "items": "sku"}
_TEXT = "abcdefghijklmnopqrstuvwxyz ÄÖÜé€😀'\"\\\n"


def create_schema(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in SCHEMA.values():
        conn.execute(sql)
    conn.commit()
    conn.close()


def _maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.1 else value


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_TEXT, k=rng.randint(0, n)))


def _ts(rng: random.Random) -> dt.datetime:
    return dt.datetime(2020, 1, 1) + dt.timedelta(seconds=rng.randint(0, 10**8), microseconds=rng.randint(0, 999_999))


def _row(rng: random.Random, table: str, key: Any) -> dict[str, Any]:
    if table == "orders":
        return {
            "id": key,
            "customer_id": rng.randint(1, 2**40),
            "amount": _maybe(rng, decimal.Decimal(rng.randint(-(10**9), 10**9)).scaleb(-2)),
            "price": _maybe(rng, rng.uniform(-1e6, 1e6)),
            "note": _maybe(rng, _text(rng, 40)),
            "paid": _maybe(rng, rng.random() < 0.5),
            "created": _maybe(rng, dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 10000))),
            "updated_at": _maybe(rng, _ts(rng)),
            "ref": _maybe(rng, uuid.UUID(int=rng.getrandbits(128))),
            "meta": _maybe(rng, {"n": rng.randint(0, 100), "tags": [_text(rng, 5)], "ok": True}),
            "blob": _maybe(rng, rng.randbytes(rng.randint(0, 30))),
        }
    if table == "customers":
        return {
            "id": key,
            "name": _text(rng, 20),
            "email": _maybe(rng, f"user{key}@example.com"),
            "score": _maybe(rng, rng.random()),
            "vip": _maybe(rng, rng.random() < 0.2),
            "born": _maybe(rng, dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 20000))),
            "tags": _maybe(rng, [rng.randint(0, 9) for _ in range(rng.randint(0, 4))]),
        }
    return {
        "sku": key,
        "qty": _maybe(rng, rng.randint(-(2**62), 2**62)),
        "weight": _maybe(rng, rng.random() * 100),
        "data": _maybe(rng, rng.randbytes(rng.randint(0, 50))),
        "seen": _maybe(rng, _ts(rng)),
        "uid": _maybe(rng, uuid.UUID(int=rng.getrandbits(128))),
    }


def transactions(seed: int, n: int) -> list[list[tuple[str, str, Any, dict[str, Any] | None, dict[str, Any] | None]]]:
    """``n`` transactions, each a list of (table, op, key, before, after) in statement order."""
    rng = random.Random(seed)
    live: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in SCHEMA}
    keys: dict[str, list[Any]] = {t: [] for t in SCHEMA}  # live keys, for O(1) random picks
    next_id = {"orders": 1, "customers": 1, "items": 1}
    out = []
    for _ in range(n):
        txn = []
        for _ in range(rng.randint(1, 20)):
            table = rng.choice(list(SCHEMA))
            r = rng.random()
            rows = live[table]
            if r < 0.6 or len(rows) < 5:
                k: Any = next_id[table] if table != "items" else f"sku-{next_id[table]:07d}"
                next_id[table] += 1
                row = _row(rng, table, k)
                rows[k] = row
                keys[table].append(k)
                txn.append((table, "c", k, None, row))
            elif r < 0.85:
                k = rng.choice(keys[table])
                new = _row(rng, table, k)
                txn.append((table, "u", k, rows[k], new))
                rows[k] = new
            else:
                ks = keys[table]
                i = rng.randrange(len(ks))
                k = ks[i]
                ks[i] = ks[-1]
                ks.pop()
                txn.append((table, "d", k, rows.pop(k), None))
        out.append(txn)
    return out


def expected_events(seed: int, n: int) -> list[list[tuple[str, str, list[Any], Any, Any]]]:
    """Per transaction, the (table, op, key, before, after) a subscriber must see (decimals quantized)."""
    return [[(t, op, [k], b, a) for t, op, k, b, a in txn] for txn in transactions(seed, n)]


def _sql_value(v: Any) -> Any:
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, dt.datetime):
        return v.isoformat(" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


def apply(path: str, seed: int, start: int, count: int, sleep_ms: float = 0.0) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for txn in transactions(seed, start + count)[start:]:
        conn.execute("BEGIN IMMEDIATE")
        for table, op, key, _before, after in txn:
            kc = KEYS[table]
            if op == "c":
                assert after is not None
                cols = list(after)
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                    [_sql_value(after[c]) for c in cols],
                )
            elif op == "u":
                assert after is not None
                cols = [c for c in after if c != kc]
                conn.execute(
                    f"UPDATE {table} SET {', '.join(c + ' = ?' for c in cols)} WHERE {kc} = ?",
                    [*(_sql_value(after[c]) for c in cols), key],
                )
            else:
                conn.execute(f"DELETE FROM {table} WHERE {kc} = ?", (key,))
        conn.execute("COMMIT")
        if sleep_ms:
            time.sleep(sleep_ms / 1000.0)
    conn.close()


if __name__ == "__main__":
    apply(
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
        float(sys.argv[5]) if len(sys.argv) > 5 else 0,
    )
