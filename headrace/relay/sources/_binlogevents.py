"""Binlog dump stream → the events the MySQL/MariaDB source needs (sans-io: bytes in, values out).

Replaces ``mysql-replication``'s per-event parsing on the relay's hot path. Two layers:

* :class:`PacketFramer` splits the bytes of a ``COM_BINLOG_DUMP`` reply into MySQL packets (3-byte
  length, sequence id; a 0xFFFFFF-long packet continues in the next) and yields each event's bytes
  (the packet after its 0x00 status byte), raising :class:`BinlogServerError` for an error packet
  and :class:`BinlogEndOfStream` for the end-of-file packet.
* :class:`BinlogDecoder` turns one event (19-byte header, body, optional CRC32) into a small value:
  :class:`Rotate`, :class:`Gtid`, :class:`Query`, :class:`Xid`, :class:`XaPrepare`,
  :class:`Heartbeat` or :class:`Rows` (row images decoded by :func:`._mysqlfastrows.decode_rows_fast`,
  which equals the reference :func:`._mysqlrows.decode_rows`);
  other event types, and rows of tables not captured, give ``None``.

TABLE_MAP events are parsed here too (column types and metadata, and the optional metadata of
``binlog_row_metadata=FULL``: signedness, character sets, names, ENUM/SET labels) into the same
:class:`~._mysqlrows.BinlogColumn` list :func:`._mysqlrows.binlog_column` builds from
``mysql-replication``'s table map. MariaDB logs a table map before every statement; the parsed
columns are cached by the event's bytes after the table id, so an unchanged table costs one dict
lookup and keeps one list object per table shape (which the assembler's metadata cache keys on).

Character sets are resolved with ``mysql-replication``'s collation table
(``pymysqlreplication.constants.CHARSET``), as the reference path does. What is filtered
(``only_schema``, ``only_tables``) matches the reference reader: a table map of another schema or
table is remembered as "not captured" and its row events are skipped undecoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .._event import Op
from ._mysqlfastrows import decode_rows_fast
from ._mysqlrows import (
    T_BIT,
    T_BLOB,
    T_DATETIME2,
    T_DOUBLE,
    T_ENUM,
    T_FLOAT,
    T_GEOMETRY,
    T_INT24,
    T_JSON,
    T_LONG,
    T_LONGLONG,
    T_NEWDECIMAL,
    T_SET,
    T_SHORT,
    T_STRING,
    T_TIME2,
    T_TIMESTAMP2,
    T_TINY,
    T_VAR_STRING,
    T_VARCHAR,
    T_YEAR,
    BinlogColumn,
    _python_encoding,
)

__all__ = [
    "BinlogDecoder",
    "BinlogEndOfStream",
    "BinlogEventError",
    "BinlogServerError",
    "Gtid",
    "Heartbeat",
    "PacketFramer",
    "Query",
    "Rotate",
    "Rows",
    "TableMap",
    "XaPrepare",
    "Xid",
    "dump_command",
    "parse_table_map",
]

# event types (libbinlogevents/include/binlog_event.h, MariaDB sql/log_event.h)
QUERY_EVENT, ROTATE_EVENT, XID_EVENT, FORMAT_DESCRIPTION_EVENT = 2, 4, 16, 15
TABLE_MAP_EVENT, HEARTBEAT_LOG_EVENT, GTID_LOG_EVENT, XA_PREPARE_LOG_EVENT = 19, 27, 33, 38
WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1 = 23, 24, 25
WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2 = 30, 31, 32
MARIADB_GTID_EVENT = 162
_ROWS_OPS = {
    WRITE_ROWS_V1: Op.INSERT,
    WRITE_ROWS_V2: Op.INSERT,
    UPDATE_ROWS_V1: Op.UPDATE,
    UPDATE_ROWS_V2: Op.UPDATE,
    DELETE_ROWS_V1: Op.DELETE,
    DELETE_ROWS_V2: Op.DELETE,
}
_V2 = (WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2)

HEADER_LEN = 19
_HEADER = struct.Struct("<IBIIIH")
_COM_BINLOG_DUMP = 0x12

# optional metadata field types (binlog_row_metadata=FULL)
_SIGNEDNESS, _DEFAULT_CHARSET, _COLUMN_CHARSET, _COLUMN_NAME = 1, 2, 3, 4
_SET_STR_VALUE, _ENUM_STR_VALUE = 5, 6  # the rest (GEOMETRY_TYPE, keys, ENUM/SET charsets) is not needed

# what mysql-replication counts as numeric (signedness bits) and as character columns
_NUMERIC = frozenset((T_TINY, T_SHORT, T_INT24, T_LONG, T_LONGLONG, T_NEWDECIMAL, T_FLOAT, T_DOUBLE, T_YEAR))
_CHARACTER = frozenset((T_STRING, T_VAR_STRING, T_VARCHAR, T_BLOB))


class BinlogEventError(ValueError):
    """An event's bytes are not what its type says (truncated or malformed)."""


class BinlogServerError(Exception):
    """The server sent an error packet instead of the next event."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"({self.code}) {self.message}"


class BinlogEndOfStream(Exception):
    """The server ended the dump (end-of-file packet)."""


def dump_command(file: str, position: int, server_id: int, flags: int = 0) -> bytes:
    """The ``COM_BINLOG_DUMP`` packet (with its 4-byte packet header, sequence 0) from ``(file, position)``."""
    body = struct.pack("<BIHI", _COM_BINLOG_DUMP, position, flags, server_id) + file.encode()
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


class PacketFramer:
    """MySQL packets of a dump reply, fed in arbitrary pieces (see the module docstring)."""

    __slots__ = ("_buf", "_parts")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Every whole event in the bytes received so far (the rest waits for more)."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
                if end - pos - 4 < n:
                    break
                payload = bytes(buf[pos + 4 : pos + 4 + n])
                pos += 4 + n
                if n == 0xFFFFFF:  # continued in the next packet
                    self._parts.append(payload)
                    continue
                if self._parts:
                    self._parts.append(payload)
                    payload = b"".join(self._parts)
                    self._parts = []
                yield self._event(payload)
        finally:
            del buf[:pos]

    @staticmethod
    def _event(payload: bytes) -> bytes:
        if not payload:
            raise BinlogEventError("an empty packet in the binlog stream")
        status = payload[0]
        if status == 0x00:
            return payload[1:]
        if status == 0xFF:
            code = int.from_bytes(payload[1:3], "little")
            msg = payload[3:]
            if msg[:1] == b"#":  # SQL state marker + 5-character state
                msg = msg[6:]
            raise BinlogServerError(code, msg.decode("utf-8", "replace"))
        if status == 0xFE and len(payload) < 9:
            raise BinlogEndOfStream("the server ended the binlog stream")
        raise BinlogEventError(f"unexpected packet status 0x{status:02x} in the binlog stream")


# -- decoded events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rotate:
    """The stream continues in ``next_binlog`` at ``position``."""

    next_binlog: str
    position: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Gtid:
    """A transaction's GTID (MariaDB ``domain-server-seq``, MySQL ``uuid:gno``)."""

    gtid: str
    log_pos: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Query:
    """A statement: BEGIN/COMMIT/XA …/DDL; ``schema`` is the session's default database."""

    schema: str
    query: str
    log_pos: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Xid:
    """The commit of a transaction; ``log_pos`` is the position after it."""

    log_pos: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class XaPrepare:
    """``XA PREPARE`` (or ``XA COMMIT … ONE PHASE``) of the open transaction."""

    one_phase: bool
    log_pos: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The server is alive and has nothing new."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class Rows:
    """A rows event of a captured table: ``rows`` as :func:`._mysqlrows.decode_rows` returns them."""

    op: Op
    schema: str
    table: str
    columns: list[BinlogColumn]
    rows: list[dict[str, Any]]
    log_pos: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class TableMap:
    """A parsed table map: the table and its columns (``named``: the binlog carried their names)."""

    schema: str
    table: str
    columns: list[BinlogColumn]
    named: bool = True


Event = Rotate | Gtid | Query | Xid | XaPrepare | Heartbeat | Rows


# -- little readers ------------------------------------------------------------------------------


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    c = data[pos]
    if c < 251:
        return c, pos + 1
    if c == 252:
        return int.from_bytes(data[pos + 1 : pos + 3], "little"), pos + 3
    if c == 253:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    if c == 254:
        return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9
    raise BinlogEventError(f"bad length-encoded integer 0x{c:02x}")


def _lenenc_bytes(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    n, pos = _lenenc(data, pos)
    if pos + n > end:
        raise BinlogEventError("a string runs past its field")
    return data[pos : pos + n], pos + n


def _need(data: bytes, end: int) -> None:
    if len(data) < end:
        raise BinlogEventError(f"event truncated: {len(data)} bytes, needs {end}")


# -- table map -----------------------------------------------------------------------------------

_charset_cache: dict[tuple[int, str], str | None] = {}


def _charset_encoding(collation_id: int, dbms: str) -> str | None:
    """The Python codec for a collation id (None: binary), as the reference path resolves it."""
    key = (collation_id, dbms)
    if key not in _charset_cache:
        from pymysqlreplication.constants.CHARSET import charset_by_id

        cs = charset_by_id(collation_id, dbms)
        _charset_cache[key] = _python_encoding("utf8" if cs is None else cs.encoding)
    return _charset_cache[key]


def _names_of(data: bytes, pos: int, end: int) -> list[str]:
    out = []
    while pos < end:
        raw, pos = _lenenc_bytes(data, pos, end)
        out.append(raw.decode())
    return out


def _ints(data: bytes, pos: int, end: int) -> list[int]:
    out = []
    while pos < end:
        v, pos = _lenenc(data, pos)
        out.append(v)
    return out


def _labels(data: bytes, pos: int, end: int) -> list[list[str]]:
    out = []
    while pos < end:
        count, pos = _lenenc(data, pos)
        values = []
        for _ in range(count):
            raw, pos = _lenenc_bytes(data, pos, end)
            try:
                values.append(raw.decode())
            except UnicodeDecodeError:  # as the reference path: an undecodable label is ''
                values.append("")
        out.append(values)
    return out


def _default_charset(data: bytes, pos: int, end: int, is_col: list[bool]) -> list[int]:
    default, pos = _lenenc(data, pos)
    special: dict[int, int] = {}
    while pos < end:
        idx, pos = _lenenc(data, pos)
        special[idx], pos = _lenenc(data, pos)
    return [special.get(i, default) for i in range(sum(is_col))]


def parse_table_map(body: bytes, dbms: str = "mariadb", post_header_len: int = 8) -> TableMap:
    """A TABLE_MAP event's body (after the 19-byte header, without the checksum) → :class:`TableMap`."""
    try:
        return _parse_table_map(body, dbms, post_header_len)
    except BinlogEventError:
        raise
    except (IndexError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise BinlogEventError(f"malformed table map: {exc}") from exc


def _parse_table_map(body: bytes, dbms: str, post_header_len: int) -> TableMap:
    pos = post_header_len
    _need(body, pos + 1)
    n = body[pos]
    schema = body[pos + 1 : pos + 1 + n].decode()
    pos += n + 2
    _need(body, pos + 1)
    n = body[pos]
    table = body[pos + 1 : pos + 1 + n].decode()
    pos += n + 2
    _need(body, pos)
    ncols, pos = _lenenc(body, pos)
    _need(body, pos + ncols)
    types = list(body[pos : pos + ncols])
    pos += ncols
    meta_len, pos = _lenenc(body, pos)
    meta_end = pos + meta_len
    _need(body, meta_end)
    # per-column metadata (the same fields mysql-replication's Column reads)
    kws: list[dict[str, Any]] = []
    for i, t in enumerate(types):
        kw: dict[str, Any] = {}
        if t == T_VARCHAR:
            kw["length"] = body[pos] | body[pos + 1] << 8
            pos += 2
        elif t in (T_DOUBLE, T_FLOAT, T_BLOB, T_GEOMETRY, T_JSON):
            if t in (T_BLOB, T_GEOMETRY, T_JSON):
                kw["length"] = body[pos]
            pos += 1
        elif t in (T_TIMESTAMP2, T_DATETIME2, T_TIME2):
            kw["fsp"] = body[pos]
            pos += 1
        elif t in (T_VAR_STRING, T_STRING):
            m = body[pos] << 8 | body[pos + 1]
            pos += 2
            real = m >> 8
            if real in (T_SET, T_ENUM):
                types[i] = real
                kw["meta"] = (m & 0xFF, 0)
            else:
                kw["length"] = (((m >> 4) & 0x300) ^ 0x300) + (m & 0xFF)
        elif t == T_NEWDECIMAL:
            kw["meta"] = (body[pos], body[pos + 1])
            pos += 2
        elif t == T_BIT:
            kw["bits"] = body[pos + 1] * 8 + body[pos]
            pos += 2
        kws.append(kw)
    if pos > meta_end:
        raise BinlogEventError("table map metadata runs past its length")
    pos = meta_end + (ncols + 7) // 8  # skip the nullable bitmap
    _need(body, pos)
    # optional metadata (TLV)
    is_char = [t in _CHARACTER or (t == T_GEOMETRY and dbms == "mariadb") for t in types]
    names: list[str] = []
    unsigned = [False] * ncols
    charsets: list[int] | None = None
    enum_labels: list[list[str]] = []
    set_labels: list[list[str]] = []
    end = len(body)
    while pos < end:
        kind = body[pos]
        length, pos = _lenenc(body, pos + 1)
        fend = pos + length
        _need(body, fend)
        if kind == _SIGNEDNESS:
            k = 0
            for i, t in enumerate(types):
                if t in _NUMERIC:
                    unsigned[i] = bool(body[pos + (k >> 3)] & (0x80 >> (k & 7)))
                    k += 1
        elif kind == _DEFAULT_CHARSET:
            charsets = _default_charset(body, pos, fend, is_char)
        elif kind == _COLUMN_CHARSET:
            charsets = _ints(body, pos, fend)
        elif kind == _COLUMN_NAME:
            names = _names_of(body, pos, fend)
        elif kind == _SET_STR_VALUE:
            set_labels = _labels(body, pos, fend)
        elif kind == _ENUM_STR_VALUE:
            enum_labels = _labels(body, pos, fend)
        pos = fend
    cols: list[BinlogColumn] = []
    with_meta = bool(names)  # without column names the reference path ignores the optional metadata
    ci = ei = si = 0
    for i, t in enumerate(types):
        kw = kws[i]
        name = names[i] if with_meta and i < len(names) else f"UNKNOWN_COL{i}"
        encoding: str | None = None
        if with_meta and is_char[i]:
            if charsets is None:
                raise BinlogEventError(f"table map of {schema}.{table} names columns but gives no character sets")
            encoding = _charset_encoding(charsets[ci], dbms)
            ci += 1
        # ENUM/SET values decode to their labels: their character set does not matter
        if t == T_ENUM:
            kw["enum_values"] = [""] + enum_labels[ei] if with_meta else None
            ei += int(with_meta)
        elif t == T_SET:
            kw["set_values"] = set_labels[si] if with_meta else None
            si += int(with_meta)
        if t in (T_STRING, T_VAR_STRING, T_VARCHAR, T_BLOB):
            kw["encoding"] = encoding
        cols.append(BinlogColumn(name, t, unsigned=unsigned[i] if with_meta else False, **kw))
    return TableMap(schema, table, cols, with_meta)


# -- the decoder ---------------------------------------------------------------------------------


class BinlogDecoder:
    """Event bytes → decoded events, keeping the table maps seen (see the module docstring).

    ``checksum``: events end with a 4-byte CRC32 (the server's ``binlog_checksum`` is not NONE);
    ``dbms``: ``"mariadb"`` or ``"mysql"`` (collation ids and GEOMETRY character sets differ);
    ``column_names``: for table maps without column names (no ``binlog_row_metadata=FULL``), the
    table's column names now, in order (the reference path reads them from ``information_schema``
    too, and uses them when their count matches).
    """

    def __init__(
        self,
        *,
        checksum: bool,
        dbms: str = "mariadb",
        only_schema: str | None = None,
        only_tables: Sequence[str] | None = None,
        column_names: Callable[[str, str], Sequence[str] | None] | None = None,
    ) -> None:
        self.checksum = checksum
        self.column_names = column_names
        self.dbms = dbms
        self.only_schema = only_schema
        self.only_tables = frozenset(only_tables) if only_tables is not None else None
        self._trailer = 4 if checksum else 0
        self._post_headers: bytes = b""
        self._maps: dict[int, TableMap | None] = {}
        self._parsed: dict[bytes, TableMap | None] = {}

    def forget_tables(self) -> None:
        """A DDL statement ran: parse table maps afresh (column names may come from the catalog)."""
        self._parsed.clear()

    def _post_header_len(self, event_type: int, default: int) -> int:
        ph = self._post_headers
        if 0 < event_type <= len(ph):
            n = ph[event_type - 1]
            if n < default:
                raise BinlogEventError(f"event type {event_type} declares a post-header of {n} < {default} bytes")
            return n
        return default

    def decode(self, event: bytes) -> Event | None:
        """One event (header, body, checksum) → its decoded value, or None for what the source ignores."""
        if len(event) < HEADER_LEN + self._trailer:
            raise BinlogEventError(f"event of {len(event)} bytes is shorter than its header")
        timestamp, etype, _server_id, size, log_pos, _flags = _HEADER.unpack_from(event)
        if size != len(event):
            raise BinlogEventError(f"event type {etype} says {size} bytes, the packet holds {len(event)}")
        try:
            op = _ROWS_OPS.get(etype)
            if op is not None:
                return self._rows(op, etype, event, log_pos, timestamp)
            if etype == TABLE_MAP_EVENT:
                self._table_map(event)
                return None
            if etype == XID_EVENT:
                return Xid(log_pos, timestamp)
            if etype == MARIADB_GTID_EVENT:
                seq, domain = struct.unpack_from("<QI", event, HEADER_LEN)
                return Gtid(f"{domain}-{_server_id}-{seq}", log_pos, timestamp)
            if etype == QUERY_EVENT:
                return self._query(event, log_pos, timestamp)
            if etype == ROTATE_EVENT:
                (position,) = struct.unpack_from("<Q", event, HEADER_LEN)
                name = event[HEADER_LEN + 8 : len(event) - self._trailer].decode()
                if timestamp != 0:  # a real rotation (not the dump's first, fake one): table ids may be reused
                    self._maps.clear()
                return Rotate(name, position, timestamp)
            if etype == GTID_LOG_EVENT:
                sid = event[HEADER_LEN + 1 : HEADER_LEN + 17].hex()
                (gno,) = struct.unpack_from("<Q", event, HEADER_LEN + 17)
                return Gtid(f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}", log_pos, timestamp)
            if etype == XA_PREPARE_LOG_EVENT:
                return XaPrepare(event[HEADER_LEN] != 0, log_pos, timestamp)
            if etype == HEARTBEAT_LOG_EVENT:
                return Heartbeat(timestamp)
            if etype == FORMAT_DESCRIPTION_EVENT:
                self._post_headers = bytes(event[HEADER_LEN + 57 : len(event) - 5])
                return None
        except BinlogEventError:
            raise
        except (IndexError, ValueError, UnicodeDecodeError, struct.error) as exc:
            raise BinlogEventError(f"malformed event of type {etype} at {log_pos}: {exc}") from exc
        return None

    def _query(self, event: bytes, log_pos: int, timestamp: int) -> Query:
        db_len = event[HEADER_LEN + 8]
        (status_len,) = struct.unpack_from("<H", event, HEADER_LEN + 11)
        pos = HEADER_LEN + self._post_header_len(QUERY_EVENT, 13) + status_len
        end = len(event) - self._trailer
        if pos + db_len + 1 > end:
            raise BinlogEventError("query event truncated")
        schema = event[pos : pos + db_len].decode()
        query = event[pos + db_len + 1 : end].decode("utf-8", errors="backslashreplace")
        return Query(schema, query, log_pos, timestamp)

    def _table_map(self, event: bytes) -> None:
        table_id = int.from_bytes(event[HEADER_LEN : HEADER_LEN + 6], "little")
        key = event[HEADER_LEN + 6 : len(event) - self._trailer]
        if key in self._parsed:
            self._maps[table_id] = self._parsed[key]
            return
        ph = self._post_header_len(TABLE_MAP_EVENT, 8)
        tmap: TableMap | None = parse_table_map(event[HEADER_LEN : len(event) - self._trailer], self.dbms, ph)
        assert tmap is not None
        if (self.only_tables is not None and tmap.table not in self.only_tables) or (
            self.only_schema is not None and tmap.schema != self.only_schema
        ):
            tmap = None
        elif not tmap.named and self.column_names is not None:
            names = self.column_names(tmap.schema, tmap.table)
            if names and len(names) == len(tmap.columns):
                for c, name in zip(tmap.columns, names, strict=True):
                    c.name = name
        if len(self._parsed) > 4096:
            self._parsed.clear()
        self._parsed[bytes(key)] = tmap
        self._maps[table_id] = tmap

    def _rows(self, op: Op, etype: int, event: bytes, log_pos: int, timestamp: int) -> Rows | None:
        table_id = int.from_bytes(event[HEADER_LEN : HEADER_LEN + 6], "little")
        tmap = self._maps.get(table_id)
        if tmap is None:
            return None  # not captured (or its table map was filtered)
        if etype in _V2:
            pos = HEADER_LEN + self._post_header_len(etype, 10)
            (extra,) = struct.unpack_from("<H", event, HEADER_LEN + 8)
            pos += extra - 2
        else:
            pos = HEADER_LEN + self._post_header_len(etype, 8)
        ncols, pos = _lenenc(event, pos)
        nb = (ncols + 7) // 8
        present = event[pos : pos + nb]
        pos += nb
        after = None
        if op is Op.UPDATE:
            after = event[pos : pos + nb]
            pos += nb
        end = len(event) - self._trailer
        if pos > end or ncols != len(tmap.columns):
            raise BinlogEventError(
                f"rows event for {tmap.schema}.{tmap.table} has {ncols} columns, its table map {len(tmap.columns)}"
            )
        rows = decode_rows_fast(tmap.columns, event[pos:end], present, after)
        return Rows(op, tmap.schema, tmap.table, tmap.columns, rows, log_pos, timestamp)
