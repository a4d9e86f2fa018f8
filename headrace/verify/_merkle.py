"""The comparison: a Merkle descent over key-hash buckets, on two sides that aggregate for themselves (sans-io).

Every row has a *key hash* (MD5 hex of its key's canonical text) and a *row hash* (MD5 hex of the
canonical text of every compared column). A bucket is the set of rows whose key hash starts with a
given hex prefix; its digest is ``(rows, Σ first 32 bits of the row hashes, Σ next 32 bits)``, which
each side computes with one ``GROUP BY`` over its own rows. The root (empty prefix) is compared
first; a bucket whose digests differ is split into its 16 children (one query per side for all the
differing buckets of a level), until a differing bucket holds at most ``leaf_rows`` rows on both
sides: then the key and row hashes of its rows are fetched and compared key by key.

So with k differences among N rows, each side answers one query per level (about log16(N/leaf_rows)
levels, whatever k is) and sends about 16·k bucket digests per level and at most k·leaf_rows row
hashes in all; equal tables cost one query per side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Digest", "Outcome", "Side", "SideStats", "compare_rows", "descend"]

#: prefixes per statement (an IN list); more make more round trips
IN_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Digest:
    """A bucket's digest: its row count and two 32-bit sums of its row hashes."""

    rows: int
    s1: int
    s2: int


@dataclass
class SideStats:
    """What one side was asked: statements run, bucket digests and row hashes sent back, bytes of them."""

    round_trips: int = 0
    buckets: int = 0
    rows: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"round_trips": self.round_trips, "buckets": self.buckets, "rows": self.rows, "bytes": self.bytes}


class Side(Protocol):
    """One side of a comparison, answering bucket and row questions about its table."""

    stats: SideStats

    def digests(self, depth: int, within: Sequence[str]) -> dict[str, Digest]:
        """Digest per key-hash prefix of length ``depth``, of the rows whose key hash starts with one of
        ``within`` (prefixes of length ``depth - 1``; empty: every row)."""
        ...

    def rows(self, prefixes: Sequence[str], fresh: bool = False) -> dict[str, tuple[str, list[Any]]]:
        """Key hash → (row hash, key values) of the rows whose key hash starts with one of ``prefixes``
        (``fresh``: as the table is now, not as it was when the descent began)."""
        ...

    def close(self) -> None:
        """Release what the side holds (a connection, a temporary table)."""
        ...


@dataclass
class Outcome:
    """What the descent found: key hashes missing from the replica, extra in it, different; and their keys."""

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    keys: dict[str, list[Any]] = field(default_factory=dict)
    #: the leaf buckets whose rows were compared (a recheck asks for these again)
    leaves: list[str] = field(default_factory=list)
    source_rows: int = 0
    replica_rows: int = 0
    levels: int = 0

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)


def compare_rows(src: dict[str, tuple[str, list[Any]]], rep: dict[str, tuple[str, list[Any]]], out: Outcome) -> None:
    """Sort the fetched rows of both sides into ``out``'s missing, extra and different key hashes."""
    for kh in sorted(src.keys() | rep.keys()):
        a, b = src.get(kh), rep.get(kh)
        if a is not None and b is None:
            out.missing.append(kh)
        elif a is None and b is not None:
            out.extra.append(kh)
        elif a is not None and b is not None and a[0] != b[0]:
            out.different.append(kh)
        else:
            continue
        out.keys[kh] = (a or b)[1]  # type: ignore[index]


def descend(source: Side, replica: Side, leaf_rows: int = 64) -> Outcome:
    """Compare ``source`` with ``replica`` from the root bucket down (see the module docstring)."""
    out = Outcome()
    a, b = source.digests(0, []), replica.digests(0, [])
    out.source_rows = sum(d.rows for d in a.values())
    out.replica_rows = sum(d.rows for d in b.values())
    depth = 0
    empty = Digest(0, 0, 0)
    while True:
        differing = sorted(p for p in a.keys() | b.keys() if a.get(p, empty) != b.get(p, empty))
        big = []
        for p in differing:
            if max(a.get(p, empty).rows, b.get(p, empty).rows) <= leaf_rows or depth >= 32:
                out.leaves.append(p)
            else:
                big.append(p)
        if not big:
            break
        depth += 1
        a, b = source.digests(depth, big), replica.digests(depth, big)
    out.levels = depth + 1
    if out.leaves:
        compare_rows(source.rows(out.leaves), replica.rows(out.leaves), out)
    return out
