"""Server-side subscriber filters (sans-io): by source table, by key-hash partition, by key range.

Syntax of the ``filter`` parameter (one of):

* ``mod:N:i`` — Databus's mod partition: events whose key's CRC-32 mod N is i (0 ≤ i < N). The N
  partitions are disjoint and together are the whole stream.
* ``range:LO:HI`` — events whose first key column lies in ``[LO, HI)``; either bound may be empty.
  Integer keys compare as integers when both bounds are integers, anything else as text.

``sources`` is a separate parameter (a comma-separated list of table names).

A truncate event (op ``t``, key ``[]``) concerns every row of its table, so the key filters pass it
to every partition; only ``sources`` can leave it out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ._event import EventHeader, Op, key_partition

__all__ = ["Filter", "parse_filter"]


@dataclass(frozen=True, slots=True)
class Filter:
    """What a subscriber wants; ``None`` fields match everything."""

    sources: frozenset[str] | None = None
    mod: tuple[int, int] | None = None
    range: tuple[str, str] | None = None

    @property
    def per_event(self) -> bool:
        """True when events must be examined one by one (not just their window's table set)."""
        return self.mod is not None or self.range is not None

    def wants_tables(self, tables: frozenset[str]) -> bool | None:
        """True: the whole window matches; False: none of it; None: examine each event."""
        if self.sources is not None:
            if tables.isdisjoint(self.sources):
                return False
            if not tables <= self.sources:
                return None
        return None if self.per_event else True

    def matches(self, h: EventHeader) -> bool:
        if self.sources is not None and h.source not in self.sources:
            return False
        if h.op is Op.TRUNCATE:  # every partition holds rows of the table
            return True
        if self.mod is not None and key_partition(h.key, self.mod[0]) != self.mod[1]:
            return False
        return not (self.range is not None and not _in_range(h.key, *self.range))

    def describe(self) -> str:
        parts = []
        if self.sources is not None:
            parts.append("sources=" + ",".join(sorted(self.sources)))
        if self.mod is not None:
            parts.append(f"mod:{self.mod[0]}:{self.mod[1]}")
        if self.range is not None:
            parts.append(f"range:{self.range[0]}:{self.range[1]}")
        return " ".join(parts) or "all"


_INT_RE = re.compile(r"-?[0-9]{1,40}")


def _as_int(text: str) -> int | None:
    """``text`` as an int if it is one written in ASCII digits (int() would take " 5", "1_0", "١٢")."""
    return int(text) if _INT_RE.fullmatch(text) else None


def _in_range(key: bytes, lo: str, hi: str) -> bool:
    values: Any = json.loads(key)
    if not values:
        return False
    first = values[0]
    lo_i, hi_i = _as_int(lo), _as_int(hi)
    if (
        isinstance(first, int)
        and not isinstance(first, bool)
        and (lo == "" or lo_i is not None)
        and (hi == "" or hi_i is not None)
    ):
        return (lo_i is None or first >= lo_i) and (hi_i is None or first < hi_i)
    text = first if isinstance(first, str) else json.dumps(first)
    return (lo == "" or text >= lo) and (hi == "" or text < hi)


def parse_filter(text: str | None, sources: frozenset[str] | None = None) -> Filter:
    """Parse the ``filter`` parameter; raises :class:`InvalidInput` (``bad_filter``) saying what is wrong."""
    if text is None or text == "":
        return Filter(sources=sources)
    kind, _, rest = text.partition(":")
    if kind == "mod":
        n_s, sep, i_s = rest.partition(":")
        n, i = _as_int(n_s), _as_int(i_s)
        if not sep or n is None or i is None or n < 1 or not 0 <= i < n:
            raise InvalidInput("bad_filter", f"{text!r}: use mod:N:i with integers N ≥ 1 and 0 ≤ i < N (e.g. mod:4:1)")
        return Filter(sources=sources, mod=(n, i))
    if kind == "range":
        lo, sep, hi = rest.partition(":")
        if not sep:
            raise InvalidInput("bad_filter", f"{text!r}: use range:LO:HI (either bound may be empty)")
        return Filter(sources=sources, range=(lo, hi))
    raise InvalidInput("bad_filter", f"{text!r}: unknown filter kind {kind!r} (use mod:N:i or range:LO:HI)")
