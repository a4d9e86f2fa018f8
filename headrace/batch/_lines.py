"""Splitting archived chunks into records, with each record's origin, as Arrow arrays.

Sans-io: chunk records in, a :class:`LineBatch` out. A record is one line (the chunk data split on
``\\n``; the newline is not part of the record). A chunk whose data does not end in a newline (an
unterminated last line the agent flushed after its timeout) ends a record anyway.

Fast path: the joined chunk data, viewed as one binary value, is split by ``pyarrow.compute.split_pattern``
(C++, ~10× faster than ``bytes.split`` + ``pa.array``); each line's chunk comes from where the chunk
ends fall among the line ends, all on arrays. Data with a ``\\r`` (CRLF line ends: the ``\\r`` ending a
line is dropped from the record) or of 2 GiB or more is split by ``bytes.split`` instead.
Lines that are not valid UTF-8 become errors with reason ``invalid_utf8``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["LineBatch", "join_lines", "split_records"]


@dataclass
class LineBatch:
    """Records of a run of chunks: ``lines[i]`` came from ``source[i]``/``stream[i]`` at byte ``offset[i]``."""

    data_type: str
    date: dt.date  # the archive day (UTC day the collector received the chunks)
    lines: pa.Array  # string, valid UTF-8
    source: pa.Array  # dictionary<int32, string>
    stream: pa.Array  # dictionary<int32, string>
    offset: pa.Array  # int64
    bad_utf8: pa.Table | None = None  # rows of the errors table: _source, _stream, _offset, raw, reason
    _text: bytes | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def text(self) -> bytes:
        """The lines joined with (and ended by) ``\\n``: input for Arrow's CSV and JSON readers."""
        if self._text is None:
            self._text = join_lines(self.lines)
        return self._text


def join_lines(lines: pa.Array) -> bytes:
    """``lines`` joined with (and ended by) ``\\n``, in C++ (no Python string per line)."""
    if len(lines) == 0:
        return b""
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
    buf = whole[0].as_buffer()
    return (buf.to_pybytes() if buf is not None else b"") + b"\n"


def _split_lines(buf: bytes) -> pa.Array:
    """The lines of ``buf`` (which ends with a newline) without their newlines, as one binary array.

    One ``split_pattern`` call over ``buf`` viewed as a single binary value (C++, no Python per line,
    ~2× faster than the CSV reader)."""
    whole = pa.Array.from_buffers(
        pa.binary(), 1, [None, pa.array([0, len(buf) - 1], pa.int32()).buffers()[1], pa.py_buffer(buf)]
    )
    lines: pa.Array = pc.split_pattern(whole, "\n").values
    return lines


def _dict_column(parent: pa.Array, per_chunk: list[str]) -> pa.Array:
    uniq: dict[str, int] = {}
    codes = pa.array([uniq.setdefault(v, len(uniq)) for v in per_chunk], pa.int32())
    return pa.DictionaryArray.from_arrays(pc.take(codes, parent), pa.array(list(uniq), pa.string()))


def join_multiline(batch: LineBatch, parent: pa.Array, start_pattern: str) -> LineBatch:
    """Join lines into multi-line records: a record starts at a line matching ``start_pattern`` (RE2)
    or at a chunk's first line (chunks end on record boundaries); other lines continue the record."""
    n = len(batch.lines)
    if n == 0:
        return batch
    new_chunk = pc.not_equal(parent.slice(1), parent.slice(0, n - 1))
    chunk_first = pa.concat_arrays([pa.array([True]), new_chunk])
    starts = pc.or_(pc.fill_null(pc.match_substring_regex(batch.lines, start_pattern), False), chunk_first)
    first = pc.indices_nonzero(starts).cast(pa.int32())
    offsets = pa.concat_arrays([first, pa.array([n], pa.int32())])
    records = pc.binary_join(pa.ListArray.from_arrays(offsets, batch.lines), "\n")
    return LineBatch(
        batch.data_type,
        batch.date,
        records,
        batch.source.take(first),
        batch.stream.take(first),
        batch.offset.take(first),
        batch.bad_utf8,
    )


def split_records(
    data_type: str, date: dt.date, chunks: list[dict[str, Any]], multiline: str | None = None
) -> LineBatch:
    """Split ``chunks`` (archive records of one data type) into a :class:`LineBatch`.

    With ``multiline`` (an RE2 pattern matching a record's first line), lines are joined into
    multi-line records (stack traces); ``batch.text`` then joins records with newlines inside them,
    which suits regex-based processors, not the CSV/JSON readers.
    """
    datas: list[bytes] = []
    for c in chunks:
        d: bytes = c["data"]
        if d and not d.endswith(b"\n"):
            d += b"\n"
        datas.append(d)
    buf = b"".join(datas)
    fast = b"\r" not in buf and len(buf) < 1 << 31
    if fast:
        lines = _split_lines(buf) if buf else pa.array([], pa.binary())
        lens = pc.add(pc.binary_length(lines).cast(pa.int64()), 1)
    else:
        parts = buf.split(b"\n")[:-1]
        lens = pa.array([len(p) + 1 for p in parts], pa.int64())
        if b"\r" in buf:  # CRLF line ends: the \r is not part of the record
            parts = [p[:-1] if p.endswith(b"\r") else p for p in parts]
        lines = pa.array(parts, pa.binary())
    total = len(lines)
    ends = pc.cumulative_sum(lens)
    pos_in_buf = pc.subtract(ends, lens)
    # every chunk's data ends with a newline, so chunk ends are line ends: the chunk (parent) of each
    # line is the number of chunk ends before the line's end
    starts = [0]
    for d in datas:
        starts.append(starts[-1] + len(d))
    nonempty = [i for i in range(len(datas)) if datas[i]]
    if total:
        chunk_end = pc.is_in(ends, value_set=pa.array(starts[1:], pa.int64()))
        after = pc.cumulative_sum(chunk_end.cast(pa.int32()))
        k = pc.subtract(after, chunk_end.cast(pa.int32()))  # ordinal of the non-empty chunk holding the line
        parent = pc.take(pa.array(nonempty, pa.int32()), k)
    else:
        parent = pa.array([], pa.int32())
    base = pa.array([c["seq_start"] - s for c, s in zip(chunks, starts, strict=False)], pa.int64())
    offset = pc.add(pos_in_buf, pc.take(base, parent))
    source = _dict_column(parent, [c["source"] for c in chunks])
    stream = _dict_column(parent, [c["stream"] for c in chunks])
    try:
        text_lines = lines.cast(pa.string())
        batch = LineBatch(data_type, date, text_lines, source, stream, offset, None, buf if fast else None)
        return join_multiline(batch, parent, multiline) if multiline else batch
    except pa.ArrowInvalid:
        pass
    ok = []
    for v in lines.to_pylist():
        try:
            v.decode()
            ok.append(True)
        except UnicodeDecodeError:
            ok.append(False)
    mask = pa.array(ok)
    bad = pc.invert(mask)
    bad_table = pa.table(
        {
            "_source": source.filter(bad),
            "_stream": stream.filter(bad),
            "_offset": offset.filter(bad),
            "raw": pa.array([v.decode(errors="replace") for v in lines.filter(bad).to_pylist()], pa.string()),
            "reason": pa.array(["invalid_utf8: the record is not valid UTF-8"] * (len(ok) - sum(ok)), pa.string()),
        }
    )
    batch = LineBatch(
        data_type,
        date,
        lines.filter(mask).cast(pa.string()),
        source.filter(mask),
        stream.filter(mask),
        offset.filter(mask),
        bad_table,
    )
    return join_multiline(batch, parent.filter(mask), multiline) if multiline else batch
