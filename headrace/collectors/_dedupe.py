"""The dedupe index: which byte ranges of each stream this collector has already written.

Resume-state contract: the index is saved (``sink_dir/index.json``, atomically) each time a sink file
is closed, *after* the file is fsynced and *before* it is moved into ``done/``, together with the
sequence number of that file (``through``). It therefore covers every file with a sequence number up
to ``through``. On start the collector loads it and folds in the ranges of every sink file with a
higher number (those are still in ``open/``: the recovered remains of a crash), so the index is again
exactly what the sink files hold. A missing or unreadable index is rebuilt from the files still in
``open/`` and ``done/``; what the archive builder already took away is then forgotten, which can only
cause a duplicate in the sink (the archive builder removes those), never a loss.

Theory of operation: per ``(source, stream)`` a sorted list of disjoint, non-adjacent ``[start, end)``
ranges. Normally a stream has one range ``[first offset, high-water mark)``; gaps appear only when an
agent fails over to another collector and back. A chunk is cut against the ranges: the parts already
covered are dropped, the rest is written. A chunk that is covered entirely is a duplicate (acked, not
written). A re-sent chunk that was cut differently (it starts before a range's end and ends after it)
loses only its overlapping bytes; range ends are ends of earlier chunks, hence record boundaries, so
every piece written is still record-aligned. Memory is bounded per stream (:data:`MAX_RANGES`): past
it the lowest range is forgotten, which again can only let an old re-send be written twice. A
stream that got no new bytes for a long time (``dedupe_forget_days``) is forgotten whole at the
next roll (:meth:`DedupeIndex.forget_before`), with the same consequence at worst.

Sans-io: values in, values out; :meth:`DedupeIndex.dumps` / :meth:`DedupeIndex.loads` give the bytes.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import dataclass

from .._chunk import Chunk

__all__ = ["MAX_RANGES", "Admission", "DedupeIndex", "IndexCorrupt"]

MAX_RANGES = 64
_FORMAT = 1


class IndexCorrupt(ValueError):
    """The saved index could not be read; the caller rebuilds it from the sink files."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What to write of one received chunk: ``pieces`` (empty when nothing is new)."""

    pieces: list[Chunk]
    duplicate: bool  # the whole chunk was written before (empty chunks are not duplicates)
    trimmed_bytes: int  # bytes dropped because they were written before


class DedupeIndex:
    """Written byte ranges per ``(source, stream)``."""

    def __init__(self, max_ranges: int = MAX_RANGES) -> None:
        self.max_ranges = max_ranges
        self._streams: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self._written_ms: dict[tuple[str, str], int] = {}  # when a stream last got new bytes

    def forget_before(self, ms: int) -> int:
        """Forget streams that got no new bytes since ``ms`` (a re-send of them is then written again)."""
        old = [k for k, t in self._written_ms.items() if t < ms]
        for k in old:
            del self._streams[k], self._written_ms[k]
        return len(old)

    def __len__(self) -> int:
        return len(self._streams)

    def ranges(self, source: str, stream: str) -> list[tuple[int, int]]:
        """The written ranges of one stream, sorted (a copy)."""
        return list(self._streams.get((source, stream), ()))

    def _uncovered(self, key: tuple[str, str], start: int, end: int) -> Iterator[tuple[int, int]]:
        pos = start
        for r_start, r_end in self._streams.get(key, ()):
            if r_end <= pos:
                continue
            if r_start >= end:
                break
            if r_start > pos:
                yield pos, r_start
            pos = max(pos, r_end)
            if pos >= end:
                return
        if pos < end:
            yield pos, end

    def add(self, source: str, stream: str, start: int, end: int, written_ms: int = 0) -> None:
        """Record that ``[start, end)`` of the stream is written (merging touching ranges), at ``written_ms``."""
        if end <= start:
            return
        key = (source, stream)
        self._written_ms[key] = max(written_ms, self._written_ms.get(key, 0))
        ranges = self._streams.setdefault(key, [])
        i = bisect.bisect_left(ranges, (start, start))
        # step back if the range before reaches ``start``
        if i > 0 and ranges[i - 1][1] >= start:
            i -= 1
        j = i
        new_start, new_end = start, end
        while j < len(ranges) and ranges[j][0] <= new_end:
            new_start = min(new_start, ranges[j][0])
            new_end = max(new_end, ranges[j][1])
            j += 1
        ranges[i:j] = [(new_start, new_end)]
        if len(ranges) > self.max_ranges:
            del ranges[: len(ranges) - self.max_ranges]

    def admit(self, chunk: Chunk, now_ms: int = 0) -> Admission:
        """Cut ``chunk`` against what is written, record the new parts as written, return them."""
        key = (chunk.source, chunk.stream)
        if chunk.seq_end <= chunk.seq_start:
            return Admission([], duplicate=False, trimmed_bytes=0)
        gaps = list(self._uncovered(key, chunk.seq_start, chunk.seq_end))
        if not gaps:
            return Admission([], duplicate=True, trimmed_bytes=len(chunk.data))
        if gaps == [(chunk.seq_start, chunk.seq_end)]:
            pieces = [chunk]
        else:
            base = chunk.seq_start
            pieces = [
                Chunk(
                    source=chunk.source,
                    stream=chunk.stream,
                    data_type=chunk.data_type,
                    seq_start=a,
                    seq_end=b,
                    data=chunk.data[a - base : b - base],
                    tags=chunk.tags,
                )
                for a, b in gaps
            ]
        self.add(chunk.source, chunk.stream, chunk.seq_start, chunk.seq_end, now_ms)
        new = sum(b - a for a, b in gaps)
        return Admission(pieces, duplicate=False, trimmed_bytes=len(chunk.data) - new)

    def dumps(self, through: int) -> bytes:
        """The saved form: JSON with the sequence number of the last sink file it covers."""
        streams = [
            [src, stream, [list(r) for r in ranges], self._written_ms.get((src, stream), 0)]
            for (src, stream), ranges in self._streams.items()
        ]
        return json.dumps({"format": _FORMAT, "through": through, "streams": streams}, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes, max_ranges: int = MAX_RANGES) -> tuple[DedupeIndex, int]:
        """Read what :meth:`dumps` wrote; return the index and ``through``. Raise :class:`IndexCorrupt`."""
        try:
            doc = json.loads(data)
            if doc.get("format") != _FORMAT:
                raise IndexCorrupt(f"unknown index format {doc.get('format')!r}")
            index = cls(max_ranges)
            for src, stream, ranges, written_ms in doc["streams"]:
                for start, end in ranges:
                    index.add(str(src), str(stream), int(start), int(end), int(written_ms))
            return index, int(doc["through"])
        except IndexCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IndexCorrupt(f"unreadable dedupe index: {exc!r}") from exc
