"""Decoder of PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1).

Sans-io: :func:`decode` takes the payload of one ``XLogData`` message (bytes) and returns a typed
message object; nothing here touches a socket. Field layouts follow "Logical Replication Message
Formats" in the PostgreSQL manual (chapter 55.9 in PostgreSQL 15):

=========  ================================================================================
``B``      Begin: final (commit) LSN, commit time, xid
``C``      Commit: flags, commit LSN, end LSN, commit time
``O``      Origin: origin's commit LSN, origin name
``R``      Relation: relation id, namespace, name, replica identity, columns (flags, name, type, typmod)
``Y``      Type: type id, namespace, name (sent before a Relation that uses a non-built-in type)
``I``      Insert: relation id, ``N`` + new tuple
``U``      Update: relation id, optional ``K`` (old key) or ``O`` (old row) tuple, ``N`` + new tuple
``D``      Delete: relation id, ``K`` or ``O`` + old tuple
``T``      Truncate: relation ids, options (cascade, restart identity)
``M``      Message (``pg_logical_emit_message``): flags, LSN, prefix, content
=========  ================================================================================

A tuple is a column count, then per column a kind byte: ``n`` NULL, ``u`` an unchanged TOASTed
value that the server did not send (:data:`UNCHANGED`), ``t`` text (length + bytes), ``b`` binary.
Values stay as ``bytes`` here; :mod:`._pgtypes` turns them into Python values by column type.

Times on the wire are microseconds since 2000-01-01 UTC; :func:`pg_micros_to_ms` converts them.
Protocol version 2 streaming messages (``S``/``E``/``c``/``A``) are recognised only to fail clearly:
the source asks for version 1, where the server spills large transactions itself and sends each
transaction whole, after its commit, in commit order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BEGIN_FIELDS",
    "COMMIT_FIELDS",
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgoutputError",
    "Relation",
    "Truncate",
    "TupleValue",
    "Type",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
    "pg_micros_to_ms",
]

PG_EPOCH_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z in Unix milliseconds


class _Unchanged:
    """Marker for a TOASTed column value the server did not send because the update left it as it was."""

    _instance: _Unchanged | None = None

    def __new__(cls) -> _Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()

TupleValue = bytes | None | _Unchanged
"""One column of a tuple: the text-format bytes, ``None`` for NULL, or :data:`UNCHANGED`."""


class PgoutputError(ValueError):
    """A payload that is not a well-formed pgoutput message."""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_time: int  # µs since 2000-01-01 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    typmod: int
    is_key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    old_kind: str | None  # 'K' key columns only, 'O' whole old row, None: not sent
    old: tuple[TupleValue, ...] | None
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old_kind: str  # 'K' or 'O'
    old: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    relids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgMessage = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message

_I16 = struct.Struct("!H")
_I32 = struct.Struct("!I")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
#: the fields of a Begin message after its type byte (final LSN, commit time, xid): the whole message
BEGIN_FIELDS: Final = _BEGIN
#: the fields of a Commit message after its type byte (flags, commit LSN, end LSN, commit time)
COMMIT_FIELDS: Final = _COMMIT
_U64 = struct.Struct("!Q")
_COL_TAIL = struct.Struct("!Ii")


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 1  # past the message type byte

    def need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise PgoutputError(f"truncated {chr(self.buf[0])!r} message: need {n} bytes at offset {self.pos}")

    def u8(self) -> int:
        self.need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        self.need(2)
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def u32(self) -> int:
        self.need(4)
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        self.need(st.size)
        v = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def cstring(self) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise PgoutputError(f"unterminated string in {chr(self.buf[0])!r} message at offset {self.pos}")
        s = self.buf[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return s

    def take(self, n: int) -> bytes:
        self.need(n)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def tuple_data(self) -> tuple[TupleValue, ...]:
        values, self.pos = _tuple_at(self.buf, self.pos)
        return values

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise PgoutputError(f"{len(self.buf) - self.pos} trailing bytes in {chr(self.buf[0])!r} message")


def _tuple_at(buf: bytes, pos: int) -> tuple[tuple[TupleValue, ...], int]:
    """The TupleData at ``pos`` and the offset after it (the hot path: one call per row change)."""
    end = len(buf)
    try:
        (n,) = _I16.unpack_from(buf, pos)
        pos += 2
        out: list[TupleValue] = []
        append = out.append
        unpack = _I32.unpack_from
        for _ in range(n):
            kind = buf[pos]
            pos += 1
            if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
                (ln,) = unpack(buf, pos)
                pos += 4
                stop = pos + ln
                if stop > end:
                    raise PgoutputError(f"truncated column value at offset {pos}")
                append(buf[pos:stop])
                pos = stop
            elif kind == 0x6E:  # 'n'
                append(None)
            elif kind == 0x75:  # 'u'
                append(UNCHANGED)
            else:
                raise PgoutputError(f"unknown tuple column kind {kind!r} at offset {pos - 1}")
    except (IndexError, struct.error):
        raise PgoutputError(f"truncated tuple data in {chr(buf[0])!r} message") from None
    return tuple(out), pos


def _insert(buf: bytes) -> Insert:
    if len(buf) < 6 or buf[5] != 0x4E:
        raise PgoutputError("Insert without 'N' tuple")
    (relid,) = _I32.unpack_from(buf, 1)
    values, pos = _tuple_at(buf, 6)
    if pos != len(buf):
        raise PgoutputError(f"{len(buf) - pos} trailing bytes in 'I' message")
    return Insert(relid, values)


def decode(payload: bytes) -> PgMessage:
    """Decode one pgoutput message (protocol version 1)."""
    if not payload:
        raise PgoutputError("empty message")
    kind = payload[0]
    if kind == 0x49:  # I, the most frequent message
        return _insert(bytes(payload))
    r = _Reader(bytes(payload))
    msg: PgMessage
    if kind == 0x42:  # B
        final_lsn, ts, xid = r.unpack(_BEGIN)
        msg = Begin(final_lsn, ts, xid)
    elif kind == 0x43:  # C
        flags, commit_lsn, end_lsn, ts = r.unpack(_COMMIT)
        msg = Commit(flags, commit_lsn, end_lsn, ts)
    elif kind == 0x49:  # I
        relid = r.u32()
        if r.u8() != 0x4E:
            raise PgoutputError("Insert without 'N' tuple")
        msg = Insert(relid, r.tuple_data())
    elif kind == 0x55:  # U
        relid = r.u32()
        tag = r.u8()
        old_kind: str | None = None
        old = None
        if tag in (0x4B, 0x4F):  # K, O
            old_kind = chr(tag)
            old = r.tuple_data()
            tag = r.u8()
        if tag != 0x4E:
            raise PgoutputError(f"Update without 'N' tuple (got {tag!r})")
        msg = Update(relid, old_kind, old, r.tuple_data())
    elif kind == 0x44:  # D
        relid = r.u32()
        tag = r.u8()
        if tag not in (0x4B, 0x4F):
            raise PgoutputError(f"Delete without 'K' or 'O' tuple (got {tag!r})")
        msg = Delete(relid, chr(tag), r.tuple_data())
    elif kind == 0x52:  # R
        relid = r.u32()
        namespace = r.cstring()
        name = r.cstring()
        ident = chr(r.u8())
        ncols = r.u16()
        cols = []
        for _ in range(ncols):
            flags = r.u8()
            cname = r.cstring()
            type_oid, typmod = r.unpack(_COL_TAIL)
            cols.append(Column(cname, type_oid, typmod, bool(flags & 1)))
        msg = Relation(relid, namespace, name, ident, tuple(cols))
    elif kind == 0x59:  # Y
        type_oid = r.u32()
        msg = Type(type_oid, r.cstring(), r.cstring())
    elif kind == 0x54:  # T
        n = r.u32()
        opts = r.u8()
        relids = tuple(r.u32() for _ in range(n))
        msg = Truncate(relids, bool(opts & 1), bool(opts & 2))
    elif kind == 0x4F:  # O
        (lsn,) = r.unpack(_U64)
        msg = Origin(lsn, r.cstring())
    elif kind == 0x4D:  # M
        flags = r.u8()
        (lsn,) = r.unpack(_U64)
        prefix = r.cstring()
        msg = Message(bool(flags & 1), lsn, prefix, r.take(r.u32()))
    elif kind in b"SEcAp":
        raise PgoutputError(
            f"streaming message {chr(kind)!r} received, but streaming was not requested (protocol version 1)"
        )
    else:
        raise PgoutputError(f"unknown pgoutput message type {chr(kind)!r}")
    r.done()
    return msg


def pg_micros_to_ms(micros: int) -> int:
    """PostgreSQL's µs-since-2000 timestamp as Unix milliseconds."""
    return PG_EPOCH_MS + micros // 1000


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` → ``'0/16B3748'`` (PostgreSQL's notation)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``'0/16B3748'`` → ``0x16B3748``."""
    hi, sep, lo = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (like 0/16B3748)")
    return (int(hi, 16) << 32) | int(lo, 16)
