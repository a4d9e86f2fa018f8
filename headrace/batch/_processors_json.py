"""The ``json`` processor: one JSON object per record, columns inferred (Arrow's JSON reader) or declared.

The common case is one read of the batch's text by Arrow's C++ JSON reader. When the reader refuses
the batch, it names the row it stopped at:

* a field whose type changed from earlier lines (``Column(/order) changed from number to string``)
  is not an error: the lines before it are one part, the line starts the next part, and the parts
  are joined by the one rule of :mod:`._unify` (a field of mixed types becomes a string column of
  JSON texts), the same rule that joins batches;
* any other refusal (not JSON, a declared field of another type) is that line's alone: the lines
  before it are read, the line is checked by Python's ``json`` module (a valid object Arrow cannot
  take — a duplicate key, a number beyond a double's range, a list of mixed types — becomes a row
  built by :func:`objects_table`), else it is an error, and the rest is read the same way.

Arrow's reader also turns an integer into a double without a word (beyond int64, or in a column
that also has fractions), losing digits beyond 2**53. So a part whose inferred double columns hold
a value of 2**53 or more, and whose text has an integer of 16 digits or more, is rebuilt from
Python's reading of its lines, where such an integer makes its field a string column holding the
exact digits.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic import Field

from ._json_bulk import (
    NOT_OBJECT,
    Records,
    Rows,
    clashing_field,
    failed_row,
    loads,
    read_mixed,
    read_options,
    syntax_errors,
)
from ._json_bulk import joined as _joined
from ._json_bulk import strip_row as _strip_row
from ._lines import LineBatch
from ._processors import TS, FieldType, Options, Parsed
from ._unify import Column, chunks, json_value_text, unify_arrays, unify_tables

__all__ = ["JsonProcessor", "objects_table"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TS,
    "date": pa.date32(),
}
_CLASHES = 8  # type changes in a batch after which its other lines are read by Python (see _python)
_DATE_LIKE = r"^\d{4}-\d\d-\d\d"  # strings the reader may infer as timestamps start so
_EXACT = 2**53  # integers up to this are exact in a double
# an integer value of 16 digits or more (2**53 has 16) between JSON delimiters; a string that looks
# so only costs the careful path
_BIG_INT = r"[:\[,]\s*-?\d{16,}\s*[,}\]]"
_INT64 = (-(2**63), 2**63 - 1)
_NOT_BRACED = f"{NOT_OBJECT}: the record is not enclosed in {{ }}"


class _JsonOptions(Options):
    fields: dict[str, FieldType] = Field(default_factory=dict)  # declared types; others are inferred
    other_fields: Literal["infer", "ignore"] = "infer"


_KINDS = {bool: "bool", int: "int", float: "float", str: "str", dict: "object", list: "array"}


def _same(a: Any, b: Any) -> bool:
    """Arrow's value ``a`` equals the JSON value ``b`` (a struct's missing field reads as null)."""
    if isinstance(b, dict):
        return (
            isinstance(a, dict)
            and all(k in a or v is None for k, v in b.items())
            and all(_same(v, b.get(k)) for k, v in a.items())
        )
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(b, bool) or isinstance(a, bool):
        return type(a) is type(b) and a == b
    return bool(a == b) if b is not None else a is None


def _valid(table: pa.Table) -> pa.Table:
    """``table`` if its arrays are well-formed (structure only: cheap). pyarrow 26's reader builds a
    broken list array from a list starting with null then a value (``[null, 1]``), which crashes
    what reads it later: raising here makes it a refusal like any other."""
    table.validate()
    return table


def _encodable(obj: Any) -> bool:
    """``obj`` has no lone surrogate (which UTF-8 cannot hold)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _has_big_int(v: Any) -> bool:
    if isinstance(v, dict):
        return any(_has_big_int(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_big_int(x) for x in v)
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) > _EXACT


def _read_values(values: list[Any] | pa.Array) -> pa.ChunkedArray | None:
    """Values of one kind typed by Arrow's JSON reader (as in a batch: ISO strings become
    timestamps, objects structs), or None when the reader refuses them together."""
    if isinstance(values, pa.Array):  # strings needing no escapes: the lines are built by Arrow
        lines = pc.binary_join_element_wise('{"v":"', values, '"}', "")
        text = _joined(lines).to_pybytes()
    else:
        text = "".join(['{"v":' + json.dumps(v, ensure_ascii=False) + "}\n" for v in values]).encode()
    try:
        col = _valid(pajson.read_json(pa.py_buffer(text), read_options=read_options(len(text))))["v"]
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError):
        return None
    return col if len(col) == len(values) else None


def _group(kind: str, values: list[Any]) -> Column:
    """The values of one kind as one Arrow array (JSON texts where no exact Arrow type holds them)."""
    if kind == "int" and all(_INT64[0] <= v <= _INT64[1] for v in values):
        return pa.array(values, pa.int64())
    if kind in ("bool", "float"):
        return pa.array(values, pa.bool_() if kind == "bool" else pa.float64())
    if kind == "str":
        arr = pa.array(values, pa.string())
        if not pc.all(pc.match_substring_regex(arr, _DATE_LIKE)).as_py():
            return arr  # not all ISO dates: the reader would not make them timestamps either
        if not pc.any(pc.match_substring_regex(arr, r'["\\\x00-\x1f]')).as_py():
            col = _read_values(arr)
            return arr if col is None else col
    if kind in ("str", "object", "array"):
        col = _read_values(values)
        if col is not None and not (_maybe_inexact(col) and any(_has_big_int(v) for v in values)):
            return col
        try:  # Arrow's inference from Python values, where its reader refuses them (see _valid)
            arr = pa.array(values)
            if all(_same(a, b) for a, b in zip(arr.to_pylist(), values, strict=True)):
                return arr
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            pass
    return pa.array([json_value_text(v) for v in values], pa.string())


def _column(values: list[Any]) -> Column:
    """One field's values (None: null or absent) as a column, by the rule of :mod:`._unify`."""
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None:
            groups.setdefault(_KINDS[type(v)], []).append(i)
    if not groups:
        return pa.nulls(len(values))
    if len(groups) == 1:
        kind, pos = next(iter(groups.items()))
        if len(pos) == len(values):
            return _group(kind, values)
    parts: list[Column] = [_group(k, [values[i] for i in pos]) for k, pos in groups.items()]
    target, same = unify_arrays(parts)
    if pa.types.is_string(target) and not all(pa.types.is_string(p.type) for p in parts):
        # mixed kinds: the JSON text of each value as it was written (a timestamp Arrow recognised,
        # a double it rounded, would not give it back)
        return pa.array([None if v is None else json_value_text(v) for v in values], pa.string())
    present = [i for pos in groups.values() for i in pos]
    where: list[int | None] = [None] * len(values)
    for n, i in enumerate(present):
        where[i] = n
    joined = pa.chunked_array([c for p in same for c in chunks(p)], target)
    return joined.take(pa.array(where, pa.int64()))


def objects_table(objects: list[dict[str, Any]]) -> pa.Table:
    """Rows from JSON objects as ``json.loads`` gives them: a column per key (in order of first
    appearance), typed as Arrow's reader would, by the rule of :mod:`._unify` where values differ."""
    names = list(dict.fromkeys(k for o in objects for k in o))
    if not names:
        return pa.table({"_": pa.nulls(len(objects))}).drop_columns(["_"])
    return pa.table({n: _column([o.get(n) for o in objects]) for n in names})


_CLASH_RE = re.compile(r"Column\(/([^)/]*)[^)]*\) changed from \w+ to \w+")


def _double_leaves(col: Column) -> list[pa.Array]:
    """The double arrays inside ``col`` (itself, struct fields, list items)."""
    out: list[pa.Array] = []
    for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
        t = chunk.type
        if pa.types.is_floating(t):
            out.append(chunk)
        elif pa.types.is_struct(t):
            for i in range(t.num_fields):
                out += _double_leaves(chunk.field(i))
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            out += _double_leaves(chunk.flatten())
    return out


def _maybe_inexact(col: Column) -> bool:
    """A double in ``col`` is 2**53 or more: it may be an integer the reader rounded."""
    for leaf in _double_leaves(col):
        top = pc.max(pc.abs(leaf)).as_py() if len(leaf) else None
        if top is not None and top >= _EXACT:
            return True
    return False


@dataclass
class _Slow:
    """A batch read part by part: the lines, their text, where each starts, and what came out."""

    lines: pa.Array
    idx: pa.Array
    buf: pa.Buffer
    starts: list[int]
    out: list[tuple[pa.Array, pa.Table]]
    errs: list[tuple[int, str]]
    clashes: int = 0


class JsonProcessor:
    """One JSON object per record; columns inferred across records (Arrow's JSON reader) or declared."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.opts = _JsonOptions.model_validate(options)
        self.schema = (
            pa.schema([(n, _ARROW_TYPES[t]) for n, t in self.opts.fields.items()]) if self.opts.fields else None
        )
        self.declared = set(self.opts.fields)

    def _json(self, text: pa.Buffer, other_fields: str | None = None) -> pa.Table:
        other = other_fields or self.opts.other_fields
        return _valid(
            pajson.read_json(
                text,
                read_options=read_options(text.size),
                parse_options=pajson.ParseOptions(
                    explicit_schema=self.schema,
                    unexpected_field_behavior="infer" if other == "infer" else "ignore",
                ),
            )
        )

    def _suspect(self, table: pa.Table, lines: pa.Array) -> bool:
        """An inferred double column may hold an integer the reader rounded (see the module docstring):
        it holds a value of 2**53 or more and some line has an integer of 16 digits or more."""
        return any(
            _maybe_inexact(table.column(i)) for i, f in enumerate(table.schema) if f.name not in self.declared
        ) and bool(pc.any(pc.match_substring_regex(lines, _BIG_INT)).as_py())

    def _exact(self, table: pa.Table, s: _Slow, lo: int, hi: int) -> pa.Table:
        """``table`` (lines lo..hi), its inferred columns rebuilt from Python's reading if suspect."""
        if not self._suspect(table, s.lines.slice(lo, hi - lo)):
            return table
        try:
            objs = [loads(line) for line in s.lines.slice(lo, hi - lo).to_pylist()]
        except ValueError:
            return table
        return self._with_declared(table, objs)

    def _with_declared(self, declared: pa.Table, objs: list[dict[str, Any]]) -> pa.Table:
        """The declared columns of ``declared`` and the other fields of ``objs`` (when inferred)."""
        cols = {n: declared[n] for n in declared.column_names if n in self.declared}
        if self.opts.other_fields == "infer":
            rest = objects_table([{k: v for k, v in o.items() if k not in self.declared} for o in objs])
            cols.update({n: rest[n] for n in rest.column_names})
        if not cols:
            return objects_table([{} for _ in objs])
        return pa.table(cols)

    def _text(self, s: _Slow, lo: int, hi: int) -> pa.Buffer:
        return s.buf.slice(s.starts[lo], s.starts[hi] - s.starts[lo])

    def _one(self, s: _Slow, i: int, msg: str) -> None:
        """Line ``i``, which Arrow's reader refused with ``msg``: a row if it is a valid JSON object
        (with its declared fields of the declared types), else an error."""
        reason = f"{NOT_OBJECT}: {_strip_row(msg)}"
        try:
            obj = loads(s.lines[i].as_py())
        except (ValueError, RecursionError):
            obj = None
        if not isinstance(obj, dict):
            s.errs.append((s.idx[i].as_py(), reason))
            return
        declared = pa.table({})
        if self.schema is not None:
            try:
                declared = self._json(self._text(s, i, i + 1), "ignore")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                s.errs.append((s.idx[i].as_py(), reason))
                return
        try:
            table = self._with_declared(declared, [obj])
        except UnicodeEncodeError:  # a lone surrogate (``"\\ud800"``) is valid JSON but not text
            s.errs.append((s.idx[i].as_py(), reason))
            return
        s.out.append((s.idx[i : i + 1], table))

    def _try(self, s: _Slow, lo: int, hi: int) -> bool:
        """Read lines lo..hi as one part; False when Arrow refuses them."""
        if lo == hi:
            return True
        try:
            table = self._json(self._text(s, lo, hi))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return False
        if table.num_rows != hi - lo:
            return False
        s.out.append((s.idx[lo:hi], self._exact(table, s, lo, hi)))
        return True

    def _python(self, s: _Slow, lo: int, hi: int) -> None:
        """Lines lo..hi read by Python's ``json`` and typed by :func:`objects_table` (a batch whose
        fields keep changing type would otherwise cost two reads per change); a line Python refuses
        goes to Arrow's reader alone (it decides, as for any line)."""
        objs, rows = [], []
        for i, line in enumerate(s.lines.slice(lo, hi - lo).to_pylist(), lo):
            try:
                obj = loads(line)
            except (ValueError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                objs.append(obj)
                rows.append(i)
            else:
                self._read(s, i, i + 1)
        try:
            table = objects_table(objs)
        except UnicodeEncodeError:  # a lone surrogate (``"\\ud800"``): not text; Arrow's reader says why
            keep = [_encodable(o) for o in objs]
            for ok, i in zip(keep, rows, strict=True):
                if not ok:
                    self._read(s, i, i + 1)
            objs = [o for o, ok in zip(objs, keep, strict=True) if ok]
            rows = [i for i, ok in zip(rows, keep, strict=True) if ok]
            table = objects_table(objs)
        if objs:
            s.out.append((s.idx.take(pa.array(rows, pa.int64())), table))

    def _clash(self, msg: str) -> bool:
        """``msg`` says an inferred (not declared) field changed type."""
        m = _CLASH_RE.search(msg)
        return m is not None and m.group(1).replace("~1", "/").replace("~0", "~") not in self.declared

    def _read(self, s: _Slow, lo: int, hi: int) -> None:
        """Read lines lo..hi into parts (see the module docstring); when the row Arrow names does not
        explain its refusal (the lines before it fail too), bisect."""
        while lo < hi:
            try:
                table = self._json(self._text(s, lo, hi))
                if table.num_rows != hi - lo:
                    raise pa.ArrowInvalid(f"{table.num_rows} rows from {hi - lo} records")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                msg = str(exc).split("\n")[0]
                if hi - lo == 1:
                    self._one(s, lo, msg)
                    return
                row = failed_row(msg, hi - lo)
                if row is None or not self._try(s, lo, lo + row):
                    mid = lo + (hi - lo) // 2
                    self._read(s, lo, mid)
                    lo = mid
                elif row > 0 and self._clash(msg):
                    lo += row  # the line whose type changed starts the next part
                    s.clashes += 1
                    if s.clashes >= _CLASHES and self.schema is None:
                        self._python(s, lo, hi)
                        return
                else:
                    self._one(s, lo + row, msg)
                    lo += row + 1
                continue
            s.out.append((s.idx[lo:hi], self._exact(table, s, lo, hi)))
            return

    def _as_strings(self, text: pa.Buffer, strings: list[str]) -> pa.Table:
        """``text`` read with ``strings`` declared string fields, the others inferred (no declared schema)."""
        schema = pa.schema([(f, pa.string()) for f in strings]) if strings else None
        return _valid(
            pajson.read_json(
                text,
                read_options=read_options(text.size),
                parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
            )
        )

    def _read_all(self, recs: Records) -> Rows | None:
        """The records read in one go, or in a few reads grouped by the fields that mix numbers and
        strings (:func:`._json_bulk.read_mixed`); None when the careful path must read them."""
        try:
            rows = Rows(self._json(recs.text))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            field = clashing_field(str(exc)) if self.schema is None else None
            got = read_mixed(recs, field, self._as_strings) if field is not None else None
            if got is None:
                return None
            rows = got
        if rows.table.num_rows != len(recs) or self._suspect(rows.table, recs.nl):
            return None
        return rows

    def _bulk(self, recs: Records) -> tuple[Rows, pa.Array | None, list[tuple[int, str]]] | None:
        """The records read in bulk: (the rows of those read, which were (None: all), the records
        that are not JSON with their reasons (:func:`._json_bulk.syntax_errors`)); None when the
        careful path must read them."""
        rows = self._read_all(recs)
        if rows is not None:
            return rows, None, []
        if self.schema is not None:
            return None
        bad = syntax_errors(recs, self._json)
        if not bad or len(bad) == len(recs):
            return None
        flags = [True] * len(recs)
        for i, _ in bad:
            flags[i] = False
        ok = pa.array(flags, pa.bool_())
        rows = self._read_all(recs.filter(ok))
        return None if rows is None else (rows, ok, bad)

    def parse(self, batch: LineBatch) -> Parsed:
        n = len(batch)
        text = pa.py_buffer(batch.text) if isinstance(batch.text, bytes) else batch.text
        got = None
        every = pc.all(pc.and_(pc.starts_with(batch.lines, "{"), pc.ends_with(batch.lines, "}"))).as_py()
        if every is not False:  # the common case: every record is {…} (none empty): the batch's text, read
            got = self._bulk(Records.of(batch.lines, text))
            if got is not None and got[1] is None:
                return Parsed.ok(got[0].take())
        trimmed = pc.utf8_trim_whitespace(batch.lines)
        empty = pc.equal(trimmed, "")
        # a record that is not {…} cannot be an object: it is an error without a read (truncated lines,
        # stray text), so the batch's other records still go through in one read
        braced = pc.and_(pc.starts_with(trimmed, "{"), pc.ends_with(trimmed, "}"))
        keep = pc.and_(pc.invert(empty), braced)
        not_object = pc.and_(pc.invert(empty), pc.invert(braced))
        lines = batch.lines.filter(keep)
        if every is False and len(lines):
            recs = Records.of(batch.lines, text)
            got = self._bulk(recs if len(lines) == n else recs.filter(keep))
        if got is not None:
            rows, ok, bad = got
            read = keep if ok is None else pc.replace_with_mask(keep, keep, ok)
            # batch row -> row of table (null: not read)
            at = pc.if_else(read, pc.subtract(pc.cumulative_sum(read.cast(pa.int64())), 1), None)
            kept = pc.indices_nonzero(keep)
            errs = [(kept[i].as_py(), reason) for i, reason in bad]
            return Parsed(rows.take(at), self._reasons(n, errs, empty, not_object))
        lines = lines.cast(pa.string())
        starts = [0, *pc.cumulative_sum(pc.add(pc.binary_length(lines), 1)).to_pylist()] if len(lines) else [0]
        s = _Slow(lines, pc.indices_nonzero(keep).cast(pa.int64()), _joined(lines), starts, [], [])
        self._read(s, 0, len(lines))
        if s.out:
            parsed = unify_tables([t for _, t in s.out])
            where: list[int | None] = [None] * n  # batch row -> parsed row (None: not parsed)
            for pos, row in enumerate(pa.concat_arrays([i for i, _ in s.out]).to_pylist()):
                where[row] = pos
            full = parsed.take(pa.array(where, pa.int64()))
        else:
            full = pa.table({})
        return Parsed(full, self._reasons(n, s.errs, empty, not_object))

    @staticmethod
    def _reasons(n: int, errs: list[tuple[int, str]], empty: pa.Array, not_object: pa.Array) -> pa.Array:
        """Each record's error reason (null where it parsed)."""
        if not errs:  # on arrays: the usual case
            reason = pc.if_else(empty, pa.scalar("empty record"), pa.scalar(None, pa.string()))
            return pc.if_else(not_object, pa.scalar(_NOT_BRACED), reason)
        reasons: list[str | None] = [None] * n
        for row, msg in errs:
            reasons[row] = msg
        for row in pc.indices_nonzero(empty).to_pylist():
            reasons[row] = "empty record"
        for row in pc.indices_nonzero(not_object).to_pylist():
            reasons[row] = _NOT_BRACED
        return pa.array(reasons, pa.string())
