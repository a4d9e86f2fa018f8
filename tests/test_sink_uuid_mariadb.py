"""``headrace sink`` (sql) from a PostgreSQL ``uuid`` column into a MariaDB replica, with edge UUIDs: nil,
max, variants other than RFC 4122 (NCS, Microsoft, reserved), versions 0 and 15, and values written in
upper case, with braces or without dashes (PostgreSQL normalises them) — as a value and as the primary
key, inserted, updated and deleted. A helper once reported MariaDB's "Incorrect uuid value" on such a
path. The replica's columns are MariaDB's own ``UUID`` type (SQLAlchemy's ``Uuid`` on MariaDB 10.7 and
later), which parses the text it is given; the relay's values are ``uuid.UUID`` (PostgreSQL sends its
canonical text whatever was written), bound as canonical text, and every edge value arrives exactly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from db_servers import MariaDbServer, PgServer, mariadb_server, pg_server  # noqa: F401
from support import free_port, wait_until, write_config

from headrace._db import create_engine

pytestmark = pytest.mark.postgres

EDGES = [
    "00000000-0000-0000-0000-000000000000",  # nil
    "ffffffff-ffff-ffff-ffff-ffffffffffff",  # max
    "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",  # upper case (RFC 4122, version 4)
    "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12}",  # braces
    "a0eebc999c0b4ef8bb6d6bb9bd380a13",  # no dashes
    "a0eebc99-9c0b-0ef8-0b6d-6bb9bd380a14",  # version 0, NCS variant (0xxx)
    "a0eebc99-9c0b-fef8-cb6d-6bb9bd380a15",  # version 15, Microsoft variant (110x)
    "a0eebc99-9c0b-4ef8-eb6d-6bb9bd380a16",  # reserved variant (111x)
    "00000000-0000-0000-0000-000000000001",
    "80000000-0000-0000-8000-000000000000",
]


def _pg_rows(pg: PgServer, db: str) -> dict[uuid.UUID, tuple[uuid.UUID | None, int]]:
    return {uuid.UUID(k): (None if u is None else uuid.UUID(u), n) for k, u, n in pg.execute("SELECT * FROM ids", db)}


def _replica_rows(url: str) -> dict[uuid.UUID, tuple[uuid.UUID | None, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            kinds = {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("ids")}
            assert kinds["k"] == kinds["u"] == "UUID", kinds  # SQLAlchemy's Uuid is MariaDB's own (10.7+)
            rows = conn.execute(sa.text("SELECT k, u, n FROM ids")).all()
    finally:
        engine.dispose()
    return {uuid.UUID(k): (None if u is None else uuid.UUID(u), n) for k, u, n in rows}


def test_edge_uuids_from_postgres_into_a_mariadb_replica(
    pg_server: PgServer,  # noqa: F811
    mariadb_server: MariaDbServer,  # noqa: F811
    tmp_path: Path,
    daemons: Any,
) -> None:
    db = pg_server.create_database("sinkuuid")
    pg_server.execute("CREATE TABLE ids (k uuid PRIMARY KEY, u uuid, n int NOT NULL)", db)
    relay_url = f"http://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path / "headrace.yaml",
        {
            "relay": {
                "listen": relay_url.removeprefix("http://"),
                "source": pg_server.url(db),
                "tables": ["ids"],
                "state_dir": str(tmp_path / "relay"),
                "postgres": {"slot": "sinkuuid_relay", "publication": "sinkuuid_pub", "status_interval": 1},
            },
        },
    )
    relay = daemons(["relay", "--config", str(config)], "relay")
    url = mariadb_server.url(mariadb_server.create_database("sinkuuid"))
    try:
        relay.start()
        relay.wait_http(relay_url + "/healthz", timeout=30)
        values = ", ".join(f"('{e}', '{EDGES[-1 - i]}', {i})" for i, e in enumerate(EDGES))
        pg_server.execute(f"INSERT INTO ids VALUES {values}, ('{uuid.UUID(int=7)}', NULL, 99)", db)
        pg_server.execute(f"UPDATE ids SET u = '{EDGES[1].upper()}', n = n + 100 WHERE k = '{EDGES[0]}'", db)
        pg_server.execute(f"DELETE FROM ids WHERE k = '{EDGES[2]}'", db)
        sink_cfg = write_config(
            tmp_path / "sink.yaml",
            {
                "sink": {
                    "name": "sink",
                    "relays": [relay_url],
                    "from_snapshot": False,
                    "backoff_seconds": 0.2,
                    "target": {"type": "sql", "url": url},
                }
            },
        )
        sink = daemons(["sink", "--config", str(sink_cfg), "--idle-exit", "3"], "sink")
        sink.start()
        assert sink.proc is not None
        assert sink.proc.wait(120) == 0, sink.output()
        assert "sink_failed_restarting" not in sink.output(), sink.output()[-3000:]

        def caught_up() -> bool:
            return _replica_rows(url) == _pg_rows(pg_server, db)

        wait_until(caught_up, 5, "the replica to equal the source")
    finally:
        relay.kill9()

        def drop_slot() -> bool:
            pg_server.execute("SELECT pg_drop_replication_slot('sinkuuid_relay')")
            return True

        wait_until(drop_slot, 30, "the relay's slot to be free")
        pg_server.execute('DROP DATABASE IF EXISTS "sinkuuid" WITH (FORCE)')
    rows = _replica_rows(url)
    assert len(rows) == len(EDGES)  # 10 inserted and one more, one deleted
    assert rows[uuid.UUID(EDGES[0])] == (uuid.UUID(EDGES[1]), 100)
    assert uuid.UUID(EDGES[2]) not in rows and rows[uuid.UUID(int=7)] == (None, 99)
