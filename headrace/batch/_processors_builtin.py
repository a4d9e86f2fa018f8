"""The built-in processors: ``raw`` and ``regex`` here; ``json``, ``combined`` and ``syslog`` in their own modules."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ._lines import LineBatch
from ._processors import FieldType, Options, Parsed, ProcessorFactory, convert, first_reason
from ._processors_combined import CombinedProcessor
from ._processors_json import JsonProcessor
from ._processors_syslog import SyslogProcessor

__all__ = ["BUILTINS", "JsonProcessor", "RawProcessor", "RegexProcessor", "SyslogProcessor"]


class RawProcessor:
    """One string column, ``line``: every record parses."""

    def __init__(self, options: dict[str, Any]) -> None:
        Options.model_validate(options)

    def parse(self, batch: LineBatch) -> Parsed:
        return Parsed.ok(pa.table({"line": batch.lines}))


class _RegexOptions(Options):
    pattern: str
    types: dict[str, FieldType] = Field(default_factory=dict)
    formats: dict[str, str] = Field(default_factory=dict)  # strptime formats of timestamp fields


class RegexProcessor:
    """Named groups of an RE2 pattern become columns, converted to the declared ``types`` (default string).

    The pattern must match at the start of the record (as with Python's ``re.match``); end it with ``$``
    to require the whole record to match."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.opts = _RegexOptions.model_validate(options)
        self.pattern = f"^(?:{self.opts.pattern})"  # matches from the record's start, like Python's re.match
        try:
            probe = pc.extract_regex(pa.array([""], pa.string()), self.pattern)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"pattern: not a valid RE2 pattern with named groups (?P<name>…): {exc}") from exc
        self.names = [f.name for f in probe.type]
        unknown = set(self.opts.types) - set(self.names)
        if unknown:
            raise ValueError(f"types: {', '.join(sorted(unknown))} not a named group of the pattern")

    def parse(self, batch: LineBatch) -> Parsed:
        s = pc.extract_regex(batch.lines, self.pattern)
        pairs: list[tuple[pa.Array, str]] = [(pc.is_null(s), "no match for the pattern")]
        cols = {}
        for name in self.names:
            kind = self.opts.types.get(name, "string")
            col, bad = convert(s.field(name).cast(pa.string()), kind, self.opts.formats.get(name))
            cols[name] = col
            pairs.append((bad, f"field {name}: not a valid {kind}"))
        return Parsed(pa.table(cols), first_reason(*pairs))


BUILTINS: dict[str, ProcessorFactory] = {
    "raw": RawProcessor,
    "regex": RegexProcessor,
    "json": JsonProcessor,
    "combined": CombinedProcessor,
    "syslog": SyslogProcessor,
}
