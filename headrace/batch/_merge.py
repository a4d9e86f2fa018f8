"""Keeping each byte of a stream once: covered byte ranges, trimming re-sent chunks, sorting.

Sans-io: chunk records (dicts of ``headrace._chunk.SINK_SCHEMA``) in, chunk records out.

A chunk is the byte range ``[seq_start, seq_end)`` of one ``(source, stream)``. Chunks may arrive
twice (a re-send after a lost ack) or overlap (a re-send cut at different boundaries). Every cut this
module makes is at another chunk's start or end, and both are record boundaries of the same stream,
so a trimmed piece still begins and ends on a record boundary.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterable
from typing import Any

__all__ = ["Coverage", "Record", "sort_key", "trim_new"]

Record = dict[str, Any]
StreamKey = tuple[str, str]


def sort_key(r: Record) -> tuple[str, str, int]:
    """The archive order: ``(source, stream, seq_start)``."""
    return (r["source"], r["stream"], r["seq_start"])


class Coverage:
    """The byte ranges already archived, per ``(source, stream)``, as sorted disjoint intervals."""

    def __init__(self) -> None:
        self._starts: dict[StreamKey, list[int]] = {}
        self._ends: dict[StreamKey, list[int]] = {}

    def add(self, key: StreamKey, start: int, end: int) -> None:
        """Mark ``[start, end)`` covered, merging with touching or overlapping intervals."""
        if end <= start:
            return
        starts = self._starts.setdefault(key, [])
        ends = self._ends.setdefault(key, [])
        i = bisect.bisect_left(ends, start)  # first interval that ends at or after start
        j = bisect.bisect_right(starts, end)  # intervals before j start at or before end
        if i < j:
            start = min(start, starts[i])
            end = max(end, ends[j - 1])
        starts[i:j] = [start]
        ends[i:j] = [end]

    def gaps(self, key: StreamKey, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not covered yet."""
        starts = self._starts.get(key, [])
        ends = self._ends.get(key, [])
        out: list[tuple[int, int]] = []
        pos = start
        i = bisect.bisect_right(ends, start)  # first interval ending after start
        while pos < end and i < len(starts):
            if starts[i] >= end:
                break
            if starts[i] > pos:
                out.append((pos, starts[i]))
            pos = max(pos, ends[i])
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def update(self, other: Coverage) -> None:
        for key, starts in other._starts.items():
            for s, e in zip(starts, other._ends[key], strict=True):
                self.add(key, s, e)

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"source": k[0], "stream": k[1], "ranges": [[s, e] for s, e in zip(v, self._ends[k], strict=True)]}
            for k, v in sorted(self._starts.items())
        ]

    @classmethod
    def from_json(cls, items: Iterable[dict[str, Any]]) -> Coverage:
        cov = cls()
        for item in items:
            for s, e in item["ranges"]:
                cov.add((item["source"], item["stream"]), int(s), int(e))
        return cov


def _piece(r: Record, start: int, end: int) -> Record:
    if start == r["seq_start"] and end == r["seq_end"]:
        return r
    data = r["data"][start - r["seq_start"] : end - r["seq_start"]]
    return {**r, "seq_start": start, "seq_end": end, "data": data, "crc": zlib.crc32(data)}


def trim_new(records: Iterable[Record], covered: Coverage) -> list[Record]:
    """The bytes of ``records`` that ``covered`` does not hold yet, each kept once, in archive order.

    ``covered`` is updated with what is returned. Among overlapping new chunks the one that sorts first
    (lowest ``seq_start``, then longest) wins; later ones keep only their uncovered remainder.
    """
    out: list[Record] = []
    for r in sorted(records, key=lambda r: (r["source"], r["stream"], r["seq_start"], -r["seq_end"])):
        key = (r["source"], r["stream"])
        for start, end in covered.gaps(key, r["seq_start"], r["seq_end"]):
            out.append(_piece(r, start, end))
            covered.add(key, start, end)
    return out
