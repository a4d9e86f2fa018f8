"""Splitting archived chunks into records, with each record's origin, as Arrow arrays.

Sans-io: chunk records in, a :class:`LineBatch` out. A record is one line (the chunk data split on
``\\n``; the newline is not part of the record). A chunk whose data does not end in a newline (an
unterminated last line the agent flushed after its timeout) ends a record anyway.

Fast path: the joined chunk data is split by Arrow's multithreaded CSV reader run with one column and
no quoting (C++, ~10× faster than ``bytes.split`` + ``pa.array``). Data that the fast path cannot split
exactly (a ``\\r`` that the CSV reader would take for a line end, or a line containing the 0x1F
delimiter) is split by ``bytes.split`` instead; a ``\r`` ending a line (CRLF) is dropped from the record.
Lines that are not valid UTF-8 become errors with reason ``invalid_utf8``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["LineBatch", "split_records"]


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
            values = self.lines.to_pylist()
            self._text = ("\n".join(values) + "\n").encode() if values else b""
        return self._text


def _csv_split(buf: bytes, expected: int) -> pa.Array | None:
    if b"\r" in buf or b"\x1f" in buf:
        return None
    try:
        table = pacsv.read_csv(
            pa.py_buffer(buf),
            # serial: demux already runs batches on parallel threads
            read_options=pacsv.ReadOptions(column_names=["l"], block_size=4 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter="\x1f", quote_char=False, escape_char=False, double_quote=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(column_types={"l": pa.binary()}, strings_can_be_null=False),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != expected:
        return None
    col = table.column(0)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


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
    counts: list[int] = []
    for c in chunks:
        d: bytes = c["data"]
        if d and not d.endswith(b"\n"):
            d += b"\n"
        datas.append(d)
        counts.append(d.count(b"\n"))
    buf = b"".join(datas)
    total = sum(counts)
    lines = _csv_split(buf, total) if total else pa.array([], pa.binary())
    fast = lines is not None
    if lines is None:
        parts = buf.split(b"\n")[:-1]
        lens = pa.array([len(p) + 1 for p in parts], pa.int64())
        if b"\r" in buf:  # CRLF line ends: the \r is not part of the record
            parts = [p[:-1] if p.endswith(b"\r") else p for p in parts]
        lines = pa.array(parts, pa.binary())
    else:
        lens = pc.add(pc.binary_length(lines).cast(pa.int64()), 1)
    list_offsets = [0]
    starts = [0]
    for d, n in zip(datas, counts, strict=True):
        list_offsets.append(list_offsets[-1] + n)
        starts.append(starts[-1] + len(d))
    parent = pc.list_parent_indices(
        pa.LargeListArray.from_arrays(pa.array(list_offsets, pa.int64()), pa.nulls(total, pa.int8()))
    )
    pos_in_buf = pc.subtract(pc.cumulative_sum(lens), lens)
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
