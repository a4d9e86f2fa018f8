"""A user processor for the tests, found by dotted path: key=value pairs, vectorised."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from headrace.batch import LineBatch, Parsed


class KeyValue:
    def __init__(self, options: dict[str, Any]) -> None:
        self.keys: list[str] = list(options.pop("keys"))
        if options:
            raise ValueError(f"unknown options {sorted(options)}")

    def parse(self, batch: LineBatch) -> Parsed:
        pattern = " ".join(f"{k}=(?P<{k}>\\S*)" for k in self.keys)
        s = pc.extract_regex(batch.lines, pattern)
        cols = {k: pc.struct_field(s, k) for k in self.keys}
        reason = pc.if_else(pc.is_valid(s), pa.scalar(None, pa.string()), "missing keys")
        return Parsed(pa.table(cols), reason)


def make(options: dict[str, Any]) -> KeyValue:
    return KeyValue(options)
