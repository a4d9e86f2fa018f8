"""Bulk reads of a JSON batch that Arrow's reader refuses as a whole: bad lines found and left out
in one pass, and fields that mix numbers and strings read in a few grouped reads, instead of the
careful path's read per refusal (a part per bad line or type change, Python's ``json`` after many).

Bad lines (:func:`syntax_errors`). A syntax-only read (no columns, so no type changes to stop at)
names the first line that is not JSON; the line is checked alone (Arrow's reader refuses it with the
same message, Python's ``json`` does not make an object of it), recorded with the reason the careful
path gives it, and the read goes on from the next line. Each line is parsed once. A refusal without
a row, or a line Python reads as an object (valid JSON Arrow cannot take), ends the attempt: the
careful path decides.

Mixed fields (:func:`read_mixed`). Arrow's JSON reader refuses a batch where a field changes from
number to string (``Column(/order) changed from number to string in row 12``). The rule of
:mod:`._unify` makes the field a string column of JSON texts: a string as it is, an integer as its
digits. So the lines are grouped by which of the mixed fields hold a string (an RE2 match on the raw
line, ``"order": "``), each group is read by Arrow's reader in one go (the mixed fields declared
strings in the groups where they hold one), and the groups are put back in line order, the mixed
fields' integers cast to their digits.

The grouping is a guess that Arrow's reader checks: a line put in a group where its field is
declared a string but holds a number is refused, and a group whose undeclared mixed field comes out
as anything but int64 (all strings, doubles whose text Python would write differently, …) is not
taken. Whatever cannot be proven to give what the careful path gives yields None, and the caller
reads the batch that way:

* a line holding the text ``null`` (a key with a null value is a column without a value to find
  its place by);
* a column whose type differs between groups (int64 here, double there; timestamps and strings);
* a mixed field's string that looks like a date (the careful path reads such strings as
  timestamps in parts of the batch);
* more than :data:`MAX_FIELDS` mixed fields, or another refusal.

Column order is the order of first appearance in the lines, as one read would give: the first row
where each column has a value, ties (columns first seen on the same line) broken by that line's key
order.

The one known difference from the careful path is the careful path's: it reads a batch in parts
split at each refusal, and a part whose strings of a field all look like timestamps gets a timestamp
column, which becomes Arrow's text of the timestamps (``2026-01-02 03:04:05``) when joined with a
part where the field stays a string. A bulk read keeps the strings as written, as a batch without
refusals does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

__all__ = [
    "MAX_FIELDS",
    "NOT_OBJECT",
    "Records",
    "Rows",
    "clashing_field",
    "failed_row",
    "joined",
    "loads",
    "read_mixed",
    "read_options",
    "strip_row",
    "syntax_errors",
]

MAX_FIELDS = 4
NOT_OBJECT = "not a JSON object of the declared types"
_ROW_RE = re.compile(r" in row (\d+)$")
_NULL = re.compile(b"null")
_CLASH = re.compile(r"Column\(/([^)/]*)\) changed from (?:number|string) to (?:number|string)(?: in row \d+)?$")
_DATE_LIKE = r"^\d{4}-\d\d-\d\d"

#: reads newline-terminated JSON text with the given fields declared strings; raises on refusal
Reader = Callable[[pa.Buffer, list[str]], pa.Table]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(text: str) -> Any:
    """``json.loads`` without the NaN/Infinity extensions (not JSON)."""
    return _DECODER.decode(text)


def failed_row(msg: str, n: int) -> int | None:
    """The row Arrow's JSON reader names in ``msg`` ("… in row 12"), if it is one of ``n``."""
    m = _ROW_RE.search(msg)
    return int(m.group(1)) if m and int(m.group(1)) < n else None


def strip_row(msg: str) -> str:
    return _ROW_RE.sub("", msg)


def read_options(size: int) -> pajson.ReadOptions:
    """Arrow's JSON reader over ``size`` bytes: one block (a batch is read whole, its rows named by
    their place in it), on the calling thread (demux parses a batch per thread already; the reader's
    own threads only add hand-offs, about a quarter more CPU)."""
    return pajson.ReadOptions(block_size=max(1 << 20, size + 1), use_threads=False)


def _syntax_check(text: pa.Buffer) -> int:
    """Rows of ``text`` read with no columns (JSON syntax only); raises where Arrow's reader refuses."""
    table = pajson.read_json(
        text,
        read_options=read_options(text.size),
        parse_options=pajson.ParseOptions(explicit_schema=pa.schema([]), unexpected_field_behavior="ignore"),
    )
    rows: int = table.num_rows
    return rows


def syntax_errors(recs: Records, read_one: Callable[[pa.Buffer], pa.Table]) -> list[tuple[int, str]] | None:
    """The records that are not JSON, with their reasons, found in one pass (see the module
    docstring); None when a refusal is not one line's own. ``read_one`` is the careful path's read
    (columns inferred), whose message for the line alone is its reason."""
    out: list[tuple[int, str]] = []
    pos = 0
    while pos < len(recs):
        try:
            if _syntax_check(recs.tail(pos).text) != len(recs) - pos:
                return None
            return out
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            msg = str(exc).split("\n")[0]
        row = failed_row(msg, len(recs) - pos)
        if row is None:
            return None
        i = pos + row
        line = recs.line(i)
        try:
            obj = loads(line)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            return None
        try:
            read_one(pa.py_buffer(line.encode() + b"\n"))
            return None
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if strip_row(str(exc).split("\n")[0]) != strip_row(msg):
                return None
        out.append((i, f"{NOT_OBJECT}: {strip_row(msg)}"))
        pos = i + 1
    return out


def clashing_field(msg: str) -> str | None:
    """The top-level field whose value changed between number and string, per Arrow's message."""
    m = _CLASH.search(msg.split("\n")[0])
    return m.group(1).replace("~1", "/").replace("~0", "~") if m else None


def joined(lines: pa.Array) -> pa.Buffer:
    """The lines as newline-terminated text, joined by Arrow (no Python string per line)."""
    if not len(lines):
        return pa.py_buffer(b"")
    lists = pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines.cast(pa.string()))
    text = pc.binary_join(lists, "\n")[0].as_buffer()
    return pa.py_buffer(text.to_pybytes() + b"\n")


@dataclass(frozen=True)
class Records:
    """JSON object texts, each with its newline (``nl``, large binary), lying end to end: the text Arrow's
    reader reads is one slice of the array's data, no copy."""

    nl: pa.Array

    @classmethod
    def of(cls, lines: pa.Array, text: pa.Buffer | None = None) -> Records:
        """``lines`` over ``text``, their newline-terminated join if known (else joined here)."""
        ends = pc.cumulative_sum(pc.add(pc.binary_length(lines).cast(pa.int64()), 1))
        size = ends[-1].as_py() if len(lines) else 0
        if text is None or text.size != size:
            text = joined(lines)
        offsets = pa.concat_arrays([pa.array([0], pa.int64()), ends])
        return cls(pa.Array.from_buffers(pa.large_binary(), len(lines), [None, offsets.buffers()[1], text]))

    def __len__(self) -> int:
        return len(self.nl)

    def line(self, i: int) -> str:
        """Record ``i`` as text, without its newline."""
        value: bytes = self.nl[i].as_py()
        return value[:-1].decode()

    def filter(self, mask: pa.Array) -> Records:
        return Records(self.nl.filter(mask))

    def tail(self, start: int) -> Records:
        return Records(self.nl.slice(start))

    @property
    def text(self) -> pa.Buffer:
        """The records as newline-terminated text (a slice of ``nl``'s data)."""
        return _text_of(self.nl)


@dataclass(frozen=True)
class Rows:
    """A table of records and where each record is in it: record i is row ``order[i]`` (None: row i)."""

    table: pa.Table
    order: pa.Array | None = None

    def take(self, at: pa.Array | None = None) -> pa.Table:
        """The records in order, or (``at``) the rows ``at`` names (null: a row of nulls)."""
        idx = at if self.order is None else self.order if at is None else self.order.take(at)
        return self.table if idx is None else self.table.take(idx)


def _text_of(nl: pa.Array) -> pa.Buffer:
    """The values of a large binary array whose values end in newlines, as one text (no copy)."""
    if not len(nl):
        return pa.py_buffer(b"")
    _, offsets_buf, data = nl.buffers()
    offsets = pa.Array.from_buffers(pa.int64(), len(nl) + 1, [None, offsets_buf], offset=nl.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return data.slice(start, end - start) if data is not None else pa.py_buffer(b"")


def _holds_string(nl: pa.Array, field: str) -> pa.Array:
    key = json.dumps(field, ensure_ascii=False)
    return pc.match_substring_regex(nl, re.escape(key) + r'\s*:\s*"')


def _first_valid(col: pa.ChunkedArray) -> int | None:
    if col.null_count == 0:
        return 0 if len(col) else None
    found = pc.indices_nonzero(pc.is_valid(col.combine_chunks()))
    return found[0].as_py() if len(found) else None


def _order(recs: Records, parts: list[tuple[pa.Array, pa.Table]]) -> list[str] | None:
    """The columns in order of first appearance in ``recs`` (see the module docstring)."""
    first: dict[str, int] = {}
    for rows, table in parts:
        for name in table.column_names:
            i = _first_valid(table[name])
            if i is None:
                return None
            row = rows[i].as_py()
            if name not in first or row < first[name]:
                first[name] = row
    by_row: dict[int, list[str]] = {}
    for name, row in first.items():
        by_row.setdefault(row, []).append(name)
    out: list[str] = []
    for row in sorted(by_row):
        names = by_row[row]
        if len(names) > 1:
            try:
                keys = list(loads(recs.line(row)))
            except (ValueError, RecursionError, TypeError):
                return None
            if not set(names) <= set(keys):
                return None
            names.sort(key=keys.index)
        out += names
    return out


def _grouped(recs: Records, mixed: list[str], read: Reader) -> Rows | str | None:
    """One attempt with ``mixed`` as the mixed fields: the table, or the name of another mixed field
    Arrow's reader found, or None."""
    codes = pa.array([0] * len(recs), pa.int32())
    for k, field in enumerate(mixed):
        codes = pc.add(codes, pc.multiply(_holds_string(recs.nl, field).cast(pa.int32()), 1 << k))
    parts: list[tuple[pa.Array, pa.Table]] = []
    for g in pc.unique(codes).to_pylist():
        mask = pc.equal(codes, g)
        sub = recs.nl.filter(mask)
        strings = [f for k, f in enumerate(mixed) if g >> k & 1]
        try:
            table = read(_text_of(sub), strings)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            other = clashing_field(str(exc))
            return other if other is not None and other not in mixed else None
        if table.num_rows != len(sub):
            return None
        for f in mixed:
            if f not in table.column_names:
                continue
            col = table[f]
            if f in strings:
                if pc.any(pc.match_substring_regex(col, _DATE_LIKE)).as_py():
                    return None
            elif col.type != pa.int64():
                return None
        parts.append((pc.indices_nonzero(mask), table))
    names = _order(recs, parts)
    if names is None:
        return None
    types: dict[str, pa.DataType] = {}
    for _, table in parts:
        for field in table.schema:
            t = pa.string() if field.name in mixed else field.type
            if types.setdefault(field.name, t) != t:
                return None
    tables = []
    for _, table in parts:
        cols = {}
        for name in names:
            if name not in table.column_names:
                cols[name] = pa.nulls(table.num_rows, types[name])
            else:
                cols[name] = table[name].cast(types[name]) if table[name].type != types[name] else table[name]
        tables.append(pa.table(cols))
    whole = pa.concat_tables(tables)
    rows = pa.concat_arrays([rows for rows, _ in parts])
    return Rows(whole, pc.sort_indices(rows))


def read_mixed(recs: Records, first: str, read: Reader) -> Rows | None:
    """``lines`` (JSON object texts, none empty) as one table, where ``first`` (and up to
    :data:`MAX_FIELDS` fields found on the way) mix numbers and strings; None when this way cannot
    prove its result is the line-by-line path's (see the module docstring)."""
    if not len(recs) or _NULL.search(memoryview(recs.text)):  # (one search of the text: ~10x Arrow's per value)
        return None
    mixed = [first]
    while len(mixed) <= MAX_FIELDS:
        got = _grouped(recs, mixed, read)
        if not isinstance(got, str):
            return got
        mixed.append(got)
    return None
