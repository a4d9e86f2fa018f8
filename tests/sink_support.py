"""Helpers for ``headrace sink`` tests: a counter writer, reading a replica, running the sink process."""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import sqlalchemy as sa
from support import write_config

from headrace._db import create_engine

KEY = "_headrace_key"
CHECKPOINT_TABLE = "_headrace_sink_checkpoint"


def add_counters(db: Path, n: int = 20) -> None:
    """A ``counters`` table (id, n) with ``n`` rows at 0, in the source."""
    conn = wl.connect(db)
    conn.execute("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    conn.executemany("INSERT INTO counters VALUES (?, 0)", [(i,) for i in range(n)])
    conn.commit()
    conn.close()


class CounterWriter(threading.Thread):
    """Increments random counters by one, a transaction each, until ``stop``; ``done`` counts them."""

    def __init__(self, db: Path, n: int = 20) -> None:
        super().__init__(daemon=True)
        self.db, self.n = db, n
        self.stop_event = threading.Event()
        self.done = 0
        self.labelled = False

    def run(self) -> None:
        conn: sqlite3.Connection = wl.connect(self.db)
        rng = random.Random(7)
        while not self.stop_event.is_set():
            i = rng.randrange(self.n)
            with conn:
                if self.labelled:
                    conn.execute("UPDATE counters SET n = n + 1, label = 'l' || n WHERE id = ?", (i,))
                else:
                    conn.execute("UPDATE counters SET n = n + 1 WHERE id = ?", (i,))
            self.done += 1
            self.stop_event.wait(0.002)
        conn.close()

    def add_label_column(self) -> None:
        """``ALTER TABLE counters ADD COLUMN label TEXT``; from now on increments also set the label."""
        conn = wl.connect(self.db)
        conn.execute("ALTER TABLE counters ADD COLUMN label TEXT")
        conn.commit()
        conn.close()
        self.labelled = True

    def finish(self) -> int:
        self.stop_event.set()
        self.join(30)
        return self.done


def source_table(db: Path, table: str, key: str) -> dict[Any, dict[str, Any]]:
    conn = wl.connect(db)
    conn.row_factory = sqlite3.Row
    out = {r[key]: dict(r) for r in conn.execute(f"SELECT * FROM {table}")}
    conn.close()
    return out


def replica_table(url: str, table: str, key: str) -> dict[Any, dict[str, Any]]:
    """The replica's rows without the sink's key column, by the source key column."""
    engine = create_engine(url)
    try:
        t = sa.Table(table, sa.MetaData(), autoload_with=engine)
        for c in t.columns:  # MySQL's reflected DOUBLE reads back as a Decimal of 10 places: read the float
            if isinstance(c.type, sa.Float):
                c.type.asdecimal = False
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(t))]
    finally:
        engine.dispose()
    for r in rows:
        r.pop(KEY)
    return {r[key]: r for r in rows}


def checkpoint(url: str, name: str = "sink") -> dict[str, Any] | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(CHECKPOINT_TABLE):
                return None
            row = conn.execute(
                sa.text(f"SELECT scn, phase, position FROM {CHECKPOINT_TABLE} WHERE sink_name = :n"), {"n": name}
            ).first()
    finally:
        engine.dispose()
    return dict(row._mapping) if row else None


def sink_config(path: Path, relay: str, boot: str, target: dict[str, Any], **extra: Any) -> Path:
    return write_config(
        path,
        {
            "sink": {
                "name": "sink",
                "relays": [relay],
                "bootstrap": [boot],
                "snapshot_rows": 500,
                "backoff_seconds": 0.2,
                "backoff_max_seconds": 1.0,
                "target": target,
                **extra,
            }
        },
    )
