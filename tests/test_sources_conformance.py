"""One workload, three databases: SQLite, PostgreSQL and MariaDB yield the same events and windows.

A real relay process captures each database while the test writes a deterministic mix of
transactions (inserts, updates, deletes over three tables with every common type); a subscriber
must receive every change once, in commit order, in whole windows, with values equal to what was
written. PostgreSQL and MariaDB must give exactly one window per transaction; SQLite may group
consecutive transactions into one window (it cannot tell them apart) but never splits one.

The workload is 10,000 transactions of 1–8 rows per database.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from db_servers import MariaDbServer, PgServer
from sources_harness import collect, events_of, start_relay
from sources_workload import TABLES, apply, create_tables, expected, transactions

N_TXNS = 10_000


def same(a: Any, b: Any, rel: float) -> bool:
    """Deep equality; floats within ``rel`` (0: exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (rel > 0 and abs(a - b) <= rel * max(abs(a), abs(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


SEED = 20261126


def _prepare(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any, dict[str, Any]]:
    """(relay source URL, a DB-API connection for writing, extra relay config) for ``kind``."""
    if kind == "sqlite":
        db = tmp_path / "shop.db"
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        cur = conn.cursor()
        for table in TABLES:
            from sources_workload import DDL

            cur.execute(DDL["sqlite"][table])
        return f"sqlite:///{db}", conn, {}
    if kind == "postgresql":
        pg: PgServer = request.getfixturevalue("pg_server")
        name = pg.create_database("conformance")
        conn = pg.connect(name, autocommit=False)
        create_tables("postgresql", conn)
        return pg.url(name), conn, {"postgres": {"slot": "conformance", "publication": "conformance"}}
    mdb: MariaDbServer = request.getfixturevalue("mariadb_server")
    name = mdb.create_database("conformance")
    conn = mdb.connect(name, autocommit=False)
    create_tables("mariadb", conn)
    return mdb.url(name), conn, {}


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_same_workload_same_events(kind: str, request: pytest.FixtureRequest, tmp_path: Path, daemons: Any) -> None:
    url, conn, extra = _prepare(kind, request, tmp_path)
    with contextlib.closing(conn):
        _relay, relay_url = start_relay(daemons, tmp_path, url, tables=list(TABLES), **extra)
        txns = transactions(SEED, N_TXNS)
        apply(kind, conn, txns)
    want = expected(txns)
    total = sum(len(t) for t in want)
    windows = collect(relay_url, list(TABLES), total, timeout=120)

    got = events_of(windows)
    assert len(got) == total
    # every source must round-trip doubles exactly (SQLite: captured through headrace_reals)
    rel = 0.0
    for i, (g, w) in enumerate(zip(got, [e for t in want for e in t], strict=True)):
        assert same(g, w, rel), f"event {i} differs: got {g!r}, wrote {w!r}"

    # windows: whole transactions, SCNs strictly increasing, every event carries its window's SCN range
    scns = [w.scn for w in windows]
    assert scns == sorted(set(scns))
    sizes = [len(w.events) for w in windows]
    txn_ends = set()
    n = 0
    for t in want:
        n += len(t)
        txn_ends.add(n)
    ends = set()
    n = 0
    for s in sizes:
        n += s
        ends.add(n)
    assert ends <= txn_ends, "a window ended inside a transaction"
    if kind != "sqlite":
        assert sizes == [len(t) for t in want], "PostgreSQL and MariaDB give one window per transaction"
        assert all(e.scn == w.scn for w in windows for e in w.events)
    assert all(w.events[-1].window_end and not any(e.window_end for e in w.events[:-1]) for w in windows)
