"""The built-in processors: ``raw``, ``regex``, ``json``, ``syslog`` (and ``combined``, in its own module)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic import Field

from ._demux_lines import LineBatch
from ._processors import TS, FieldType, Options, Parsed, ProcessorFactory, convert, first_reason
from ._processors_combined import CombinedProcessor

__all__ = ["BUILTINS", "JsonProcessor", "RawProcessor", "RegexProcessor", "SyslogProcessor"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TS,
    "date": pa.date32(),
}


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


class _JsonOptions(Options):
    fields: dict[str, FieldType] = Field(default_factory=dict)  # declared types; others are inferred
    other_fields: Literal["infer", "ignore"] = "infer"


def _concat(tables: list[pa.Table]) -> pa.Table:
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # the same field inferred as different types in different parts: keep it as a string
        types: dict[str, set[pa.DataType]] = {}
        for t in tables:
            for f in t.schema:
                types.setdefault(f.name, set()).add(f.type)
        clash = {n for n, ts in types.items() if len({t for t in ts if t != pa.null()}) > 1}
        fixed = [
            pa.table({c: (t[c].cast(pa.string()) if c in clash else t[c]) for c in t.column_names}) for t in tables
        ]
        return pa.concat_tables(fixed, promote_options="permissive")


class JsonProcessor:
    """One JSON object per record; columns inferred across records (Arrow's JSON reader) or declared."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.opts = _JsonOptions.model_validate(options)
        self.schema = (
            pa.schema([(n, _ARROW_TYPES[t]) for n, t in self.opts.fields.items()]) if self.opts.fields else None
        )

    def _read(self, lines: pa.Array, idx: pa.Array, out: list[tuple[pa.Array, pa.Table]], errs: list[Any]) -> None:
        """Read ``lines`` (whose batch rows are ``idx``); on failure bisect down to the bad lines."""
        if len(lines) == 0:
            return
        text = ("\n".join(lines.to_pylist()) + "\n").encode()
        try:
            table = pajson.read_json(
                pa.py_buffer(text),
                read_options=pajson.ReadOptions(block_size=max(1 << 20, len(text) + 1)),
                parse_options=pajson.ParseOptions(
                    explicit_schema=self.schema,
                    unexpected_field_behavior="infer" if self.opts.other_fields == "infer" else "ignore",
                ),
            )
            if table.num_rows != len(lines):
                raise pa.ArrowInvalid(f"{table.num_rows} rows from {len(lines)} records")
            out.append((idx, table))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            if len(lines) == 1:
                msg = str(exc).split("\n")[0]
                errs.append((idx[0].as_py(), f"not a JSON object of the declared types: {msg}"))
                return
            half = len(lines) // 2
            self._read(lines[:half], idx[:half], out, errs)
            self._read(lines[half:], idx[half:], out, errs)

    def parse(self, batch: LineBatch) -> Parsed:
        n = len(batch)
        empty = pc.equal(pc.utf8_trim_whitespace(batch.lines), "")
        keep = pc.invert(empty)
        idx = pc.indices_nonzero(keep).cast(pa.int64())
        got: list[tuple[pa.Array, pa.Table]] = []
        errs: list[tuple[int, str]] = []
        lines = batch.lines.filter(keep)
        if len(lines) == n:
            try:  # the common case: one read of the batch's text
                table = pajson.read_json(
                    pa.py_buffer(batch.text),
                    parse_options=pajson.ParseOptions(
                        explicit_schema=self.schema,
                        unexpected_field_behavior="infer" if self.opts.other_fields == "infer" else "ignore",
                    ),
                )
                if table.num_rows == n:
                    return Parsed.ok(table)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass
        self._read(lines, idx, got, errs)
        if got:
            parsed = _concat([t for _, t in got])
            where: list[int | None] = [None] * n  # batch row -> parsed row (None: not parsed)
            for pos, row in enumerate(pa.concat_arrays([i for i, _ in got]).to_pylist()):
                where[row] = pos
            full = parsed.take(pa.array(where, pa.int64()))
        else:
            full = pa.table({})
        reasons: list[str | None] = [None] * n
        for row, msg in errs:
            reasons[row] = msg
        for row in pc.indices_nonzero(empty).to_pylist():
            reasons[row] = "empty record"
        return Parsed(full, pa.array(reasons, pa.string()))


_R5424 = (
    r"^<(?P<pri>\d{1,3})>(?P<version>\d{1,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$"
)
_R3164 = (
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+) "
    r"(?P<tag>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?(?P<msg>.*)$"
)


class SyslogProcessor:
    """RFC 5424 and RFC 3164 (BSD) syslog lines, ``<PRI>`` optional for 3164 (as in /var/log files).

    RFC 3164 has no year and no zone: the year is the archive day's (the previous year when that would
    put the line more than two days in the future) and the time is taken as UTC.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        Options.model_validate(options)

    def parse(self, batch: LineBatch) -> Parsed:
        lines = batch.lines.cast(pa.string())
        a = pc.extract_regex(lines, _R5424)
        b = pc.extract_regex(lines, _R3164)
        is_a = pc.is_valid(a)

        def pick(x: pa.Array, y: pa.Array) -> pa.Array:
            return pc.if_else(is_a, x, y)

        ts5424, bad5424 = convert(pc.if_else(pc.equal(a.field("ts"), "-"), None, a.field("ts")), "timestamp")
        year = batch.date.year
        bsd = pc.replace_substring(b.field("ts"), "  ", " 0")
        ts_this = pc.strptime(pc.binary_join_element_wise(str(year), bsd, " "), "%Y %b %d %H:%M:%S", "us", True)
        ts_prev = pc.strptime(pc.binary_join_element_wise(str(year - 1), bsd, " "), "%Y %b %d %H:%M:%S", "us", True)
        limit = pa.scalar(dt.datetime.combine(batch.date + dt.timedelta(days=2), dt.time()), pa.timestamp("us"))
        ts3164 = pc.assume_timezone(pc.if_else(pc.greater(ts_this, limit), ts_prev, ts_this), "UTC")
        bad3164 = pc.and_(pc.is_valid(b.field("ts")), pc.is_null(ts3164))
        nil = pa.scalar(None, pa.string())
        pri_text = pick(a.field("pri"), b.field("pri"))
        pri = pc.cast(pc.if_else(pc.equal(pri_text, ""), nil, pri_text), pa.int32())

        def dash(x: pa.Array) -> pa.Array:
            return pc.if_else(pc.is_in(x, value_set=pa.array(["-", ""])), nil, x)

        table = pa.table(
            {
                "format": pc.if_else(is_a, "rfc5424", pc.if_else(pc.is_valid(b), "rfc3164", nil)),
                "priority": pri,
                "facility": pc.divide(pri, 8),
                "severity": pc.subtract(pri, pc.multiply(pc.divide(pri, 8), 8)),
                "timestamp": pick(ts5424, ts3164),
                "hostname": dash(pick(a.field("host"), b.field("host"))),
                "app_name": dash(pick(a.field("app"), b.field("tag"))),
                "procid": dash(pick(a.field("procid"), b.field("pid"))),
                "msgid": dash(a.field("msgid")),
                "structured_data": dash(a.field("sd")),
                "message": pick(a.field("msg"), b.field("msg")),
            }
        )
        reason = first_reason(
            (pc.and_(pc.invert(is_a), pc.is_null(b)), "not an RFC 5424 or RFC 3164 syslog line"),
            (pc.if_else(is_a, bad5424, bad3164), "bad timestamp"),
            (pc.greater(pri, 191), "bad priority: above 191"),
        )
        return Parsed(table, reason)


BUILTINS: dict[str, ProcessorFactory] = {
    "raw": RawProcessor,
    "regex": RegexProcessor,
    "json": JsonProcessor,
    "combined": CombinedProcessor,
    "syslog": SyslogProcessor,
}
