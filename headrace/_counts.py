"""Counts compared along a path, shared by ``headrace demo`` and ``headrace reconcile`` (sans-io).

:class:`Check` is one comparison (an earlier step's count against a later step's); :func:`chunk_counts`
counts the lines and bytes of chunk records (sink files and archive parts hold the same records).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Check", "chunk_counts"]


@dataclass(frozen=True)
class Check:
    """``what``: ``expected`` (the earlier step's count) against ``found`` (the later step's)."""

    what: str
    expected: int
    found: int

    @property
    def ok(self) -> bool:
        return self.expected == self.found

    def mismatch(self) -> str:
        """The sentence naming this mismatch."""
        return f"{self.what}: expected {self.expected}, found {self.found} ({self.found - self.expected:+d})"

    def to_json(self) -> dict[str, Any]:
        return {"check": self.what, "expected": self.expected, "found": self.found, "ok": self.ok}


def chunk_counts(
    records: Iterable[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]
) -> tuple[Counter[Any], Counter[Any]]:
    """(lines, bytes) of chunk records per ``key(record)`` (a data type, a ``(source, stream)``)."""
    lines: Counter[Any] = Counter()
    size: Counter[Any] = Counter()
    for rec in records:
        data = bytes(rec["data"])
        k = key(rec)
        lines[k] += data.count(b"\n")
        size[k] += len(data)
    return lines, size
