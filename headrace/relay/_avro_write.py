"""A compiled Avro binary writer for the record schemas the relay builds (sans-io: a record in, bytes out).

:class:`~._codec.RowCodec` prepares each row as ``{Avro field: value}`` (its one value conversion)
and used to hand it to ``fastavro.schemaless_writer``, which resolves every union and logical type
per value — about 20 µs for a row of a dozen typed columns. :func:`compile_writer` turns a record
schema into one closure per field, chosen once: the union branch, the logical-type arithmetic and
the primitive encoding are fixed when the schema is compiled, so a row costs a few microseconds.

Exactness. The writer produces fastavro's bytes or nothing: each field writer accepts only the value
types it knows exactly how fastavro writes (``type(v) is int`` for a long, an aware ``datetime`` for
``timestamp-micros``, a ``Decimal`` whose digits fit for ``decimal``, ``(name, value)`` tuple
notation for a union's named branch …) and raises :class:`_Unsupported` on anything else — values
fastavro would refuse, or resolve by rules not reproduced here (a naive ``datetime`` in a
``timestamp-micros`` field, which fastavro reads in the machine's local zone). The caller then
encodes that one row with fastavro itself, so every row's bytes are fastavro's, whichever path
wrote them (tests/test_avro_write.py checks the two agree on generated rows of every column kind).
A schema with a type this module does not know compiles to None: the codec uses fastavro alone.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["RecordWriter", "compile_writer"]

#: appends the encoding of one value to a list of byte strings
FieldWriter = Callable[[Any, Callable[[bytes], None]], None]
#: Avro bytes of a record given as {field name: value}
RecordWriter = Callable[[dict[str, Any]], bytes]


class _Unsupported(Exception):
    """A value this writer does not encode (the caller falls back to fastavro for the row)."""


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_EPOCH_TZ = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAYS_SHIFT = dt.date(1970, 1, 1).toordinal()
_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack


def _varint_slow(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [_varint_slow(z) for z in range(1 << 14)]  # zig-zag values below 16384: one lookup
_LOW14 = [bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(1 << 14)]  # 14 bits, more follow


def _varint_big(z: int) -> bytes:
    """The varint of ``z`` ≥ 16384, 14 bits per table lookup."""
    if z < 1 << 28:
        return _LOW14[z & 0x3FFF] + _SMALL[z >> 14]
    if z < 1 << 42:
        return _LOW14[z & 0x3FFF] + _LOW14[(z >> 14) & 0x3FFF] + _SMALL[z >> 28]
    if z < 1 << 56:
        return _LOW14[z & 0x3FFF] + _LOW14[(z >> 14) & 0x3FFF] + _LOW14[(z >> 28) & 0x3FFF] + _SMALL[z >> 42]
    return _varint_slow(z)


def zigzag(n: int) -> bytes:
    """The Avro ``long`` encoding of ``n`` (zig-zag, then base-128 varint); ``n`` must fit 64 bits."""
    z = (n << 1) ^ (n >> 63)
    return _SMALL[z] if z < 16384 else _varint_big(z)


def _long(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not int or not _LONG_MIN <= v <= _LONG_MAX:
        raise _Unsupported
    z = (v << 1) ^ (v >> 63)
    out(_SMALL[z] if z < 16384 else _varint_big(z))


def _int(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not int or not _INT_MIN <= v <= _INT_MAX:
        raise _Unsupported
    z = (v << 1) ^ (v >> 63)
    out(_SMALL[z] if z < 16384 else _varint_big(z))


def _string(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not str:
        raise _Unsupported
    b = v.encode()  # a lone surrogate raises: fastavro then reports it
    n = len(b)
    out(_SMALL[n << 1] if n < 8192 else _varint_big(n << 1))
    out(b)


def _bytes(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not bytes:
        raise _Unsupported
    n = len(v)
    out(_SMALL[n << 1] if n < 8192 else _varint_big(n << 1))
    out(v)


def _boolean(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not bool:
        raise _Unsupported
    out(b"\x01" if v else b"\x00")


def _double(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not float:
        raise _Unsupported
    out(_DOUBLE(v))


def _float(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is not float:
        raise _Unsupported
    out(_FLOAT(v))  # out of float32 range raises OverflowError: fastavro then decides


def _date(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is dt.date:
        _int(v.toordinal() - _DAYS_SHIFT, out)
    elif type(v) is int:
        _int(v, out)
    else:
        raise _Unsupported


def _timestamp_micros(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is dt.datetime and v.tzinfo is not None:
        d = v - _EPOCH_TZ
        _long((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds, out)
    elif type(v) is int:
        _long(v, out)
    else:  # a naive datetime: fastavro reads it in the machine's local zone (time.mktime)
        raise _Unsupported


def _local_timestamp_micros(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is dt.datetime:
        d = v.replace(tzinfo=dt.UTC) - _EPOCH_TZ
        _long((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds, out)
    elif type(v) is int:
        _long(v, out)
    else:
        raise _Unsupported


def _time_micros(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is dt.time:
        _long(v.hour * 3_600_000_000 + v.minute * 60_000_000 + v.second * 1_000_000 + v.microsecond, out)
    elif type(v) is int:
        _long(v, out)
    else:
        raise _Unsupported


def _uuid(v: Any, out: Callable[[bytes], None]) -> None:
    if type(v) is uuid.UUID:
        _string(str(v), out)
    else:
        _string(v, out)


def _bytes_decimal(precision: int, scale: int) -> FieldWriter:
    def write(v: Any, out: Callable[[bytes], None]) -> None:
        # fastavro's prepare_bytes_decimal, step by step (its byte count is not always the minimal one)
        if type(v) is bytes:
            _bytes(v, out)
            return
        if type(v) is not decimal.Decimal:
            raise _Unsupported
        sign, digits, exp = v.as_tuple()
        if not isinstance(exp, int) or len(digits) > precision or exp + scale < 0:
            raise _Unsupported  # NaN/Infinity, too many digits, too fine a scale: fastavro raises
        unscaled = 0
        for d in digits:
            unscaled = unscaled * 10 + d
        unscaled *= 10 ** (exp + scale)
        n = (unscaled.bit_length() + 8) // 8
        if sign:
            unscaled = -unscaled
        _bytes(unscaled.to_bytes(n, "big", signed=True), out)

    return write


_LOGICAL: dict[tuple[str, str], FieldWriter] = {
    ("int", "date"): _date,
    ("long", "timestamp-micros"): _timestamp_micros,
    ("long", "local-timestamp-micros"): _local_timestamp_micros,
    ("long", "time-micros"): _time_micros,
    ("string", "uuid"): _uuid,
}


def _logical(schema: dict[str, Any]) -> FieldWriter | None:
    base, logical = schema.get("type"), schema.get("logicalType")
    if logical is None:
        return None
    if base == "bytes" and logical == "decimal":
        precision, scale = schema.get("precision"), schema.get("scale", 0)
        if not isinstance(precision, int) or not isinstance(scale, int):
            return None
        return _bytes_decimal(precision, scale)
    return _LOGICAL.get((str(base), str(logical)))


_PRIMITIVES: dict[str, FieldWriter] = {
    "long": _long,
    "int": _int,
    "string": _string,
    "bytes": _bytes,
    "boolean": _boolean,
    "double": _double,
    "float": _float,
}


def _branch_name(schema: Any) -> str | None:
    """The name tuple notation uses for a union branch (primitives: the type name)."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in _PRIMITIVES:
        return str(schema["type"])
    return None


class _NotCompiled(Exception):
    """A schema construct this module does not compile."""


def _compile(schema: Any) -> FieldWriter:
    if isinstance(schema, str):
        w = _PRIMITIVES.get(schema)
        if w is None:
            raise _NotCompiled(schema)
        return w
    if isinstance(schema, list):
        return _union(schema)
    if isinstance(schema, dict):
        t = schema.get("type")
        if "logicalType" in schema:
            w = _logical(schema)
            if w is None:
                raise _NotCompiled(schema)
            return w
        if t == "array":
            return _array(_compile(schema.get("items")))
        if isinstance(t, str) and t in _PRIMITIVES:
            return _PRIMITIVES[t]
    raise _NotCompiled(schema)


def _array(item: FieldWriter) -> FieldWriter:
    def write(v: Any, out: Callable[[bytes], None]) -> None:
        if type(v) is not list:
            raise _Unsupported
        if v:
            out(zigzag(len(v)))
            for x in v:
                item(x, out)
        out(b"\x00")

    return write


def _union(branches: list[Any]) -> FieldWriter:
    """The union shapes the relay's schemas have: ``["null", T]``, ``["null", T, "string"]``, ``[T, "string"]``.

    A value in tuple notation ``(name, value)`` takes the named branch; ``None`` the ``null`` branch;
    anything else the one non-null, non-named branch ``T`` (fastavro's first branch that validates:
    ``T``'s writer accepts only values ``T`` validates, and raises otherwise)."""
    names = [_branch_name(b) for b in branches]
    writers = [None if b == "null" else _compile(b) for b in branches]
    null = names.index("null") if "null" in names else None
    candidates = [i for i, b in enumerate(branches) if b != "null"]
    if not candidates:
        raise _NotCompiled(branches)
    first = candidates[0]
    first_w = writers[first]
    assert first_w is not None
    first_tag = zigzag(first)
    null_tag = zigzag(null) if null is not None else None
    by_name = {n: (zigzag(i), writers[i]) for i, n in enumerate(names) if n is not None and n != "null"}

    def write(v: Any, out: Callable[[bytes], None]) -> None:
        if v is None:
            if null_tag is None:
                raise _Unsupported
            out(null_tag)
        elif type(v) is tuple:
            if len(v) != 2 or v[0] not in by_name:
                raise _Unsupported
            tag, w = by_name[v[0]]
            assert w is not None
            out(tag)
            w(v[1], out)
        else:
            out(first_tag)
            first_w(v, out)

    return write


#: inline code for the primitives (value in ``v``; ``raise _U`` for a value left to fastavro)
_INLINE = {
    "long": (
        "if type(v) is not int or not -9223372036854775808 <= v <= 9223372036854775807: raise _U\n"
        "z = (v << 1) ^ (v >> 63)\n"
        "out(S[z] if z < 16384 else VB(z))"
    ),
    "int": (
        "if type(v) is not int or not -2147483648 <= v <= 2147483647: raise _U\n"
        "z = (v << 1) ^ (v >> 63)\n"
        "out(S[z] if z < 16384 else VB(z))"
    ),
    "string": (
        "if type(v) is not str: raise _U\n"
        "b = v.encode()\n"
        "n = len(b)\n"
        "out(S[n << 1] if n < 8192 else VB(n << 1))\n"
        "out(b)"
    ),
    "bytes": ("if type(v) is not bytes: raise _U\nn = len(v)\nout(S[n << 1] if n < 8192 else VB(n << 1))\nout(v)"),
    "boolean": "if type(v) is not bool: raise _U\nout(b'\\x01' if v else b'\\x00')",
    "double": "if type(v) is not float: raise _U\nout(DBL(v))",
}


def _indent(code: str, n: int) -> str:
    return "\n".join(" " * n + line for line in code.split("\n"))


def _inline_name(schema: Any) -> str | None:
    """The primitive whose code is inlined for ``schema`` (``"long"``, ``{"type": "string", …}`` without
    a logical type), or None."""
    if isinstance(schema, str):
        return schema if schema in _INLINE else None
    if isinstance(schema, dict) and "logicalType" not in schema and schema.get("type") in _INLINE:
        return str(schema["type"])
    return None


def _field_code(i: int, schema: Any, ns: dict[str, Any]) -> str:
    """Code writing field ``i`` (its value in ``v``); closures for what is not inlined go into ``ns``."""
    prim = _inline_name(schema)
    if prim is not None:
        return _INLINE[prim]
    if isinstance(schema, list) and len(schema) >= 2 and schema[0] == "null":
        inner = schema[1]
        ns[f"W{i}"] = _union(schema)  # tuple notation (a named branch): the general union writer
        inner_prim = _inline_name(inner)
        first = "" if inner_prim is None else _INLINE[inner_prim]
        if not first:
            ns[f"F{i}"] = _compile(inner)
            first = f"F{i}(v, out)"
        return (
            "if v is None:\n    out(b'\\x00')\n"
            f"elif type(v) is tuple:\n    W{i}(v, out)\n"
            f"else:\n    out(b'\\x02')\n{_indent(first, 4)}"
        )
    ns[f"W{i}"] = _compile(schema)
    return f"W{i}(v, out)"


def compile_writer(schema: dict[str, Any]) -> RecordWriter | None:
    """A writer of ``schema``'s records (``{field name: value}`` → Avro bytes), or None if the schema
    has a construct this module does not compile. The writer raises :class:`ValueError` for a record
    it does not encode exactly like fastavro (the caller encodes that one with fastavro).

    The writer is one generated function with the primitives' encoding inlined (no call per value);
    unions, logical types and arrays call the closures of :func:`_compile`."""
    if schema.get("type") != "record":
        return None
    ns: dict[str, Any] = {
        "S": _SMALL,
        "VB": _varint_big,
        "DBL": _DOUBLE,
        "_U": _Unsupported,
        "_ERRORS": (_Unsupported, UnicodeError, OverflowError, struct.error),
    }
    lines = ["def write(rec):", "    parts = []", "    out = parts.append", "    get = rec.get", "    try:"]
    try:
        for i, f in enumerate(schema["fields"]):
            _compile(f["type"])  # refuses what this module does not know
            ns[f"N{i}"] = f["name"]
            lines.append(f"        v = get(N{i})")
            lines.append(_indent(_field_code(i, f["type"], ns), 8))
    except (_NotCompiled, KeyError, TypeError):
        return None
    lines += [
        "    except _ERRORS as exc:",
        "        raise ValueError('not encoded by the compiled writer') from exc",
        "    return b''.join(parts)",
    ]
    exec(compile("\n".join(lines), f"<avro writer {schema.get('name')}>", "exec"), ns)
    fn: RecordWriter = ns["write"]
    return fn
