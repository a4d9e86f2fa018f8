"""Compiled Avro writers of one field over a whole column: ``values → [each value's field bytes]``.

:func:`compile_column_writer` generates, for one record field, the very code
:func:`~headrace.relay._avrofast.compile_writer` generates for that field (the same emitters:
converter and native type, null and text-fallback unions, inline primitives and logical types,
fastavro for the rest), inside a loop over a column's values instead of a row's fields — so a value's
bytes are exactly its field's share of the row writer's bytes (a record's bytes are its fields'
bytes back to back). An optional ``parse`` is applied first to each non-None value (a source's text
parser). Like the row writer, it raises on anything it does not handle as fastavro would; the caller
then takes its reference path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._avrofast import _ONE_BYTE, _Gen, _one_field, _primitive, _union, _write_value

__all__ = ["compile_column_writer"]


def compile_column_writer(
    ftype: Any, conv: Callable[[Any], Any], native: type | None, parse: Callable[[Any], Any] | None = None
) -> Callable[[Sequence[Any]], list[bytes]]:
    """``[value, …] → [field bytes, …]`` for an Avro field of type ``ftype`` (module docstring)."""
    g = _Gen()
    c_conv, c_nat = g.name(conv), g.name(native)
    g.emit(0, "def write_column(values):")
    g.emit(1, "res = []")
    g.emit(1, "keep = res.append")
    g.emit(1, "for v in values:")
    g.emit(2, "out = bytearray()")
    if parse is not None:
        g.emit(2, f"if v is not None: v = {g.name(parse)}(v)")
    # from here on: compile_writer's code for one field, at indent 2
    g.emit(2, f"if v is not None and type(v) is not {c_nat}: v = {c_conv}(v)")
    prim = _primitive(ftype)
    union = _union(ftype)
    if prim is not None:
        _write_value(g, 2, prim, "v")
    elif union is not None:
        null, value, text, vprim = union
        first = "if"
        if null is not None:
            g.emit(2, "if v is None:")
            g.emit(3, f"out += {_ONE_BYTE[null * 2]!r}")
            first = "elif"
        if text is not None:
            g.emit(2, f"{first} type(v) is tuple:")
            g.emit(3, "if v[0] != 'string': raise TypeError")
            g.emit(3, f"out += {_ONE_BYTE[text * 2]!r}")
            _write_value(g, 3, "string", "v[1]")
            first = "elif"
        g.emit(2, "else:" if first == "elif" else "if True:")
        g.emit(3, f"out += {_ONE_BYTE[value * 2]!r}")
        _write_value(g, 3, vprim, "v")
    else:  # fastavro writes this field (its bytes are the one-field record's bytes)
        c_schema = g.name(_one_field(ftype))
        g.emit(2, "b = _io.BytesIO()")
        g.emit(2, f"_sw(b, {c_schema}, {{'v': v}})")
        g.emit(2, "out += b.getvalue()")
    g.emit(2, "keep(bytes(out))")
    g.emit(1, "return res")
    return g.build("write_column")
