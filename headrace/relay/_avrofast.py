"""Compiled per-schema Avro row writers and readers: the hot path of :class:`~headrace.relay._codec.RowCodec`.

For one record schema, :func:`compile_writer` and :func:`compile_reader` generate a Python function
(``exec`` of code built from the schema, once per schema) that writes or reads the schemaless Avro
bytes of a row field by field, inlined: null unions, booleans, ints and longs, floats and doubles,
strings and bytes (plain or annotated with ``headrace.type``), and text-fallback unions whose string
branch holds a ``("string", text)`` tuple. Every other field type (logical types: decimals, dates,
times, timestamps, UUIDs; arrays) is written or read by fastavro itself through a one-field record
schema: a record's Avro bytes are its fields' bytes back to back, so this gives the same bytes.

They are fast paths, not a second format: the bytes must be exactly what
``fastavro.schemaless_writer`` writes and the values exactly what ``fastavro.schemaless_reader``
returns (``tests/test_avrofast.py`` checks this on generated rows of every kind). A writer raises on
anything it does not handle the way fastavro would (a long out of range, a value of the wrong type,
a float too large for ``float``); its caller then takes the fastavro path, which gives the bytes or
the error.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import fastavro

__all__ = ["compile_reader", "compile_writer", "write_long"]

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_ONE_BYTE = [bytes((i,)) for i in range(128)]
#: the varints of 0 … 16383 (one or two bytes): lengths of strings and small ints without a loop
_TWO_BYTES = _ONE_BYTE + [bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128, 16384)]
_MIN_LONG = -(1 << 63)
_MAX_LONG = (1 << 63) - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_PRIMITIVE = frozenset({"null", "boolean", "int", "long", "float", "double", "string", "bytes"})


def write_long(n: int) -> bytes | bytearray:
    """Zig-zag varint of a long (raises OverflowError outside 64 bits, as fastavro does)."""
    if not _MIN_LONG <= n <= _MAX_LONG:
        raise OverflowError("Python int too large to convert to C long")
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return out


#: (Avro type, logical type) → the compiled paths' name for it (fastavro's conversions, restated)
_LOGICAL = {
    ("int", "date"): "date",
    ("long", "time-micros"): "time-micros",
    ("long", "timestamp-micros"): "timestamp-micros",
    ("long", "local-timestamp-micros"): "local-timestamp-micros",
    ("string", "uuid"): "uuid",
}


def _primitive(t: Any) -> str | None:
    """The primitive Avro type of a field type written without logical conversion, or one of
    :data:`_LOGICAL`'s names; None for what the compiled paths leave to fastavro."""
    if isinstance(t, str):
        return t if t in _PRIMITIVE else None
    if isinstance(t, dict) and t.get("type") == "array" and len(t) == 2:
        return _array(t["items"])
    if isinstance(t, dict) and t.get("type") in _PRIMITIVE:
        logical = t.get("logicalType")
        if logical is None:
            return str(t["type"])
        if logical == "decimal" and t["type"] == "bytes" and isinstance(t.get("precision"), int):
            return f"decimal:{t['precision']}:{int(t.get('scale', 0))}"
        return _LOGICAL.get((t["type"], logical))
    return None


def _array(items: Any) -> str | None:
    """``array|<null branch or ->|<item primitive>`` for an array whose items are a primitive (or a
    logical type above) or a two-branch union of null and one; None for other arrays (fastavro's)."""
    p = _primitive(items)
    if p is not None and p != "null" and not p.startswith("array"):
        return f"array|-|{p}"
    u = _union(items)
    if u is None or len(items) != 2 or u[0] is None or u[2] is not None or u[3].startswith("array"):
        return None
    return f"array|{u[0]}|{u[3]}"


def _one_field(t: Any) -> Any:
    return fastavro.parse_schema({"type": "record", "name": "one", "fields": [{"name": "v", "type": t}]})


def _union(t: Any) -> tuple[int | None, int, int | None, str] | None:
    """(null branch, value branch, string branch, value's primitive) of a union the fast path handles."""
    if not isinstance(t, list):
        return None
    null = value = text = None
    prim = None
    for i, b in enumerate(t):
        p = _primitive(b)
        if p == "null" and null is None:
            null = i
        elif value is None:
            if p is None:
                return None
            value, prim = i, p
        elif p == "string" and text is None:
            text = i
        else:
            return None
    if value is None or prim is None:
        return None
    return null, value, text, prim


class _Gen:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "_wl": write_long,
            "_v2": _TWO_BYTES,
            "_pd": _DOUBLE.pack,
            "_pf": _FLOAT.pack,
            "_ud": _DOUBLE.unpack_from,
            "_uf": _FLOAT.unpack_from,
            "_io": io,
            "_sw": fastavro.schemaless_writer,
            "_sr": fastavro.schemaless_reader,
            "_date": dt.date,
            "_datetime": dt.datetime,
            "_time": dt.time,
            "_td": dt.timedelta,
            "_utc": dt.UTC,
            "_epoch": _EPOCH,
            "_epoch_naive": _EPOCH_NAIVE,
            "_fromordinal": dt.date.fromordinal,
            "_Decimal": decimal.Decimal,
            "_UUID": uuid.UUID,
        }
        self.n = 0

    def name(self, value: Any) -> str:
        self.n += 1
        key = f"_c{self.n}"
        self.env[key] = value
        return key

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def build(self, fn: str) -> Callable[..., Any]:
        code = "\n".join(self.lines)
        exec(compile(code, f"<headrace avro {fn}>", "exec"), self.env)  # code built from a schema, never from data
        f = self.env[fn]
        assert callable(f)
        return f  # type: ignore[no-any-return]


def _emit_long(g: _Gen, ind: int, v: str, nonneg: bool = False) -> None:
    """Append the zig-zag varint of the int expression ``v`` to ``out`` (one byte inline when it fits)."""
    g.emit(ind, f"n = {v}")
    if nonneg:
        g.emit(ind, "if n < 8192: out += _v2[n << 1]")
    else:
        g.emit(ind, "if -8192 <= n < 8192: out += _v2[(n << 1) ^ (n >> 63)]")
    g.emit(ind, "else: out += _wl(n)")


def _write_value(g: _Gen, ind: int, prim: str, v: str) -> None:
    """Append the bytes of primitive ``prim`` for the Python value in variable ``v`` to ``out``."""
    if prim == "long":
        g.emit(ind, f"if type({v}) is not int: raise TypeError")
        _emit_long(g, ind, v)
    elif prim == "int":  # fastavro's unions refuse an int past 32 bits (its writer leaves the rest to fastavro)
        g.emit(ind, f"if type({v}) is not int or not -0x80000000 <= {v} <= 0x7FFFFFFF: raise TypeError")
        _emit_long(g, ind, v)
    elif prim == "double":
        g.emit(ind, f"if type({v}) is not float: raise TypeError")
        g.emit(ind, f"out += _pd({v})")
    elif prim == "float":
        g.emit(ind, f"if type({v}) is not float: raise TypeError")
        g.emit(ind, f"out += _pf({v})")
    elif prim == "boolean":
        g.emit(ind, f"if type({v}) is not bool: raise TypeError")
        g.emit(ind, f"out += b'\\x01' if {v} else b'\\x00'")
    elif prim == "string":
        g.emit(ind, f"if type({v}) is not str: raise TypeError")
        g.emit(ind, f"e = {v}.encode()")
        _emit_long(g, ind, "len(e)", nonneg=True)
        g.emit(ind, "out += e")
    elif prim == "bytes":
        g.emit(ind, f"if type({v}) is not bytes: raise TypeError")
        _emit_long(g, ind, f"len({v})", nonneg=True)
        g.emit(ind, f"out += {v}")
    elif prim == "date":
        g.emit(ind, f"if type({v}) is not _date: raise TypeError")
        _emit_long(g, ind, f"{v}.toordinal() - {_DAYS_SHIFT}")
    elif prim == "time-micros":
        g.emit(ind, f"if type({v}) is not _time: raise TypeError")
        _emit_long(g, ind, f"{v}.hour * 3600000000 + {v}.minute * 60000000 + {v}.second * 1000000 + {v}.microsecond")
    elif prim == "timestamp-micros":  # a naive datetime (fastavro: local time by mktime) is left to fastavro
        g.emit(ind, f"if type({v}) is not _datetime or {v}.tzinfo is None: raise TypeError")
        g.emit(ind, f"d = {v} - _epoch")
        _emit_long(g, ind, "(d.days * 86400 + d.seconds) * 1000000 + d.microseconds")
    elif prim == "local-timestamp-micros":
        g.emit(ind, f"if type({v}) is not _datetime: raise TypeError")
        g.emit(ind, f"d = {v}.replace(tzinfo=_utc) - _epoch")
        _emit_long(g, ind, "(d.days * 86400 + d.seconds) * 1000000 + d.microseconds")
    elif prim.startswith("decimal:"):  # fastavro's prepare_bytes_decimal, restated
        _, precision, scale = prim.split(":")
        g.emit(ind, f"if type({v}) is not _Decimal: raise TypeError")
        g.emit(ind, f"sign, digits, exp = {v}.as_tuple()")
        g.emit(ind, f"delta = exp + {int(scale)}")
        g.emit(ind, f"if type(exp) is not int or len(digits) > {int(precision)} or delta < 0: raise ValueError")
        g.emit(ind, "u = int(''.join(map(str, digits))) * 10**delta")
        g.emit(ind, "e = (-u if sign else u).to_bytes((u.bit_length() + 8) // 8, 'big', signed=True)")
        _emit_long(g, ind, "len(e)", nonneg=True)
        g.emit(ind, "out += e")
    elif prim == "uuid":  # fastavro's prepare_uuid: a UUID as its text (other values: fastavro's path)
        g.emit(ind, f"if type({v}) is not _UUID: raise TypeError")
        g.emit(ind, f"e = str({v}).encode()")
        _emit_long(g, ind, "len(e)", nonneg=True)
        g.emit(ind, "out += e")
    elif prim.startswith("array|"):  # fastavro's write_array: one block of every item, then 0
        _, null, item = prim.split("|", 2)
        g.emit(ind, f"if type({v}) is not list: raise TypeError")
        g.emit(ind, f"if {v}:")
        _emit_long(g, ind + 1, f"len({v})", nonneg=True)
        g.emit(ind + 1, f"for x in {v}:")
        if null == "-":
            _write_value(g, ind + 2, item, "x")
        else:
            g.emit(ind + 2, f"if x is None: out += {_ONE_BYTE[int(null) * 2]!r}")
            g.emit(ind + 2, "else:")
            g.emit(ind + 3, f"out += {_ONE_BYTE[(1 - int(null)) * 2]!r}")
            _write_value(g, ind + 3, item, "x")
        g.emit(ind, "out += b'\\x00'")
    else:  # "null" as a field type of its own
        g.emit(ind, f"if {v} is not None: raise TypeError")


def compile_writer(
    fields: Sequence[tuple[str, Any, Callable[[Any], Any], type | None]],
) -> Callable[[Any], bytes]:
    """``row → Avro bytes`` for fields ``(SQL column, Avro field type, converter, native type)``.

    A column's value goes through its converter unless it is None or already of the native type (as
    :meth:`RowCodec.encode <headrace.relay._codec.RowCodec.encode>` does), then is written as
    fastavro would write it; a text fallback's converter returns ``("string", text)``.
    """
    g = _Gen()
    g.emit(0, "def write(row):")
    g.emit(1, "get = row.get")
    g.emit(1, "out = bytearray()")
    for col, ftype, conv, native in fields:
        c_col, c_conv, c_nat = g.name(col), g.name(conv), g.name(native)
        g.emit(1, f"v = get({c_col})")
        g.emit(1, f"if v is not None and type(v) is not {c_nat}: v = {c_conv}(v)")
        prim = _primitive(ftype)
        union = _union(ftype)
        if prim is not None:
            _write_value(g, 1, prim, "v")
        elif union is not None:
            null, value, text, vprim = union
            first = "if"
            if null is not None:
                g.emit(1, "if v is None:")
                g.emit(2, f"out += {_ONE_BYTE[null * 2]!r}")
                first = "elif"
            if text is not None:
                g.emit(1, f"{first} type(v) is tuple:")
                g.emit(2, "if v[0] != 'string': raise TypeError")
                g.emit(2, f"out += {_ONE_BYTE[text * 2]!r}")
                _write_value(g, 2, "string", "v[1]")
                first = "elif"
            g.emit(1, "else:" if first == "elif" else "if True:")
            g.emit(2, f"out += {_ONE_BYTE[value * 2]!r}")
            _write_value(g, 2, vprim, "v")
        else:  # fastavro writes this field (its bytes are the one-field record's bytes)
            c_schema = g.name(_one_field(ftype))
            g.emit(1, "b = _io.BytesIO()")
            g.emit(1, f"_sw(b, {c_schema}, {{'v': v}})")
            g.emit(1, "out += b.getvalue()")
    g.emit(1, "return bytes(out)")
    return g.build("write")


def _read_long(g: _Gen, ind: int, target: str) -> None:
    """Read a zig-zag varint into ``target`` (the second byte inline, a loop past it)."""
    g.emit(ind, "n = buf[p]; p += 1")
    g.emit(ind, "if n > 0x7F:")
    g.emit(ind + 1, "c = buf[p]; p += 1; n = (n & 0x7F) | ((c & 0x7F) << 7)")
    g.emit(ind + 1, "if c > 0x7F:")
    g.emit(ind + 2, "s = 14")
    g.emit(ind + 2, "while True:")
    g.emit(ind + 3, "c = buf[p]; p += 1; n |= (c & 0x7F) << s; s += 7")
    g.emit(ind + 3, "if c < 0x80: break")
    g.emit(ind, f"{target} = (n >> 1) ^ -(n & 1)")


def _read_value(g: _Gen, ind: int, prim: str, target: str) -> None:
    if prim in ("long", "int"):
        _read_long(g, ind, target)
    elif prim == "double":
        g.emit(ind, f"({target},) = _ud(buf, p); p += 8")
    elif prim == "float":
        g.emit(ind, f"({target},) = _uf(buf, p); p += 4")
    elif prim == "boolean":
        g.emit(ind, "b = buf[p]; p += 1")
        g.emit(ind, "if b > 1: raise ValueError('bad boolean')")
        g.emit(ind, f"{target} = b == 1")
    elif prim in ("string", "bytes"):
        _read_long(g, ind, "ln")
        g.emit(ind, "e = p + ln")
        g.emit(ind, "if ln < 0 or e > size: raise EOFError")
        if prim == "string":
            g.emit(ind, f"{target} = str(buf[p:e], 'utf-8'); p = e")
        else:
            g.emit(ind, f"{target} = bytes(buf[p:e]); p = e")
    elif prim == "date":
        _read_long(g, ind, "n")
        g.emit(ind, f"{target} = _fromordinal(n + {_DAYS_SHIFT})")
    elif prim == "time-micros":
        _read_long(g, ind, "n")
        g.emit(
            ind, f"{target} = _time(int(n / 3600000000), int(n / 60000000) % 60, int(n / 1000000) % 60, n % 1000000)"
        )
    elif prim == "timestamp-micros":
        _read_long(g, ind, "n")
        g.emit(ind, f"{target} = _epoch + _td(microseconds=n)")
    elif prim == "local-timestamp-micros":
        _read_long(g, ind, "n")
        g.emit(ind, f"{target} = _epoch_naive + _td(microseconds=n)")
    elif prim.startswith("decimal:"):  # fastavro's read_decimal, restated
        _, precision, scale = prim.split(":")
        ctx = g.name(decimal.Context(prec=int(precision)))
        _read_long(g, ind, "ln")
        g.emit(ind, "e = p + ln")
        g.emit(ind, "if ln < 0 or e > size: raise EOFError")
        g.emit(ind, f"{target} = {ctx}.create_decimal(int.from_bytes(buf[p:e], 'big', signed=True))")
        g.emit(ind, f"{target} = {target}.scaleb({-int(scale)}, {ctx}); p = e")
    elif prim == "uuid":  # fastavro's read_uuid
        _read_value(g, ind, "string", "u")
        g.emit(ind, f"{target} = _UUID(u)")
    elif prim.startswith("array|"):  # fastavro's read_array: blocks until a count of 0
        _, null, item = prim.split("|", 2)
        g.emit(ind, "items = []")
        _read_long(g, ind, "cnt")
        g.emit(ind, "while cnt != 0:")
        g.emit(ind + 1, "if cnt < 0:")
        g.emit(ind + 2, "cnt = -cnt")
        _read_long(g, ind + 2, "bsize")
        # every item takes at least one byte: a count past the bytes left is a bad row, refused before
        # the loop (a reader at an offset in a body would otherwise read on into the frames after it)
        g.emit(ind + 1, "if cnt > size - p: raise EOFError")
        g.emit(ind + 1, "for _ in range(cnt):")
        if null == "-":
            _read_value(g, ind + 2, item, "x")
        else:
            g.emit(ind + 2, "bi = buf[p]; p += 1")
            g.emit(ind + 2, f"if bi == {int(null) * 2}: x = None")
            g.emit(ind + 2, f"elif bi == {(1 - int(null)) * 2}:")
            _read_value(g, ind + 3, item, "x")
            g.emit(ind + 2, "else: raise ValueError('bad union branch')")
        g.emit(ind + 2, "items.append(x)")
        _read_long(g, ind + 1, "cnt")
        g.emit(ind, f"{target} = items")
    else:
        g.emit(ind, f"{target} = None")


def compile_reader(
    fields: Sequence[tuple[str, Any, str, Callable[[Any], Any] | None]],
    at: bool = False,
) -> Callable[..., dict[str, Any]]:
    """``Avro bytes → {SQL column: value}`` for writer fields ``(Avro name, type, SQL column, converter)``.

    A non-None value read goes through the field's converter when it has one (as :meth:`RowCodec.decode
    <headrace.relay._codec.RowCodec.decode>` does). Raises on bytes that are cut short or too long.

    ``at=True``: the function reads the row in place, ``read(buf, start, end)`` for the row that is
    ``buf[start:end]`` (``buf`` a ``bytes``, e.g. a whole response body), without copying it out
    first; it returns what ``read(buf[start:end])`` returns, and raises where that raises (it may
    raise another exception there: callers treat any exception as "take the reference path").
    """
    g = _Gen()
    if at:
        g.emit(0, "def read(buf, p, size):")
    else:
        g.emit(0, "def read(data):")
        g.emit(1, "buf = data if type(data) is bytes else bytes(data)")
        g.emit(1, "size = len(buf)")
        g.emit(1, "p = 0")
    g.emit(1, "bio = None")
    targets: list[tuple[str, str]] = []  # (SQL column, variable), for the dict built at the end
    for i, (_name, ftype, col, conv) in enumerate(fields):
        v = f"f{i}"
        targets.append((col, v))
        prim = _primitive(ftype)
        union = _union(ftype)
        if prim is not None:
            _read_value(g, 1, prim, v)
        elif union is not None:
            null, value, text, vprim = union
            g.emit(1, "br = buf[p]; p += 1")
            g.emit(1, f"if br == {value * 2}:")  # the value's branch first: the common case
            _read_value(g, 2, vprim, v)
            if null is not None:
                g.emit(1, f"elif br == {null * 2}:")
                g.emit(2, f"{v} = None")
            if text is not None:
                g.emit(1, f"elif br == {text * 2}:")
                _read_value(g, 2, "string", v)
            g.emit(1, "else: raise ValueError('bad union branch')")
        else:
            c_schema = g.name(_one_field(ftype))
            g.emit(1, "if bio is None: bio = _io.BytesIO(buf)")
            g.emit(1, "bio.seek(p)")
            g.emit(1, f"{v} = _sr(bio, {c_schema}, None)['v']")
            g.emit(1, "p = bio.tell()")
        if conv is not None:
            g.emit(1, f"if {v} is not None: {v} = {g.name(conv)}({v})")
    g.emit(1, "if p != size: raise ValueError('trailing bytes after the row')")
    # one dict display (column names as constants): the same keys, order and values as storing
    # them one by one (a repeated column keeps its first place and its last value either way)
    g.emit(1, "return {" + ", ".join(f"{col!r}: {v}" for col, v in targets) + "}")
    return g.build("read")
