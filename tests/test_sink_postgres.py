"""``headrace sink`` from a PostgreSQL source into a PostgreSQL replica: a relay and a bootstrap server
seeding from the source, writers throughout, the sink killed with SIGKILL (inside the initial snapshot
and later) and the relay killed once; a TRUNCATE and an added column in the source; at the end the
replica equals the source, typed values and all."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from db_servers import PgServer
from sink_support import checkpoint, replica_table, sink_config
from support import wait_until
from test_bootstrap_postgres import TABLES, PgStack, Writers, _source_rows

pytestmark = pytest.mark.postgres


def _replica(url: str) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    out: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    for table, key in (("accounts", ("id",)), ("lines", ("order_id", "line"))):
        for r in replica_table(url, table, key[0]).values() if len(key) == 1 else _rows_by(url, table):
            out[(table, tuple(r[k] for k in key))] = r
    return out


def _rows_by(url: str, table: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from headrace._db import create_engine

    engine = create_engine(url)
    try:
        t = sa.Table(table, sa.MetaData(), autoload_with=engine)
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(t))]
    finally:
        engine.dispose()
    for r in rows:
        r.pop("_headrace_key")
    return rows


@pytest.fixture
def dropped_after(pg_server: PgServer) -> Iterator[str]:
    """The source database's name; at the end (after the daemons died) its slots and the database are
    dropped, so no slot is left holding WAL on the shared server."""
    db = "sinksrc"
    yield db

    def drop_slots() -> bool:
        for (slot,) in pg_server.execute(f"SELECT slot_name FROM pg_replication_slots WHERE database = '{db}'"):
            pg_server.execute(f"SELECT pg_drop_replication_slot('{slot}')")
        return True

    wait_until(drop_slots, 30, "the relay's slot to be free")
    pg_server.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_postgres_source_to_postgres_replica_with_kills_truncate_and_new_column(
    dropped_after: str,  # first: torn down after ``daemons`` killed the relay
    pg_server: PgServer,
    tmp_path: Path,
    daemons: Any,
) -> None:
    stack = PgStack(pg_server, tmp_path, daemons, dropped_after, page_rows=2_000)
    url = pg_server.url(pg_server.create_database("sinkdst"))
    writers = Writers(pg_server, stack.db).start()
    rng = random.Random(5)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        target = {"type": "sql", "url": url, "batch_rows": 3000}
        cfg = sink_config(tmp_path / "sink.yaml", stack.relay_url, stack.boot_url, target, sources=TABLES)
        sink = daemons(["sink", "--config", str(cfg)], "sink")
        sink.start()
        wait_until(lambda: checkpoint(url) is not None, 90, "a first commit", 0.01)
        sink.kill9()
        assert (checkpoint(url) or {}).get("phase") == "snapshot"  # killed inside the initial copy

        sink.start()
        wait_until(lambda: (checkpoint(url) or {}).get("phase") == "relay", 90, "the sink to reach the relay")
        time.sleep(rng.uniform(0.1, 1.0))  # a random kill moment (not a synchronisation)
        sink.kill9()

        # schema growth and a truncate in the source, while the sink is down
        pg_server.execute("ALTER TABLE accounts ADD COLUMN extra int", stack.db)
        pg_server.execute("UPDATE accounts SET extra = id WHERE id <= 50", stack.db)
        lines_before = pg_server.execute("SELECT count(*) FROM lines", stack.db)[0][0]
        pg_server.execute("TRUNCATE lines", stack.db)
        # order ids below 0: the writers, still running, never touch them
        pg_server.execute("INSERT INTO lines VALUES (-1, 1, 1, 'after truncate'), (-2, 2, 2, NULL)", stack.db)

        sink.start()
        last = (checkpoint(url) or {})["scn"]
        wait_until(lambda: (checkpoint(url) or {})["scn"] > last, 60, "the checkpoint to move")
        stack.relay.kill9()  # the relay dies once under the running sink
        stack.start_relay()
        last = (checkpoint(url) or {})["scn"]
        wait_until(lambda: (checkpoint(url) or {})["scn"] > last, 60, "the sink to go on after the relay restart")
        time.sleep(rng.uniform(0.1, 1.0))
        sink.kill9()

        writers.stop()
        sink.args = ["sink", "--config", str(cfg), "--idle-exit", "4"]
        sink.start()
        assert sink.proc is not None
        assert sink.proc.wait(180) == 0, sink.output()
    finally:
        if not writers.stop_event.is_set():
            writers.stop()
        stack.relay.kill9()
        stack.boot.kill9()

    _check(pg_server, stack, url, lines_before)


def _check(pg_server: PgServer, stack: PgStack, url: str, lines_before: int) -> None:
    src = _source_rows(pg_server, stack.db)
    rep = _replica(url)
    missing, extra = src.keys() - rep.keys(), rep.keys() - src.keys()
    wrong = [(k, src[k], rep[k]) for k in src.keys() & rep.keys() if src[k] != rep[k]]
    assert not missing and not extra and not wrong, (sorted(missing)[:5], sorted(extra)[:5], wrong[:3])
    assert rep[("lines", (-1, 1))]["note"] == "after truncate"  # the truncate arrived, then the new rows
    # the truncate emptied a table of thousands of lines; the writers, still running, add a few dozen
    # a second after it (how many depends on the machine's speed, not on the sink)
    assert lines_before > 1_000
    assert sum(1 for t, _ in rep if t == "lines") < lines_before // 2
    assert rep[("accounts", (7,))]["extra"] == 7 or ("accounts", (7,)) not in src  # the added column arrived
    cp = checkpoint(url)
    assert cp is not None and cp["phase"] == "relay"
