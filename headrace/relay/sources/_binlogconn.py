"""The binlog dump connection: PyMySQL for the handshake, then raw dump packets into :mod:`._binlogevents`.

:class:`BinlogConnection` logs in with PyMySQL (authentication, TLS, character set), prepares the
session as ``mysql-replication`` did (``@master_binlog_checksum``, ``@master_heartbeat_period``,
``@mariadb_slave_capability=4``), sends ``COM_BINLOG_DUMP`` from an explicit ``(file, position)``
and then reads the socket itself: :class:`~._binlogevents.PacketFramer` cuts the bytes into events
and :class:`~._binlogevents.BinlogDecoder` decodes them. It never reconnects by itself: any read
error or timeout (no event or heartbeat within ``read_timeout``) raises :class:`StreamBroken`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Sequence
from typing import Any

from ._binlogevents import BinlogDecoder, BinlogEndOfStream, BinlogServerError, Event, PacketFramer, dump_command

__all__ = ["BinlogConnection", "StreamBroken"]

_READ_SIZE = 1 << 18


class StreamBroken(Exception):
    """The binlog connection failed or timed out (raised instead of a silent reconnect)."""


class BinlogConnection:
    """One binlog dump: :meth:`events` yields decoded events until the connection fails."""

    def __init__(
        self,
        settings: dict[str, Any],
        *,
        server_id: int,
        file: str,
        position: int,
        read_timeout: float,
        heartbeat: float,
        only_schema: str | None = None,
        only_tables: Sequence[str] | None = None,
        column_names: Callable[[str, str], Sequence[str] | None] | None = None,
    ) -> None:
        import pymysql

        self.read_timeout = read_timeout
        try:
            conn = pymysql.connect(**settings, read_timeout=read_timeout, connect_timeout=10)
        except pymysql.err.OperationalError as exc:
            raise StreamBroken(f"cannot connect for the binlog dump: {exc}") from exc
        self._conn: Any = conn
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'")
                row = cur.fetchone()
                checksum = row is not None and str(row[1]).upper() != "NONE"
                if checksum:
                    cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
                period = min(read_timeout / 2.0, heartbeat, 4294967.0)
                cur.execute("SET @master_heartbeat_period = %s", (int(period * 1_000_000_000),))
                # MariaDB: a capability < 4 makes some versions replace GTID events with dummies
                cur.execute("SET @mariadb_slave_capability = 4")
            dbms = "mariadb" if "MariaDB" in conn.get_server_info() else "mysql"
            self.decoder = BinlogDecoder(
                checksum=checksum,
                dbms=dbms,
                only_schema=only_schema,
                only_tables=only_tables,
                column_names=column_names,
            )
            conn._write_bytes(dump_command(file, position, server_id))
        except pymysql.err.OperationalError as exc:
            self.close()
            raise StreamBroken(str(exc)) from exc
        except BaseException:
            self.close()
            raise
        self._framer = PacketFramer()

    def events(self) -> Generator[Event, None, None]:
        """Decoded events in binlog order (ignored kinds skipped); raises :class:`StreamBroken` when the
        connection fails or stays silent for ``read_timeout`` seconds."""
        conn = self._conn
        sock = conn._sock
        sock.settimeout(self.read_timeout)
        conn._current_timeout = self.read_timeout
        rfile = conn._rfile
        feed = self._framer.feed
        decode = self.decoder.decode
        while True:
            try:
                data = rfile.read1(_READ_SIZE)
            except TimeoutError as exc:
                raise StreamBroken(f"Lost connection to the server during the binlog dump (timed out: {exc})") from exc
            except (OSError, ValueError) as exc:
                raise StreamBroken(f"Lost connection to the server during the binlog dump ({exc})") from exc
            if not data:
                raise StreamBroken("Lost connection to the server during the binlog dump (closed by the server)")
            try:
                for raw in feed(data):
                    ev = decode(raw)
                    if ev is not None:
                        yield ev
            except BinlogServerError as exc:
                raise StreamBroken(f"the server ended the binlog dump with an error: {exc}") from exc
            except BinlogEndOfStream as exc:
                raise StreamBroken(str(exc)) from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(Exception):
            self._conn.close()
