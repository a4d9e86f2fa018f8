"""The built-in processors: ``raw``, ``regex``, ``json``, ``syslog`` (and ``combined``, in its own module)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ._lines import LineBatch
from ._processors import TS, FieldType, Options, Parsed, ProcessorFactory, convert, first_reason
from ._processors_combined import CombinedProcessor
from ._processors_json import JsonProcessor

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


_R5424 = (
    r"^<(?P<pri>\d{1,3})>(?P<version>\d{1,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$"
)
_R3164 = (
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+)(?: |$)"
    r"(?:(?P<tag>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?)?(?P<msg>.*)$"
)


class SyslogProcessor:
    """RFC 5424 and RFC 3164 (BSD) syslog lines, ``<PRI>`` optional for 3164 (as in /var/log files).

    RFC 3164 has no year and no zone: the year is the archive day's (the previous year when that would
    put the line more than two days in the future) and the time is taken as UTC. The TAG is what
    precedes the first ``:`` (or ``[pid]:``) of the first word after the host, as syslog daemons write
    it (``sshd[12]:``, ``postfix/smtpd[3]:``, ``systemd-logind[1]:``); a line whose first word is not
    followed by one (``syslogd 1.4.1: restart.``, ``-- MARK --``, ``last message repeated 3 times``)
    has no TAG (``app_name`` NULL) and keeps all of it as the message.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        Options.model_validate(options)

    def parse(self, batch: LineBatch) -> Parsed:
        lines = batch.lines.cast(pa.string())
        # one regex per line: lines that look like RFC 5424 get that pattern, all others RFC 3164's
        looks_5424 = pc.fill_null(pc.match_substring_regex(lines, r"^<\d{1,3}>\d"), False)
        idx_a = pc.indices_nonzero(looks_5424).cast(pa.int64())
        idx_b = pc.indices_nonzero(pc.invert(looks_5424)).cast(pa.int64())
        parts = [
            _rfc5424(pc.extract_regex(lines.take(idx_a), _R5424)),
            _rfc3164(pc.extract_regex(lines.take(idx_b), _R3164), batch.date),
        ]
        table = pa.concat_tables([t for t, _ in parts])
        reason = pa.concat_arrays([r for _, r in parts])
        if len(idx_a) and len(idx_b):
            order = pc.sort_indices(pa.concat_arrays([idx_a, idx_b]))
            table, reason = table.take(order), reason.take(order)
        return Parsed(table, reason)


_NIL = pa.scalar(None, pa.string())


def _dash(x: pa.Array) -> pa.Array:
    return pc.if_else(pc.or_(pc.equal(x, "-"), pc.equal(pc.binary_length(x), 0)), _NIL, x)


def _syslog_table(
    fmt: str, s: pa.Array, ts: pa.Array, host: str, app: str, procid: str, msgid: str | None, sd: str | None
) -> pa.Table:
    n = len(s)
    matched = pc.is_valid(s)
    pri_text = pc.struct_field(s, "pri")
    pri = pc.cast(pc.if_else(pc.equal(pri_text, ""), _NIL, pri_text), pa.int32())
    return pa.table(
        {
            "format": pc.if_else(matched, fmt, _NIL),
            "priority": pri,
            "facility": pc.divide(pri, 8),
            "severity": pc.subtract(pri, pc.multiply(pc.divide(pri, 8), 8)),
            "timestamp": ts,
            "hostname": _dash(pc.struct_field(s, host)),
            "app_name": _dash(pc.struct_field(s, app)),
            "procid": _dash(pc.struct_field(s, procid)),
            "msgid": _dash(pc.struct_field(s, msgid)) if msgid else pa.nulls(n, pa.string()),
            "structured_data": _dash(pc.struct_field(s, sd)) if sd else pa.nulls(n, pa.string()),
            "message": pc.struct_field(s, "msg"),
        }
    )


def _syslog_reason(s: pa.Array, table: pa.Table, bad_ts: pa.Array) -> pa.Array:
    return first_reason(
        (pc.is_null(s), "not an RFC 5424 or RFC 3164 syslog line"),
        (bad_ts, "bad timestamp"),
        (pc.greater(table["priority"].combine_chunks(), 191), "bad priority: above 191"),
    )


def _rfc5424(s: pa.Array) -> tuple[pa.Table, pa.Array]:
    text = pc.struct_field(s, "ts")
    ts, bad = convert(pc.if_else(pc.equal(text, "-"), _NIL, text), "timestamp")
    table = _syslog_table("rfc5424", s, ts, "host", "app", "procid", "msgid", "sd")
    return table, _syslog_reason(s, table, bad)


def _bsd_time(text: str, day: dt.date) -> int | None:
    """``Mmm dd HH:MM:SS`` → microseconds since the epoch, in the archive day's year (or the one before)."""
    try:
        this = dt.datetime.strptime(f"{day.year} {text}", "%Y %b %d %H:%M:%S").replace(tzinfo=dt.UTC)
        if this.date() > day + dt.timedelta(days=2):
            this = this.replace(year=day.year - 1)
    except ValueError:
        return None
    return int(this.timestamp()) * 1_000_000


def _rfc3164(s: pa.Array, day: dt.date) -> tuple[pa.Table, pa.Array]:
    text = pc.struct_field(s, "ts")
    coded = pc.dictionary_encode(text)  # lines share few distinct seconds: parse each once
    values = [None if v is None else _bsd_time(v, day) for v in coded.dictionary.to_pylist()]
    ts = pc.take(pa.array(values, pa.int64()), coded.indices).cast(TS)
    bad = pc.and_(pc.is_valid(text), pc.is_null(ts))
    table = _syslog_table("rfc3164", s, ts, "host", "tag", "pid", None, None)
    return table, _syslog_reason(s, table, bad)


BUILTINS: dict[str, ProcessorFactory] = {
    "raw": RawProcessor,
    "regex": RegexProcessor,
    "json": JsonProcessor,
    "combined": CombinedProcessor,
    "syslog": SyslogProcessor,
}
