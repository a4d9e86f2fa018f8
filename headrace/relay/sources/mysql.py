"""MySQL / MariaDB change source: the row binlog, read by the relay's own dump client and decoder.

Theory of operation. :meth:`MysqlSource.open` checks ``log_bin``, ``binlog_format = ROW``,
``binlog_row_image = FULL`` and ``binlog_row_metadata = FULL`` (where the server has it: MySQL 8,
MariaDB 10.5+; it carries column names, signedness and ENUM/SET labels in the binlog) and refuses,
naming the setting, when one is wrong. :meth:`read` opens a binlog dump as replica
``relay.mysql.server_id`` (:class:`~._binlogconn.BinlogConnection`: PyMySQL logs in, the dump
packets are decoded by the sans-io :mod:`._binlogevents`, row images by :mod:`._mysqlrows`) and
always starts it at an explicit ``(file, position)``. Events go through
:class:`~._mysqlstream.BinlogAssembler` (rotations, GTIDs, row events, DDL, commits); each committed
transaction (an XID event, or ``COMMIT`` for non-transactional tables) becomes one window.

SCN packing. ``scn = file_index << 32 | position`` where ``file_index`` is the numeric suffix of
the binlog file (``binlog.000042`` → 42) and ``position`` is the byte offset just *after* the
transaction's commit event in that file. SCNs grow along the binlog (which is in commit order),
relays reading one server agree on them, and an SCN is itself the position to resume from.

Watchdog. The dump connection asks for heartbeats every ``idle_seconds`` and has a socket read
timeout of ``relay.mysql.stall_seconds``. The dump connection never reconnects by itself (a
reconnect could start inside a transaction): every read error or timeout is a :class:`StreamBroken`,
the source logs that the stream stalled or broke and raises
:class:`~headrace.errors.Unavailable`; the relay calls :meth:`read` again from its last whole window.
That is also how a server restart is survived: no window is delivered in part, nothing is skipped.

Resume-state contract. The MySQL server keeps no per-reader position, so the source keeps one:
``relay.mysql.position_file`` (JSON ``{"scn", "file", "position", "gtid"}``, written atomically)
holds the durable SCN — what :meth:`acknowledge` was given, or with no durable consumer the newest
window read at least ``retention_seconds`` ago. On first start it is the server's current position
(``relay.mysql.start: current``) or the oldest binlog (``oldest``). :meth:`start_scn` is that
position, so a restarted relay re-reads from there into its buffer. If the server purged the
binlog file it points into, :meth:`read` raises :class:`~headrace.errors.FatalError` explaining how
to re-seed. The GTID of the last transaction read is recorded there and in ``describe()``.

TRUNCATE. The server always logs ``TRUNCATE TABLE`` as a statement (a QUERY event, its own
transaction), never as row deletions. A TRUNCATE of a captured table becomes a window of one
:data:`~headrace.relay.Op.TRUNCATE` event (key ``()``, no row images) whose SCN is the position
after the statement.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from ..._atomic import write_atomic
from ..._logging import get_logger
from ...errors import FatalError, Unavailable, UsageError
from .._event import Op
from .._schema import TableMeta
from ._base import ChangeSource, ChangeWindow, RowChange, SnapshotPage, SourceSnapshot, StopFlag
from ._binlogconn import BinlogConnection, StreamBroken
from ._binlogevents import BinlogEventError, Gtid, Query, Rotate, Rows, XaPrepare, Xid
from ._mysqlstream import BinlogAssembler, TableInfo, binlog_index
from ._mysqltypes import mysql_column, pack_scn, unpack_scn
from ._retention import ReadMarks

if TYPE_CHECKING:
    from .._config import RelayConfig

__all__ = ["MysqlSnapshot", "MysqlSource", "StreamBroken"]

log = get_logger("relay.source.mysql")

STALLS = Counter("headrace_relay_mysql_stream_breaks_total", "binlog stream stalls and breaks", ["reason"])


_TRUNCATE = re.compile(
    r"\s*TRUNCATE\s+(?:TABLE\s+)?(?:(?P<db>`(?:[^`]|``)+`|[\w$]+)\s*\.\s*)?(?P<t>`(?:[^`]|``)+`|[\w$]+)\s*;?\s*",
    re.IGNORECASE,
)


def truncated_table(query: str, default_db: str | None) -> tuple[str | None, str] | None:
    """``(database, table)`` of a ``TRUNCATE [TABLE] [db.]t`` statement, else None."""
    m = _TRUNCATE.fullmatch(query)
    if m is None:
        return None

    def unquote(name: str) -> str:
        return name[1:-1].replace("``", "`") if name.startswith("`") else name

    db = m.group("db")
    return (unquote(db) if db else default_db), unquote(m.group("t"))


class MysqlSource(ChangeSource):
    """``relay.source: mysql://user:password@host:3306/dbname`` (or ``mariadb://…``): see the module docstring."""

    kind = "mysql"
    idle_seconds = 0.5

    def __init__(self, config: RelayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        from sqlalchemy.engine import make_url

        url = make_url(str(config.source))
        if not url.database:
            raise UsageError(f"relay.source: {config.source!r} names no database (mysql://user@host:3306/dbname)")
        self.schema: str = url.database
        self.settings: dict[str, Any] = {
            "host": url.host or "127.0.0.1",
            "port": int(url.port or 3306),
            "user": url.username or "root",
            "password": url.password or "",
            "charset": "utf8mb4",
        }
        self.only_tables: list[str] | None = config.tables
        my = config.mysql
        self.server_id: int = my.server_id
        self.stall_seconds: float = my.stall_seconds
        self.spill_rows: int = my.spill_rows
        self.start_at: str = my.start
        self.position_file = Path(my.position_file or Path(config.state_dir) / "mysql-position.json")
        self._clock = clock
        self._marks = ReadMarks(my.retention_seconds)
        self._ctl: Any = None
        self._tables: dict[str, TableInfo | None] = {}
        self._basename = ""
        self._durable: int | None = None
        self._saved: int | None = None
        self._last_scn = -1
        self._last_gtid: str | None = None

    # -- control connection --------------------------------------------------------------------
    def _conn(self) -> Any:
        import pymysql

        if self._ctl is None:
            try:
                self._ctl = pymysql.connect(**self.settings, autocommit=True, connect_timeout=10)
            except pymysql.err.OperationalError as exc:
                raise Unavailable(f"cannot connect to MySQL/MariaDB: {exc}") from exc
        return self._ctl

    def _query(self, sql: str, args: tuple[Any, ...] = (), as_dict: bool = False) -> list[Any]:
        import pymysql

        try:
            conn = self._conn()
            with conn.cursor(pymysql.cursors.DictCursor if as_dict else None) as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.err.OperationalError as exc:
            self._close_ctl()
            raise Unavailable(f"MySQL/MariaDB connection failed: {exc}") from exc

    def _close_ctl(self) -> None:
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.close()
            self._ctl = None

    def _variables(self) -> dict[str, str]:
        rows = self._query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
            "('log_bin', 'binlog_format', 'binlog_row_image', 'binlog_row_metadata', 'log_bin_basename', "
            "'gtid_mode', 'version', 'log_bin_compress', 'binlog_row_value_options')"
        )
        return {str(k).lower(): str(v) for k, v in rows}

    def preflight(self) -> None:
        """Check the server has the binary log settings capture needs (changes nothing)."""
        self._check_server()

    def open(self) -> None:
        v = self._check_server()
        self._basename = Path(v.get("log_bin_basename", "binlog")).name
        saved = self._load_position()
        if saved is None:
            origin = self._origin()
            self._save_position(origin, None)
            log.info("position_initialised", scn=origin, start=self.start_at)

    def _check_server(self) -> dict[str, str]:
        v = self._variables()
        if v.get("log_bin", "OFF").upper() != "ON":
            raise UsageError("the MySQL/MariaDB binary log is off: start the server with log_bin (--log-bin=…)")
        required = [("binlog_format", "ROW"), ("binlog_row_image", "FULL")]
        if "binlog_row_metadata" in v:
            required.append(("binlog_row_metadata", "FULL"))
        for name, want in required:
            have = v.get(name, "").upper()
            if have != want:
                raise UsageError(
                    f"MySQL/MariaDB has {name} = {have or 'unset'}; the relay needs {name} = {want}. "
                    f"Set it in the server's configuration ({name.replace('_', '-')}={want}) or run "
                    f"SET GLOBAL {name} = '{want}' (then reconnect clients), and start the relay again."
                )
        if v.get("log_bin_compress", "OFF").upper() == "ON":  # compressed row events: not decodable here
            raise UsageError(
                "MariaDB has log_bin_compress = ON; the relay cannot read compressed row events. "
                "Set log_bin_compress=OFF (SET GLOBAL log_bin_compress = OFF) and start the relay again."
            )
        if "PARTIAL_JSON" in v.get("binlog_row_value_options", "").upper():  # MySQL 8: JSON diffs, not values
            raise UsageError(
                "MySQL has binlog_row_value_options = PARTIAL_JSON; the relay needs whole JSON values. "
                "Set binlog_row_value_options='' and start the relay again."
            )
        return v

    def _binary_logs(self) -> list[tuple[str, int]]:
        import pymysql

        try:
            rows = self._query("SHOW BINARY LOGS")
        except pymysql.err.OperationalError as exc:  # pragma: no cover - privileges
            raise UsageError(f"SHOW BINARY LOGS failed ({exc}): grant the relay's user REPLICATION CLIENT") from exc
        return [(str(r[0]), int(r[1])) for r in rows]

    def _origin(self) -> int:
        logs = self._binary_logs()
        if not logs:
            raise UsageError("the server lists no binary logs: is log_bin on?")
        if self.start_at == "oldest":
            return pack_scn(binlog_index(logs[0][0]), 4)
        try:
            rows = self._query("SHOW BINARY LOG STATUS")
        except Exception:
            rows = self._query("SHOW MASTER STATUS")
        file, pos = str(rows[0][0]), int(rows[0][1])
        return pack_scn(binlog_index(file), pos)

    # -- position state ------------------------------------------------------------------------
    def _file_name(self, index: int) -> str:
        return f"{self._basename}.{index:06d}"

    def _load_position(self) -> int | None:
        if self._saved is not None:
            return self._saved
        try:
            data = json.loads(self.position_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise FatalError(f"cannot read the relay's binlog position {self.position_file}: {exc}") from exc
        self._saved = int(data["scn"])
        self._last_gtid = data.get("gtid")
        return self._saved

    def _save_position(self, scn: int, gtid: str | None) -> None:
        index, pos = unpack_scn(scn)
        body = {"scn": scn, "file": self._file_name(index), "position": pos, "gtid": gtid}
        self.position_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.position_file, json.dumps(body).encode())
        self._saved = scn

    def start_scn(self) -> int:
        saved = self._load_position()
        return saved if saved is not None else self._origin()

    def acknowledge(self, durable_scn: int | None) -> None:
        if durable_scn is None:
            durable_scn = self._marks.durable(self._clock())
        if durable_scn is not None and (self._saved is None or durable_scn > self._saved):
            self._save_position(durable_scn, self._last_gtid if durable_scn == self._last_scn else None)

    # -- schema --------------------------------------------------------------------------------
    def _table_info(self, table: str) -> TableInfo | None:
        if table in self._tables:
            return self._tables[table]
        info = self._load_table_info(self._query, table)
        self._tables[table] = info
        return info

    def _load_table_info(self, query: Callable[..., list[Any]], table: str) -> TableInfo | None:
        """The table's columns, converters and primary key from ``information_schema`` (None: no such table)."""
        cols = query(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, "
            "CHARACTER_OCTET_LENGTH "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            (self.schema, table),
            as_dict=True,
        )
        if not cols:
            return None
        json_cols: frozenset[str] = frozenset()
        with contextlib.suppress(Exception):  # MariaDB: JSON is LONGTEXT CHECK (json_valid(col))
            checks = query(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
                (self.schema, table),
            )
            json_cols = frozenset(
                str(c["COLUMN_NAME"])
                for c in cols
                for (clause,) in checks
                if f"json_valid(`{c['COLUMN_NAME']}`)" in str(clause).lower()
            )
        key = tuple(
            str(r[0])
            for r in query(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                (self.schema, table),
            )
        )
        columns = {str(c["COLUMN_NAME"]): mysql_column(c, json_cols) for c in cols}
        return TableInfo(table, columns, key)

    def tables(self) -> list[TableMeta]:
        names = self.only_tables or [
            str(r[0])
            for r in self._query(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (self.schema,),
            )
        ]
        out = []
        for name in names:
            info = self._table_info(name)
            if info is not None:
                cols = tuple(c.column for c in info.columns.values())
                out.append(TableMeta(name=name, columns=cols, key=info.key))
        return out

    def snapshot(
        self, tables: Sequence[str] | None = None, *, stop: StopFlag | None = None, resume: bool = False
    ) -> MysqlSnapshot:
        """Open a consistent snapshot of ``tables`` (default: the captured tables); see :class:`MysqlSnapshot`.

        Each call takes a new snapshot (``resume`` changes nothing: see :attr:`MysqlSnapshot.resumable`).
        """
        return MysqlSnapshot(self, tables)

    def snapshot_rows(
        self,
        tables: Sequence[str] | None = None,
        page_rows: int = 5000,
        resume: tuple[str, tuple[Any, ...] | None] | None = None,
    ) -> Iterator[SnapshotPage]:
        """The rows of one consistent snapshot, page by page (each page carries the snapshot's SCN).

        Every call opens a new snapshot: after a crash, call it again with ``resume`` = the last saved
        ``(table, page.after_key)``; the new snapshot's SCN is then at or after the old one, and a
        consumer that applies the stream from the *first* snapshot's SCN converges (pages read later
        already contain some of the changes it replays; re-applying an image is idempotent).
        """
        snap = self.snapshot(tables)
        try:
            yield from snap.all_pages(page_rows, resume)
        finally:
            snap.close()

    def uninstall(self) -> None:
        """Nothing is installed in the server; forget the saved position."""
        with contextlib.suppress(FileNotFoundError):
            self.position_file.unlink()

    def close(self) -> None:
        self._close_ctl()

    def describe(self) -> dict[str, Any]:
        index, pos = unpack_scn(max(self._last_scn, 0))
        return {
            "binlog_file": self._file_name(index) if self._last_scn >= 0 else None,
            "binlog_position": pos if self._last_scn >= 0 else None,
            "gtid": self._last_gtid,
            "saved_scn": self._saved,
        }

    # -- streaming -----------------------------------------------------------------------------
    def _stream(self, scn: int) -> BinlogConnection:
        index, pos = unpack_scn(scn)
        file = self._file_name(index)
        present = [name for name, _ in self._binary_logs()]
        if file not in present:
            raise FatalError(
                f"the binlog file {file} that holds the relay's position (SCN {scn}) is gone from the server "
                f"(it has {present[0] if present else 'none'} … {present[-1] if present else ''}): changes in between "
                "were purged (expire_logs_days / binlog_expire_logs_seconds). Re-seed: delete "
                f"{self.position_file} (or run `headrace relay uninstall`), start the relay, and re-bootstrap "
                "subscribers from a snapshot (docs/sources-mysql.md)."
            )
        return BinlogConnection(
            self.settings,
            server_id=self.server_id,
            file=file,
            position=pos,
            read_timeout=self.stall_seconds,
            heartbeat=self.idle_seconds,
            only_schema=self.schema,
            only_tables=self.only_tables,
            column_names=self._column_names,
        )

    def _column_names(self, schema: str, table: str) -> list[str] | None:
        """A captured table's column names now, in order (for table maps that do not carry them)."""
        info = self._table_info(table) if schema == self.schema else None
        return list(info.columns) if info is not None else None

    def _truncate_window(self, ev: Query, schema: str | None, asm: BinlogAssembler) -> ChangeWindow | None:
        """The window of a ``TRUNCATE`` QUERY event of a captured table (None for any other statement)."""
        target = truncated_table(ev.query, schema)
        if target is None or target[0] != self.schema:
            return None
        table = target[1]
        if self.only_tables is not None and table not in self.only_tables:
            return None
        scn = pack_scn(asm.file_index, ev.log_pos)
        info = self._table_info(table)
        if scn <= asm.skip_through or info is None:
            return None
        asm.skip_through = scn
        meta = TableMeta(name=table, columns=tuple(c.column for c in info.columns.values()), key=info.key)
        self._last_scn, self._last_gtid = scn, None
        self._marks.read(self._clock(), scn)
        return ChangeWindow(scn, ev.timestamp * 1000, [RowChange(scn, meta, Op.TRUNCATE, (), None, None)])

    def read(self, after_scn: int | None, stop: threading.Event) -> Iterator[ChangeWindow | None]:
        start = after_scn if after_scn is not None else self.start_scn()
        self._tables.clear()
        asm = BinlogAssembler(self._table_info, self.schema, self.spill_rows, skip_through=start)
        asm.file_index = unpack_scn(start)[0]
        try:
            stream = self._stream(start)
        except StreamBroken as exc:
            STALLS.labels("broken").inc()
            raise Unavailable(f"binlog connection failed: {exc}") from exc
        log.info("stream_started", file=self._file_name(asm.file_index), position=unpack_scn(start)[1], scn=start)
        last_yield = self._clock()
        xa_id = ""
        events = stream.events()
        try:
            while not stop.is_set():
                try:
                    ev = next(events)
                except StreamBroken as exc:
                    reason = "stalled" if "timed out" in str(exc) else "broken"
                    STALLS.labels(reason).inc()
                    log.warning(
                        "binlog_stream_" + reason,
                        detail=str(exc),
                        seconds=self.stall_seconds,
                        resume_scn=self._last_scn if self._last_scn >= 0 else start,
                        hint="no event or heartbeat arrived in time" if reason == "stalled" else "connection lost",
                    )
                    raise Unavailable(f"binlog stream {reason}: {exc}") from exc
                except BinlogEventError as exc:
                    raise Unavailable(f"undecodable binlog event: {exc}") from exc
                if isinstance(ev, Rows):
                    asm.rows(ev.op, ev.table, ev.rows, ev.columns)
                elif isinstance(ev, Xid):
                    txn = asm.commit(ev.log_pos, ev.timestamp)
                    if txn is not None:
                        self._last_scn, self._last_gtid = txn.scn, txn.gtid
                        self._marks.read(self._clock(), txn.scn)
                        yield ChangeWindow(txn.scn, txn.ts_ms, txn.changes)
                        last_yield = self._clock()
                elif isinstance(ev, Gtid):
                    asm.begin(ev.gtid)
                elif isinstance(ev, Rotate):
                    asm.rotate(ev.next_binlog)
                elif isinstance(ev, XaPrepare):
                    asm.xa_prepare(xa_id)
                elif isinstance(ev, Query):
                    query = ev.query.strip()
                    word = query.split(None, 1)[0].upper() if query else ""
                    txn = None
                    if word == "BEGIN":
                        asm.begin()
                    elif word == "COMMIT":
                        txn = asm.commit(ev.log_pos, ev.timestamp)
                    elif word in ("SAVEPOINT", "RELEASE") or query.upper().startswith("ROLLBACK TO"):
                        pass  # inside a transaction; a rolled-back part is already gone from the binlog
                    elif word == "XA":
                        verb, _, xid = query[3:].strip().partition(" ")
                        verb = verb.upper()
                        if verb == "END":
                            xa_id = xid.strip()
                        elif verb == "COMMIT":
                            txn = asm.xa_commit(xid.strip(), ev.log_pos, ev.timestamp)
                        elif verb == "ROLLBACK":
                            asm.xa_rollback(xid.strip())
                    elif word == "ROLLBACK":  # a rolled-back transaction that touched non-transactional tables
                        log.warning("binlog_rollback_seen", rows=asm.open_rows, hint="its rows are not delivered")
                        asm.reset()
                    else:  # DDL (its own transaction): reload column metadata
                        asm.ddl()
                        self._tables.clear()
                        stream.decoder.forget_tables()
                        log.info("ddl_seen", schema=ev.schema)
                        window = self._truncate_window(ev, ev.schema, asm)
                        if window is not None:
                            yield window
                            last_yield = self._clock()
                    if txn is not None:
                        self._last_scn, self._last_gtid = txn.scn, txn.gtid
                        self._marks.read(self._clock(), txn.scn)
                        yield ChangeWindow(txn.scn, txn.ts_ms, txn.changes)
                        last_yield = self._clock()
                if self._clock() - last_yield >= self.idle_seconds:
                    yield None
                    last_yield = self._clock()
        finally:
            asm.reset()
            events.close()
            stream.close()


# -- snapshot ------------------------------------------------------------------------------------


def _text(v: Any) -> str:
    """A value of a connection without decoders (bytes) or with them (str) as text; None as ``''``."""
    return v.decode() if isinstance(v, bytes) else "" if v is None else str(v)


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_param(v: Any) -> Any:
    """A key value (as the converters produce it) as a query parameter that compares equal in SQL."""
    import datetime as dt
    import uuid

    if isinstance(v, dt.timedelta):  # PyMySQL prints negative timedeltas wrongly
        micros = v // dt.timedelta(microseconds=1)
        sign, micros = ("-" if micros < 0 else ""), abs(micros)
        secs, frac = divmod(micros, 1_000_000)
        return f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac:06d}"
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.datetime) and v.tzinfo is not None:  # TIMESTAMP: the session's time_zone is UTC
        return v.astimezone(dt.UTC).replace(tzinfo=None)
    return v


class MysqlSnapshot(SourceSnapshot):
    """A consistent snapshot of some tables and the binlog position it is consistent with.

    MariaDB: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and the status variables
    ``binlog_snapshot_file``/``binlog_snapshot_position`` — the position after the last transaction
    the snapshot sees, taken atomically with it, without locking anything. MySQL (which lacks those
    variables): the same snapshot started under ``FLUSH TABLES WITH READ LOCK`` (needs ``RELOAD``),
    held only while the position is read. :attr:`scn` is that position as an SCN: the snapshot holds
    exactly the transactions with SCN ≤ ``scn``, and :meth:`MysqlSource.read` with ``after_scn=scn``
    delivers exactly the rest. Rows come through the stream's converters, so a row read here and the
    same row read from the binlog encode to the same bytes. InnoDB tables only (others are not
    transactional: their rows are as of the moment each page is read).
    """

    def __init__(self, source: MysqlSource, tables: Sequence[str] | None = None) -> None:
        import pymysql
        from pymysql.converters import conversions

        self.source = source
        encoders = {k: v for k, v in conversions.items() if not isinstance(k, int)}
        # no decoders: every value arrives as the server's text (bytes for binary columns), which the
        # column converters turn into the same values the binlog decoder's output becomes
        try:
            self.conn = pymysql.connect(**source.settings, conv=encoders, autocommit=True, connect_timeout=10)
        except pymysql.err.OperationalError as exc:
            raise Unavailable(f"cannot connect to MySQL/MariaDB for a snapshot: {exc}") from exc
        try:
            self.scn, self.file, self.position = self._start()
            self.start_scn = self.scn
            self.table_names = list(tables) if tables is not None else self._all_tables()
            self._infos: dict[str, tuple[TableInfo, TableMeta]] = {}
            for name in self.table_names:
                info = self._info(name)
                if info is None:
                    self._check_readable(name)
                    log.warning("snapshot_table_missing", table=name)
                    continue
                meta = TableMeta(name=name, columns=tuple(c.column for c in info.columns.values()), key=info.key)
                self._infos[name] = (info, meta)
            self.tables = [m for _i, m in self._infos.values()]
            self._warn_not_transactional()
        except BaseException:
            self.close()
            raise
        log.info("snapshot_started", scn=self.scn, file=self.file, position=self.position, tables=len(self.table_names))

    def _q(self, sql: str, args: tuple[Any, ...] = (), as_dict: bool = False) -> list[Any]:
        import pymysql

        with self.conn.cursor(pymysql.cursors.DictCursor if as_dict else None) as cur:
            cur.execute(sql, args or None)  # no args: a literal % (LIKE 'x_%') stays as it is
            return list(cur.fetchall())

    def _start(self) -> tuple[int, str, int]:
        self._q("SET SESSION time_zone = '+00:00'")
        self._q("SET SESSION sql_mode = ''")  # no PAD_CHAR_TO_FULL_LENGTH: CHAR values as the binlog has them
        self._q("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self._q("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        status = {str(k).lower(): str(v) for k, v in self._q("SHOW STATUS LIKE 'binlog_snapshot_%'")}
        file, pos = status.get("binlog_snapshot_file", ""), status.get("binlog_snapshot_position", "")
        if not file:  # MySQL: hold commits while the snapshot starts and the position is read
            import pymysql

            self._q("ROLLBACK")
            try:
                self._q("FLUSH TABLES WITH READ LOCK")
            except pymysql.err.MySQLError as exc:
                if exc.args and exc.args[0] in (1044, 1045, 1227):  # access denied
                    raise UsageError(
                        f"a MySQL snapshot needs FLUSH TABLES WITH READ LOCK ({exc}): grant the seeding user "
                        "RELOAD and REPLICATION CLIENT (MariaDB needs neither: it has binlog_snapshot_position)"
                    ) from exc
                raise
            try:
                self._q("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                try:
                    rows = self._q("SHOW BINARY LOG STATUS")
                except Exception:
                    rows = self._q("SHOW MASTER STATUS")
            finally:
                self._q("UNLOCK TABLES")
            if not rows:
                raise UsageError("the server reports no binary log position: is log_bin on?")
            file, pos = _text(rows[0][0]), _text(rows[0][1])
        return pack_scn(binlog_index(file), int(pos)), file, int(pos)

    def _check_readable(self, table: str) -> None:
        """Raise :class:`UsageError` when ``table`` is hidden from this user by privileges, not absent.

        ``information_schema`` lists only the tables a user may read, so a table the user lacks
        ``SELECT`` on looks missing; skipping it would leave a copy holding only the rows changed
        later. A SELECT tells the two apart (1142: denied; 1146: no such table).
        """
        import pymysql

        try:
            self._q(f"SELECT 1 FROM {_ident(self.source.schema)}.{_ident(table)} LIMIT 0")
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] in (1142, 1143):
                raise UsageError(
                    f"the snapshot cannot read {self.source.schema}.{table} ({exc.args[1]}): grant the user "
                    f"SELECT on it (GRANT SELECT ON `{self.source.schema}`.* TO …)"
                ) from exc
            if exc.args and exc.args[0] != 1146:
                raise

    def _warn_not_transactional(self) -> None:
        """Log the tables whose engine has no MVCC snapshot (their pages are as of each page's read)."""
        if not self._infos:
            return
        rows = self._q(
            "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
            (self.source.schema,),
        )
        engines = {_text(t): _text(e) for t, e in rows}
        odd = {t: engines.get(t) for t in self._infos if engines.get(t, "").upper() != "INNODB"}
        if odd:
            log.warning(
                "snapshot_tables_not_innodb",
                engines=odd,
                detail="only InnoDB tables are read consistently at the snapshot's binlog position; rows of "
                "these tables are as of the moment each page is read (convert them: ALTER TABLE … ENGINE=InnoDB)",
            )

    def _all_tables(self) -> list[str]:
        return self.source.only_tables or [
            str(r[0])
            for r in self._q(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
                (self.source.schema,),
            )
        ]

    def _info(self, table: str) -> TableInfo | None:
        def query(sql: str, args: tuple[Any, ...] = (), as_dict: bool = False) -> list[Any]:
            rows = self._q(sql, args, as_dict)
            if as_dict:  # without decoders numbers are text; mysql_column wants what a DictCursor gives
                return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items()} for r in rows]
            return rows

        return self.source._load_table_info(query, table)

    #: a new snapshot has a new position: a consumer cut short starts over (see ``snapshot_rows`` for
    #: the convergent resume a consumer that keeps following from the first position may use)
    resumable = False

    def pages(self, table: str, page_rows: int, after: Sequence[Any] | None = None) -> Iterator[SnapshotPage]:
        """The rows of ``table`` in key order, ``page_rows`` at a time (``after``: continue past that key)."""
        info, meta = self._infos[table]
        return self._table_pages(info, meta, page_rows, tuple(after) if after is not None else None)

    def all_pages(
        self, page_rows: int = 5000, resume: tuple[str, tuple[Any, ...] | None] | None = None
    ) -> Iterator[SnapshotPage]:
        """Every row of the snapshot's tables, table by table in key order, ``page_rows`` at a time.

        ``resume=(table, after_key)`` skips the tables before ``table`` and the rows up to
        ``after_key`` (a page's :attr:`SnapshotPage.last_key`; ``None``: from its first row). A table
        gone from the database is skipped. Each table yields at least one (possibly empty) page.
        """
        names = [n for n in self.table_names if n in self._infos]
        after: tuple[Any, ...] | None = None
        if resume is not None:
            table, after = resume
            names = names[names.index(table) :] if table in names else names
        for name in names:
            info, meta = self._infos[name]
            yield from self._table_pages(
                info, meta, page_rows, after if resume is not None and name == resume[0] else None
            )

    def _table_pages(
        self, info: TableInfo, meta: TableMeta, page_rows: int, after: tuple[Any, ...] | None
    ) -> Iterator[SnapshotPage]:
        import pymysql

        names = [c.column.name for c in info.columns.values()]
        convs = [c.convert for c in info.columns.values()]
        select = ", ".join(
            f"CAST({_ident(n)} AS DOUBLE)" if c.column.type.kind == "float" else _ident(n)
            for n, c in zip(names, info.columns.values(), strict=True)
        )  # FLOAT as text has 6 digits; as DOUBLE it prints the exact value in shortest form
        table = f"{_ident(self.source.schema)}.{_ident(meta.name)}"
        key_idx = [names.index(k) for k in meta.key]

        def change(raw: tuple[Any, ...]) -> RowChange:
            row = {n: (None if v is None else c(v)) for n, v, c in zip(names, raw, convs, strict=True)}
            return RowChange(self.scn, meta, Op.READ, tuple(row[names[i]] for i in key_idx), None, row)

        if not meta.key:  # no primary key: one streamed read of the whole table
            with self.conn.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute(f"SELECT {select} FROM {table}")
                while True:
                    raw_rows = cur.fetchmany(page_rows)
                    rows = [change(r) for r in raw_rows]
                    done = len(raw_rows) < page_rows
                    if done:
                        cur.fetchall()
                    yield SnapshotPage(meta, self.scn, rows, None, done)
                    if done:
                        return
        order = ", ".join(_ident(k) for k in meta.key)
        while True:
            where, args = "", ()
            if after is not None:
                # (k1, k2, …) > (a1, a2, …), spelled out so the optimizer uses the primary key's range
                ors = []
                for i in range(len(meta.key)):
                    eqs = [f"{_ident(k)} = %s" for k in meta.key[:i]] + [f"{_ident(meta.key[i])} > %s"]
                    ors.append("(" + " AND ".join(eqs) + ")")
                    args += tuple(_sql_param(v) for v in after[: i + 1])
                where = "WHERE " + " OR ".join(ors)
            raw_rows = self._q(f"SELECT {select} FROM {table} {where} ORDER BY {order} LIMIT %s", (*args, page_rows))
            rows = [change(r) for r in raw_rows]
            if rows:
                after = rows[-1].key
            done = len(rows) < page_rows
            yield SnapshotPage(meta, self.scn, rows, after, done)
            if done:
                return

    def close(self) -> None:
        """End the snapshot transaction and its connection."""
        with contextlib.suppress(Exception):
            self.conn.close()
