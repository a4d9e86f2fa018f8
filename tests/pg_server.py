"""A private PostgreSQL server for tests: ``pg_server`` (session fixture) and ``PgServer.create_database``.

Use it from a test module with ``from pg_server import pg_server  # noqa: F401``. It skips when the
server binaries are missing, and fails instead under ``CI=true`` (``support.require_binaries``).
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser``),
in a fresh folder under /tmp, on a free port, with its socket in that folder and logical decoding on.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_port, require_binaries


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    root: Path

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str) -> str:
        """Create a database (for one test's isolation) and return its SQLAlchemy URL."""
        import psycopg2

        conn = psycopg2.connect(self.dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    require_binaries("initdb", "pg_ctl", why="PostgreSQL tests need a server")
    if os.geteuid() == 0:
        require_binaries("runuser", why="PostgreSQL must run as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = free_port()
    try:
        subprocess.run(
            _as_postgres(["initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
        )
        opts = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=logical "
            "-c max_replication_slots=8 -c max_wal_senders=8"
        )
        subprocess.run(
            _as_postgres(
                ["pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", opts, "start"]
            ),
            check=True,
            capture_output=True,
        )
        yield PgServer("127.0.0.1", port, "postgres", root)
    finally:
        subprocess.run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
