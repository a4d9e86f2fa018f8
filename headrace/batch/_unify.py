"""The one rule for a field that has different types in different parts (lines of a batch, batches
of a part, files of a partition): how its parts become one column.

* parts of one type (nulls aside) keep it;
* types Arrow can promote to one (int64 and double → double, struct fields merged, list items
  promoted) take the promoted type **when no value changes**: an integer beyond ±2**53 (where
  not every integer is a double) keeps the field from becoming a double, the rule below applies;
* anything else (number and string, bool and number, object and string, …) becomes a string
  column holding each value's JSON text: strings as they are, numbers and booleans as JSON writes
  them (``1``, ``1.5``, ``true``), objects and arrays as compact JSON (a struct's missing field
  shows as ``null``, as it reads in a struct column).

Used by the JSON processor within a batch and by demux (across batches) and load (across files).
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["chunks", "json_text", "json_value_text", "unify_arrays", "unify_tables"]

Column: TypeAlias = pa.Array | pa.ChunkedArray


def json_value_text(value: Any) -> str:
    """One JSON value (as ``json.loads`` gives it) as the text its string column holds."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text_chunk(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _text_chunk(arr.dictionary_decode())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_nested(t):
        return pa.array([None if v is None else json_value_text(v) for v in arr.to_pylist()], pa.string())
    out = arr.cast(pa.string())
    if pa.types.is_floating(t) and len(arr) and not pc.all(pc.is_finite(arr), skip_nulls=True).as_py():
        for arrow, python in (("inf", "Infinity"), ("-inf", "-Infinity"), ("nan", "NaN")):
            out = pc.replace_substring_regex(out, f"^{arrow}$", python)  # what json.loads reads back
    return out


def json_text(col: Column) -> Column:
    """Each value of ``col`` as its JSON text (strings unchanged), a string column of the same shape."""
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([_text_chunk(c) for c in col.chunks], pa.string())
    return _text_chunk(col)


def _promoted(types: list[pa.DataType]) -> pa.DataType | None:
    try:
        schemas = [pa.schema([pa.field("f", t)]) for t in types]
        return pa.unify_schemas(schemas, promote_options="permissive").field("f").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _cast(parts: list[Column], target: pa.DataType) -> list[Column] | None:
    """The parts cast to ``target``, or None when a value would change: Arrow's safe cast refuses
    an integer beyond ±2**53 to a double (the range where every integer is exact), an overflow."""
    try:
        return [p if p.type == target else p.cast(target) for p in parts]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def unify_arrays(parts: list[Column]) -> tuple[pa.DataType, list[Column]]:
    """The parts of one field, converted to their common type by the rule above: (type, parts)."""
    types = list(dict.fromkeys(p.type for p in parts if not pa.types.is_null(p.type)))
    if not types:
        return pa.null(), parts
    target = types[0] if len(types) == 1 else _promoted(types)
    cast = _cast(parts, target) if target is not None else None
    if target is not None and cast is not None:
        return target, cast
    return pa.string(), [json_text(p) for p in parts]


def chunks(col: Column) -> list[pa.Array]:
    return col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def unify_tables(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose columns may differ: a missing column is null, types follow the rule."""
    if not tables:
        return pa.table({})
    first = tables[0].schema
    if all(t.schema.equals(first, check_metadata=False) for t in tables[1:]):
        return pa.concat_tables(tables)
    names = list(dict.fromkeys(n for t in tables for n in t.column_names))
    cols = {}
    for name in names:
        parts: list[Column] = [t[name] if name in t.column_names else pa.nulls(t.num_rows) for t in tables]
        target, same = unify_arrays(parts)
        cols[name] = pa.chunked_array([c for p in same for c in chunks(p)], target)
    return pa.table(cols)
