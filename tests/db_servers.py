"""Private PostgreSQL and MariaDB servers for tests, in temporary directories on free ports.

The machine's own servers (ports 5432/3306, /var/lib/…) are never touched: every instance here has
its own data directory under a fresh temporary directory, its own port, and its unix socket inside
that directory. PostgreSQL refuses to run as root, so its instance runs as the ``postgres`` user
(``runuser``) and its directory belongs to that user.

Use the session fixtures ``pg_server`` and ``mariadb_server`` (one instance per xdist worker); both
skip with a reason when the server binaries are missing, and fail under ``CI=true``
(:func:`support.require_binaries`). The server objects can ``restart()`` for restart tests, and
``PgServer.set_config()`` changes a setting that needs a restart (for the refusal tests).

To use them in a test module: ``from db_servers import pg_server, mariadb_server  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import free_port, require_binaries, wait_until

PG_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "32",  # many tests share one server; a failed test may leave its slot
    "max_wal_senders": "32",
    "fsync": "off",  # a throw-away test instance: speed over crash safety of the *server*
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
}


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return name


class PgServer:
    """A private PostgreSQL instance run as the ``postgres`` OS user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datadir = root / "data"
        self.sockdir = root
        self.port = free_port()
        self.settings = dict(PG_SETTINGS)
        self.user = "postgres"

    # -- process control -------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=check, capture_output=True, text=True, timeout=120
        )

    def init(self) -> None:
        pw = pwd.getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o755)
        r = self._run(
            _pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")

    def start(self) -> None:
        opts = [f"-c {k}={v}" for k, v in self.settings.items()]
        opts += [f"-p {self.port}", f"-k {self.sockdir}", "-c listen_addresses=127.0.0.1"]
        r = self._run(
            _pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", " ".join(opts), "start", check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``: disconnect everyone; ``immediate``: like a crash) and start again."""
        self.stop(mode)
        self.start()

    def set_config(self, **settings: str) -> None:
        """Change server settings and restart (for example ``wal_level="replica"``)."""
        self.settings.update(settings)
        self.restart()

    def log_tail(self, n: int = 40) -> str:
        p = self.root / "server.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    # -- clients ---------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True, user: str = "postgres") -> Any:
        import psycopg2

        conn = psycopg2.connect(self.dsn(dbname, user))
        conn.autocommit = autocommit
        return conn

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []

    def create_database(self, name: str) -> str:
        """A fresh database (dropped first if it exists, with its slots); returns its name."""
        for (slot,) in self.execute(f"SELECT slot_name FROM pg_replication_slots WHERE database = '{name}'"):
            self.execute(f"SELECT pg_drop_replication_slot('{slot}')")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.execute(f'CREATE DATABASE "{name}"')
        return name


class MariaDbServer:
    """A private MariaDB instance with the row binlog on."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datadir = root / "data"
        self.socket = root / "mysqld.sock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def init(self) -> None:
        r = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{r.stdout}\n{r.stderr}")

    def start(self) -> None:
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.datadir}", f"--port={self.port}",
             f"--socket={self.socket}", "--bind-address=127.0.0.1", f"--log-bin={self.root / 'binlog'}",
             "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--server-id=1",
             f"--pid-file={self.root / 'pid'}",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2",
             "--sync-binlog=0", "--skip-log-error", "--max-connections=200"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.closing(self.connect()):
                return True

        wait_until(up, 60, "mariadbd to accept connections", interval=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 40) -> str:
        p = self.root / "server.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def url(self, dbname: str = "test") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str | None = None, autocommit: bool = True) -> Any:
        import pymysql

        return pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", password="", database=dbname, autocommit=autocommit
        )

    def execute(self, sql: str, dbname: str | None = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def create_database(self, name: str) -> str:
        self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name


def _tempdir(prefix: str) -> Path:
    # Not pytest's tmp_path: its parents are 0700 root, which the postgres user cannot enter.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A private PostgreSQL 15 with ``wal_level=logical``, stopped and removed at the end of the session."""
    require_binaries("initdb", "pg_ctl", "runuser", why="PostgreSQL source tests need the server binaries")
    server = PgServer(_tempdir("headrace-pg-"))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDbServer]:
    """A private MariaDB with ``binlog_format=ROW``, stopped and removed at the end of the session."""
    require_binaries("mariadb-install-db", "mariadbd", why="MariaDB source tests need the server binaries")
    server = MariaDbServer(_tempdir("headrace-mariadb-"))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def wait_port_closed(port: int, timeout: float = 30.0) -> None:
    import socket

    def closed() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_until(closed, timeout, f"port {port} to close")


__all__ = ["MariaDbServer", "PgServer", "mariadb_server", "pg_server", "wait_port_closed"]
