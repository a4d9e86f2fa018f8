"""Row images → wire values, fast path (sans-io): per-column readers prepared once per table shape.

:func:`decode_rows_fast` returns exactly what :func:`._mysqlrows.decode_rows` (the reference)
returns, faster: for each table-map column list it compiles one function that reads a whole row
image (``struct`` for integers and floats, length prefix + decode for strings and blobs, the null
bit tested inline, the row dict built as one literal), instead of dispatching on the column type for
every value. Types without inline code call the reference's per-value decoder. The generated
code holds no text from the binlog except column names, written as string literals (``repr``).
When any column is absent from the image (``binlog_row_image`` other than FULL) or anything goes
wrong, the whole event is decoded again by the reference, which raises its
:class:`~._mysqlrows.RowDecodeError` naming the column.
Equality with the reference is tested on a real binlog of every type's edge values and on
hypothesis-generated rows (tests/test_binlog_decoder.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from ._mysqlrows import (
    T_BLOB,
    T_DOUBLE,
    T_FLOAT,
    T_INT24,
    T_LONG,
    T_LONGLONG,
    T_SHORT,
    T_STRING,
    T_TINY,
    T_VAR_STRING,
    T_VARCHAR,
    BinlogColumn,
    _value,
    decode_rows,
)

__all__ = ["decode_rows_fast"]

Reader = Callable[[bytes, int], tuple[Any, int]]
Image = Callable[[bytes, int], tuple[dict[str, Any], int]]

_FIXED = {
    (T_TINY, False): "<b",
    (T_TINY, True): "<B",
    (T_SHORT, False): "<h",
    (T_SHORT, True): "<H",
    (T_LONG, False): "<i",
    (T_LONG, True): "<I",
    (T_LONGLONG, False): "<q",
    (T_LONGLONG, True): "<Q",
    (T_FLOAT, False): "<f",
    (T_DOUBLE, False): "<d",
}


def _generic(c: BinlogColumn) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        return _value(c, data, pos)

    return read


def _length_prefixed(i: int, prefix: int, encoding: str | None, env: dict[str, Any]) -> list[str]:
    if prefix == 1:
        head = ["n = data[pos]", "pos += 1"]
    else:
        head = [f"n = from_bytes(data[pos:pos + {prefix}], 'little')", f"pos += {prefix}"]
    tail = ["e = pos + n", "if e > end: raise IndexError('a value runs past the row image')"]
    if encoding is None:
        return [*head, *tail, f"v{i} = data[pos:e]", "pos = e"]
    env[f"enc{i}"] = encoding
    return [*head, *tail, f"v{i} = data[pos:e].decode(enc{i})", "pos = e"]


def _column_code(i: int, c: BinlogColumn, env: dict[str, Any]) -> list[str]:
    """Statements that read column ``i`` into ``v{i}`` and advance ``pos`` (the reference's decoding)."""
    t, enc = c.type, c.encoding
    fmt = _FIXED.get((t, False) if t in (T_FLOAT, T_DOUBLE) else (t, c.unsigned))
    if fmt is not None:
        st = struct.Struct(fmt)
        env[f"u{i}"] = st.unpack_from
        return [f"v{i} = u{i}(data, pos)[0]", f"pos += {st.size}"]
    if t == T_INT24:
        return [f"v{i} = from_bytes(data[pos:pos + 3], 'little', signed={not c.unsigned})", "pos += 3"]
    if enc != "cp1252":  # MySQL's latin1 needs the reference's error handler
        if t in (T_VARCHAR, T_VAR_STRING) or (t == T_STRING and enc is not None):
            return _length_prefixed(i, 2 if c.length > 255 else 1, enc, env)
        if t == T_BLOB and 1 <= c.length <= 4:
            return _length_prefixed(i, c.length, enc, env)
    env[f"r{i}"] = _generic(c)  # everything else decodes as the reference does, value by value
    return [f"v{i}, pos = r{i}(data, pos)"]


def _compile_image(columns: Sequence[BinlogColumn]) -> Image:
    """A function reading one full row image of ``columns`` (all present): ``(row, new position)``."""
    env: dict[str, Any] = {"from_bytes": int.from_bytes}
    nnull = (len(columns) + 7) // 8
    lines = ["def image(data, pos):", "    end = len(data)"]
    if nnull == 1:
        lines += ["    nulls = data[pos]", "    pos += 1"]
    else:
        lines += [f"    nulls = from_bytes(data[pos:pos + {nnull}], 'little')", f"    pos += {nnull}"]
    for i, c in enumerate(columns):
        lines.append(f"    if nulls & {1 << i}:")
        lines.append(f"        v{i} = None")
        lines.append("    else:")
        lines += ["        " + stmt for stmt in _column_code(i, c, env)]
    items = ", ".join(f"{c.name!r}: v{i}" for i, c in enumerate(columns))
    lines.append(f"    return {{{items}}}, pos")
    exec(compile("\n".join(lines), "<headrace binlog row image>", "exec"), env)
    image: Image = env["image"]
    return image


_prepared: dict[int, tuple[Sequence[BinlogColumn], Image, int]] = {}


def _prepare(columns: Sequence[BinlogColumn]) -> tuple[Image, int]:
    """The compiled image reader of ``columns`` and the all-columns-present bitmap as an int."""
    entry = _prepared.get(id(columns))
    if entry is None or entry[0] is not columns:  # the list is kept in the entry, so its id stays its own
        if len(_prepared) > 4096:
            _prepared.clear()
        entry = _prepared[id(columns)] = (columns, _compile_image(columns), (1 << len(columns)) - 1)
    return entry[1], entry[2]


def decode_rows_fast(
    columns: Sequence[BinlogColumn], data: bytes, present: bytes, present_after: bytes | None = None
) -> list[dict[str, Any]]:
    """What :func:`._mysqlrows.decode_rows` returns for the same arguments (see the module docstring).

    ``columns`` should be the same list object for the same table shape (the readers are cached on it).
    """
    image, all_present = _prepare(columns)
    if int.from_bytes(present, "little") != all_present or (
        present_after is not None and int.from_bytes(present_after, "little") != all_present
    ):
        return decode_rows(columns, data, present, present_after)
    out: list[dict[str, Any]] = []
    pos = 0
    end = len(data)
    try:
        if present_after is None:
            while pos < end:
                row, pos = image(data, pos)
                out.append({"values": row})
        else:
            while pos < end:
                before, pos = image(data, pos)
                after, pos = image(data, pos)
                out.append({"before_values": before, "after_values": after})
        if pos > end:
            raise IndexError("row image runs past the event")
    except Exception:
        return decode_rows(columns, data, present, present_after)  # raises the reference's error
    return out
