"""Seeding the snapshot store from MariaDB/MySQL, through the relay source's snapshot API.

Theory of operation. :meth:`~headrace.relay.sources.mysql.MysqlSource.snapshot` opens one
``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and reads, atomically with it, the binlog position
the snapshot is consistent with (MariaDB: ``binlog_snapshot_file``/``binlog_snapshot_position``;
MySQL: ``SHOW BINARY LOG STATUS`` under a brief ``FLUSH TABLES WITH READ LOCK``). That position,
packed like every MySQL SCN, is ``start_scn``: the snapshot holds exactly the windows with SCN ≤ it
and the relay's stream after it holds the rest. A new store generation starts there and the
follower follows the relay from it while the tables are read, in key order, ``seed_page_rows`` rows
per page and store transaction (:mod:`._seed_source`). ``start_scn = high_scn``: the generation is
ready as soon as the seed is done.

Before the snapshot is taken the seed waits (logging ``seed_waiting_for_relay``) until a relay of
``bootstrap.relays`` answers with its MySQL capture connected: the relay then reads the binlog from
a position at or before now, so the snapshot's position is one the relay delivers from and the seed
lands without a re-seed (a snapshot taken before the relay starts would be older than the relay's
first position). With ``bootstrap.sources`` unset, the tables seeded are the tables that relay
serves (its ``/v1/sources``), never others of the same database: a table the relay does not
capture would be served as a copy that never changes.

Resume-state contract. The generation's ``seed`` state row ``{method, start_scn, high_scn,
binlog_position, tables, table, rows, done}`` is saved with each page, for status. The snapshot is
a transaction of one connection, so a seed cut by a crash (or a lost connection) cannot continue in
it: the next start finds ``done = false`` and seeds a **new generation** from a new snapshot
(reason ``seed_interrupted``), while a generation already served stays served until the new one is
ready. Pages for a generation that was replaced meanwhile are refused by the store and the seed stops.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

from .._logging import get_logger
from ..errors import ConfigError, HeadraceError
from ..relay import RelayConfig
from ._seed import StopFlag
from ._seed_progress import SeedProgress
from ._seed_source import seed_from_source
from ._store import Store

__all__ = ["relay_tables", "seed_mysql"]

log = get_logger("bootstrap.seed")

#: seconds between the relay checks while waiting, and between the log lines saying so
POLL_SECONDS = 0.5
LOG_EVERY_SECONDS = 30.0


def _relay_ready(url: str, token: str | None, tls: ssl.SSLContext | None = None) -> tuple[list[str] | None, str]:
    """The tables the relay at ``url`` serves once its MySQL capture reads the binlog, else None and why not."""
    from ..relay.client import RelayClient

    client = RelayClient(url, token=token, timeout=5.0, tls=tls)
    try:
        status = client.status()
        kind = status.get("source")
        if kind is not None and kind != "mysql":
            why = f"bootstrap.seed is a MySQL/MariaDB URL but the relay {url} captures a {kind!r} source"
            raise ConfigError([why + "; seed from the database the relay reads"])
        capture = status.get("capture") or {}
        if capture.get("state") != "running" or not capture.get("connected"):
            return None, f"capture is {capture.get('state')!r}, connected={capture.get('connected')!r}"
        return [str(s["name"]) for s in client.sources()], ""
    except ConfigError:
        raise
    except HeadraceError as exc:
        return None, str(exc)
    finally:
        client.close()


def relay_tables(
    relays: list[str], token: str | None, stop: StopFlag | None, tls: ssl.SSLContext | None = None
) -> list[str] | None:
    """Wait until one of ``relays`` reads the binlog; its tables (None: stopped while waiting)."""
    last_log = -LOG_EVERY_SECONDS
    while True:
        why: dict[str, str] = {}
        for url in relays:
            tables, reason = _relay_ready(url, token, tls)
            if tables is not None:
                return tables
            why[url] = reason
        now = time.monotonic()
        if now - last_log >= LOG_EVERY_SECONDS:
            log.warning(
                "seed_waiting_for_relay",
                relays=why,
                detail="the MySQL/MariaDB snapshot is taken once a relay reads the binlog (start the relay first)",
            )
            last_log = now
        if stop is None:
            time.sleep(POLL_SECONDS)
        elif stop.wait(POLL_SECONDS):
            return None


def seed_mysql(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    *,
    relays: list[str] | None = None,
    relay_token: str | None = None,
    relay_tls: ssl.SSLContext | None = None,
    positions: threading.Event | None = None,
    reason: str = "initial",
    progress: SeedProgress | None = None,
) -> dict[str, Any]:
    """Seed a new store generation from the MariaDB/MySQL database at ``url`` (see the module docstring).

    ``relays``: wait for one of them to read the binlog first, and with ``tables`` None seed the
    tables it serves (None: no wait, ``tables`` None = every base table of the database).
    ``positions`` is set once the new generation exists (the follower follows it from its start).
    """
    from ..relay.sources._mysqltypes import unpack_scn
    from ..relay.sources.mysql import MysqlSource

    if relays:
        served = relay_tables(relays, relay_token, stop, relay_tls)
        if served is None:
            if positions is not None:
                positions.set()
            return {}
        if tables is None:
            tables = served
        else:
            missing = sorted(set(tables) - set(served))
            if missing:
                log.warning("seed_tables_not_captured", tables=missing, captured=served)

    def describe(start: int) -> dict[str, Any]:
        index, pos = unpack_scn(start)
        return {"binlog_position": f"{index}:{pos}"}

    source = MysqlSource(RelayConfig(source=url, tables=tables))
    return seed_from_source(
        store,
        source,
        tables,
        page_rows,
        stop,
        positions=positions,
        reason=reason,
        progress=progress,
        method="mysql_consistent_snapshot",
        describe=describe,
        estimate=lambda names: estimate_rows(source, names),
    )


def estimate_rows(source: Any, tables: list[str]) -> dict[str, int | None]:
    """The server's row estimate of each table (``information_schema.TABLES.TABLE_ROWS``: InnoDB's
    sampled estimate; None where it has none)."""
    import pymysql

    conn = pymysql.connect(**source.settings, autocommit=True, connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (source.schema,),
            )
            found = {str(name): rows for name, rows in cur.fetchall()}
        return {t: int(found[t]) if found.get(t) is not None else None for t in tables}
    finally:
        conn.close()
