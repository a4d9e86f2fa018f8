"""Per-row suffixes of a string array on whole arrays: ``values[i][n[i]:]`` (bytes), without Python per row.

Arrow's slicing kernels take one start for every row; this takes one per row. Each row is seen as
two pieces, the cut-off head and the kept tail: their offsets interleaved make a string array of
2n pieces over the same bytes (no copy), and ``take`` of the odd pieces copies the tails (C++; a
list view's ``flatten`` does the same ~20× slower). Regex captures of long text are slow (RE2
tracks submatches byte by byte), so processors capture the short fields of a line and take its
long tail (a message) with :func:`drop_prefix`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["drop_prefix"]

_I32 = pa.int32()


def _arange(n: int) -> pa.Array:
    return pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, _I32), n)), pa.scalar(1, _I32))


def drop_prefix(values: pa.Array, n: pa.Array) -> pa.Array:
    """``values[i]`` without its first ``n[i]`` bytes (empty where ``n[i]`` is longer; null where
    ``values[i]`` or ``n[i]`` is null; a negative ``n[i]`` counts as 0). ``values`` is a string array
    (offsets below 2 GiB); every cut must fall on a character boundary (the caller counts the bytes
    of whole characters)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():
        raise TypeError(f"drop_prefix: expected a string array, got {values.type}")
    length = len(values)
    if length == 0:
        return pa.array([], pa.string())
    offsets = pa.Array.from_buffers(_I32, length + 1, [None, values.buffers()[1]], offset=values.offset)
    starts, ends = offsets.slice(0, length), offsets.slice(1)
    zero = pa.scalar(0, _I32)
    n = pc.cast(n, _I32)
    # nulls are skipped by the element-wise min and max: where n is null, cut is 0 (and the row null below)
    cut = pc.min_element_wise(pc.max_element_wise(n, zero), pc.subtract(ends, starts))
    # offsets of the 2n pieces: off[0], off[0]+cut[0], off[1], off[1]+cut[1], ..., off[n]
    both = pa.concat_arrays([offsets, pc.add(starts, pc.if_else(pc.is_valid(n), cut, zero))])
    k = _arange(2 * length + 1)
    half = pc.shift_right(k, pa.scalar(1, _I32))
    odd = pc.equal(pc.bit_wise_and(k, pa.scalar(1, _I32)), pa.scalar(1, _I32))
    interleaved = pc.take(both, pc.if_else(odd, pc.add(half, pa.scalar(length + 1, _I32)), half))
    pieces = pa.Array.from_buffers(
        pa.string(), 2 * length, [None, interleaved.buffers()[1], values.buffers()[2]], offset=interleaved.offset
    )
    tails = pc.add(pc.multiply(_arange(length), pa.scalar(2, _I32)), pa.scalar(1, _I32))
    valid = pc.and_(pc.is_valid(values), pc.is_valid(n))
    if valid.false_count:
        tails = pc.if_else(valid, tails, pa.scalar(None, _I32))
    out: pa.Array = pieces.take(tails)
    return out
