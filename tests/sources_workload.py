"""One mixed workload for the change-source conformance tests, applied to SQLite, PostgreSQL or MariaDB.

:func:`transactions` deterministically generates transactions of inserts, updates and deletes over
three tables covering the types every source supports (integers, decimals, floats, text with
Unicode and quotes, bytes, booleans, dates, timestamps, UUIDs, JSON). :func:`apply` writes them
through the database's own driver; :func:`expected` is what a subscriber must receive; :func:`norm`
puts a decoded value and a written value on the same footing (UUIDs as text, since MariaDB keeps
them in CHAR(36)).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import uuid
from typing import Any

TABLES = ("orders", "customers", "items")
KEYS = {"orders": "id", "customers": "id", "items": "sku"}

DDL: dict[str, dict[str, str]] = {
    "sqlite": {
        "orders": "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, amount NUMERIC(12,2), "
        "price REAL, note TEXT, paid BOOLEAN, created DATE, updated_at TIMESTAMP, ref UUID, meta JSON, blob BLOB)",
        "customers": "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email VARCHAR(100), "
        "score REAL, vip BOOLEAN, born DATE, tags JSON)",
        "items": "CREATE TABLE items (sku VARCHAR(20) PRIMARY KEY, qty BIGINT, weight REAL, data BLOB, "
        "seen TIMESTAMP, uid UUID)",
    },
    "postgresql": {
        "orders": "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2), "
        "price double precision, note text, paid boolean, created date, updated_at timestamp, ref uuid, "
        "meta jsonb, blob bytea)",
        "customers": "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email varchar(100), "
        "score double precision, vip boolean, born date, tags jsonb)",
        "items": "CREATE TABLE items (sku varchar(20) PRIMARY KEY, qty bigint, weight double precision, "
        "data bytea, seen timestamp, uid uuid)",
    },
    "mariadb": {
        "orders": "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, amount DECIMAL(12,2), "
        "price DOUBLE, note TEXT, paid BOOLEAN, created DATE, updated_at DATETIME(6), ref CHAR(36), meta JSON, "
        "`blob` LONGBLOB)",
        "customers": "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email VARCHAR(100), "
        "score DOUBLE, vip BOOLEAN, born DATE, tags JSON)",
        "items": "CREATE TABLE items (sku VARCHAR(20) PRIMARY KEY, qty BIGINT, weight DOUBLE, data LONGBLOB, "
        "seen DATETIME(6), uid CHAR(36))",
    },
}

_TEXT = "abcdefghijklmnopqrstuvwxyz ÄÖÜé€😀'\"\\\n"

Change = tuple[str, str, Any, dict[str, Any] | None, dict[str, Any] | None]


def _maybe(rng: random.Random, value: Any) -> Any:
    return None if rng.random() < 0.1 else value


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_TEXT) for _ in range(rng.randint(0, n)))


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


def transactions(seed: int, n: int, max_rows: int = 8) -> list[list[Change]]:
    """``n`` transactions of 1–``max_rows`` changes: (table, op, key, before, after) in statement order."""
    rng = random.Random(seed)
    live: dict[str, dict[Any, dict[str, Any]]] = {t: {} for t in TABLES}
    next_id = dict.fromkeys(TABLES, 1)
    out = []
    for _ in range(n):
        txn: list[Change] = []
        touched: set[tuple[str, Any]] = set()
        for _ in range(rng.randint(1, max_rows)):
            table = rng.choice(TABLES)
            rows = live[table]
            candidates = [k for k in rows if (table, k) not in touched]
            r = rng.random()
            if r < 0.6 or len(candidates) < 5:
                k: Any = next_id[table] if table != "items" else f"sku-{next_id[table]:07d}"
                next_id[table] += 1
                row = _row(rng, table, k)
                rows[k] = row
                txn.append((table, "c", k, None, row))
            elif r < 0.85:
                k = rng.choice(candidates)
                new = _row(rng, table, k)
                txn.append((table, "u", k, rows[k], new))
                rows[k] = new
            else:
                k = rng.choice(candidates)
                txn.append((table, "d", k, rows.pop(k), None))
            touched.add((table, k))
        out.append(txn)
    return out


def _value(dialect: str, v: Any) -> Any:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict | list):
        if dialect == "postgresql":
            from psycopg2.extras import Json

            return Json(v)
        return json.dumps(v)
    if dialect == "sqlite":
        if isinstance(v, decimal.Decimal):
            return str(v)
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, dt.datetime):
            return v.isoformat(" ")
        if isinstance(v, dt.date):
            return v.isoformat()
    return v


def apply(dialect: str, conn: Any, txns: list[list[Change]]) -> None:
    """Write ``txns`` through a DB-API connection (not in autocommit mode), one commit per transaction."""
    ph = "?" if dialect == "sqlite" else "%s"
    q = "`" if dialect == "mariadb" else '"'
    cur = conn.cursor()
    for txn in txns:
        if dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        for table, op, key, _before, after in txn:
            kc = KEYS[table]
            if op == "c":
                assert after is not None
                cols = list(after)
                names = ", ".join(q + c + q for c in cols)
                cur.execute(
                    f"INSERT INTO {table} ({names}) VALUES ({', '.join(ph for _ in cols)})",
                    [_value(dialect, after[c]) for c in cols],
                )
            elif op == "u":
                assert after is not None
                cols = [c for c in after if c != kc]
                cur.execute(
                    f"UPDATE {table} SET {', '.join(q + c + q + ' = ' + ph for c in cols)} WHERE {kc} = {ph}",
                    [*(_value(dialect, after[c]) for c in cols), key],
                )
            else:
                cur.execute(f"DELETE FROM {table} WHERE {kc} = {ph}", (key,))
        conn.commit()
    cur.close()


def create_tables(dialect: str, conn: Any) -> None:
    cur = conn.cursor()
    for table in TABLES:
        cur.execute(DDL[dialect][table])
        if dialect == "postgresql":  # whole old rows, so before images match the other sources
            cur.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    conn.commit()
    cur.close()


def norm(v: Any) -> Any:
    """A value as compared across sources (UUIDs as text; floats, decimals, dates … as they are)."""
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {k: norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [norm(x) for x in v]
    return v


def norm_row(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: norm(v) for k, v in row.items()}


def expected(txns: list[list[Change]]) -> list[list[tuple[str, str, list[Any], Any, Any]]]:
    """Per transaction, the (table, op, key, before, after) a subscriber must see, normalised."""
    return [[(t, op, [k], norm_row(b), norm_row(a)) for t, op, k, b, a in txn] for txn in txns]
