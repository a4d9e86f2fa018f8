"""Compiled readers of pgoutput row messages, one per relation: the hot path of the PostgreSQL source.

:func:`compile_insert` generates (``exec`` of code built from the relation, once per Relation
message) a function that reads an ``I`` message's new tuple straight from the payload into the row
dict and the key tuple: one inlined block per column, the column's parser called on its slice of
the payload. It skips what the reference path builds per change — the :class:`~._pgoutput.Insert`
object, the tuple of raw values, the loop over columns — but converts each value with the very
parser the reference path uses (:attr:`_Rel.parsers <._pgstream._Rel>`), so there is still one
value conversion per source.

It is a fast path, not a second decoder: for a payload it handles, it returns exactly what
``PgChangeAssembler.feed(decode(payload))`` would carry in its :class:`~._base.RowChange` (``after``
and ``key``), and it raises on anything else — a column kind other than text or NULL (an unchanged
TOAST marker, binary), a column count that is not the relation's, a truncated or overlong payload, a
value its parser refuses — so the caller takes the reference path, which gives the change or the
error. ``tests/test_pgrows.py`` checks this on generated relations and payloads.

:func:`compile_tuple` does the same for one TupleData anywhere in a payload — the old key or old row
(``K``/``O``) and the new row (``N``) of UPDATE and DELETE messages — and also reads unchanged-TOAST
columns (``u``): their value is ``None`` and their names are returned, in column order, for the
assembler to fill in or mark exactly as the reference path does (it shares that code).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["InsertReader", "Refused", "TupleReader", "compile_insert", "compile_tuple"]

InsertReader = Callable[[bytes], tuple[dict[str, Any], tuple[Any, ...]]]
"""An ``I`` payload → (row, key), or raises."""

TupleReader = Callable[[bytes, int], tuple[dict[str, Any], list[str] | None, int]]
"""(payload, offset of a TupleData) → (row, its unchanged-TOAST columns or None, offset after it), or raises."""

_U32 = struct.Struct("!I").unpack_from


class Refused(Exception):
    """The compiled reader does not handle this payload (the reference path decides)."""


def compile_insert(names: Sequence[str], parsers: Sequence[Callable[[bytes], Any]], key: Sequence[str]) -> InsertReader:
    """A reader of ``I`` messages for a relation of columns ``names`` (in order), each converted by
    its parser in ``parsers``; the key is the values of the ``key`` columns, in that order."""
    if len(names) != len(parsers):
        raise ValueError("one parser per column")
    if len(names) > 0xFFFF:
        raise ValueError("too many columns")
    where = {n: i for i, n in enumerate(names)}
    env: dict[str, Any] = {"_u": _U32, "_Refused": Refused, "_ncols": len(names).to_bytes(2, "big")}
    lines = [
        "def read(buf, _u=_u, _len=len, _Refused=_Refused, _ncols=_ncols):",
        "    if buf[5] != 78 or buf[6:8] != _ncols:",  # 'N', then the column count
        "        raise _Refused",
        "    pos = 8",
    ]
    for i, parse in enumerate(parsers):
        env[f"_p{i}"] = parse
        lines += [
            "    k = buf[pos]",
            "    if k == 116:",  # 't': u32 length, text bytes
            "        s = pos + 5",
            "        pos = s + _u(buf, pos + 1)[0]",
            f"        v{i} = _p{i}(buf[s:pos])",
            "    elif k == 110:",  # 'n': NULL
            f"        v{i} = None",
            "        pos += 1",
            "    else:",
            "        raise _Refused",
        ]
    # a length past the end leaves pos past it (a slice is cut short, the check below sees it)
    lines += ["    if pos != _len(buf):", "        raise _Refused"]
    row = ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names))
    keys = "".join(f"v{where[k]}, " for k in key)
    lines.append(f"    return {{{row}}}, ({keys})")
    exec(compile("\n".join(lines), "<headrace pgoutput insert>", "exec"), env)
    reader: InsertReader = env["read"]
    return reader


def compile_tuple(names: Sequence[str], parsers: Sequence[Callable[[bytes], Any]]) -> TupleReader:
    """A reader of one TupleData of a relation of columns ``names`` (in order), each converted by its
    parser in ``parsers``. It raises (:class:`Refused` or the error of an out-of-range read or of a
    parser) on a column count that is not the relation's, a binary or unknown column kind, a value its
    parser refuses; a length past the end of the payload is left for the caller to see (the offset
    it returns is then past the end)."""
    if len(names) != len(parsers):
        raise ValueError("one parser per column")
    if len(names) > 0xFFFF:
        raise ValueError("too many columns")
    env: dict[str, Any] = {"_u": _U32, "_Refused": Refused, "_ncols": len(names).to_bytes(2, "big")}
    lines = [
        "def read(buf, pos, _u=_u, _Refused=_Refused, _ncols=_ncols):",
        "    if buf[pos:pos + 2] != _ncols:",
        "        raise _Refused",
        "    pos += 2",
        "    unchanged = None",
    ]
    for i, parse in enumerate(parsers):
        env[f"_p{i}"] = parse
        env[f"_n{i}"] = names[i]
        lines += [
            "    k = buf[pos]",
            "    if k == 116:",  # 't'
            "        s = pos + 5",
            "        pos = s + _u(buf, pos + 1)[0]",
            f"        v{i} = _p{i}(buf[s:pos])",
            "    elif k == 110:",  # 'n'
            f"        v{i} = None",
            "        pos += 1",
            "    elif k == 117:",  # 'u': unchanged TOAST, not sent
            f"        v{i} = None",
            "        pos += 1",
            "        if unchanged is None:",
            "            unchanged = []",
            f"        unchanged.append(_n{i})",
            "    else:",
            "        raise _Refused",
        ]
    row = ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names))
    lines.append(f"    return {{{row}}}, unchanged, pos")
    exec(compile("\n".join(lines), "<headrace pgoutput tuple>", "exec"), env)
    reader: TupleReader = env["read"]
    return reader
