"""The ``syslog`` processor: RFC 5424 and RFC 3164 (BSD) syslog lines.

Each line gets one RE2 regex (RFC 5424's where it starts ``<PRI>digit``, RFC 3164's otherwise) over
whole arrays. The RFC 3164 time (``Mmm dd HH:MM:SS``, no year, no zone) is converted arithmetically
from its fixed-width parts on whole arrays (:func:`bsd_time`); :func:`bsd_time_reference` is the
per-value ``strptime`` definition it must agree with (tests prove it on generated values).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ._civil import days_from_civil, days_in_month
from ._lines import LineBatch
from ._processors import TS, Options, Parsed, convert, first_reason
from ._suffix import drop_prefix

__all__ = ["SyslogProcessor", "bsd_time", "bsd_time_reference"]

_R5424 = (
    r"^<(?P<pri>\d{1,3})>(?P<version>\d{1,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$"
)
_R3164 = (
    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+)(?: |$)"
    r"(?:(?P<tag>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?)?(?P<msg>.*)$"
)
_TIME3164 = r"[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}"
# the head of an RFC 3164 line in two patterns of at most four groups each (see _rfc3164_fields)
_HEAD3164 = r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>" + _TIME3164 + r") (?P<host>\S+)(?: |$)"
_TAG3164 = r"^(?:<\d{1,3}>)?" + _TIME3164 + r" \S+ (?P<tag>[^:\[\s]+)(?P<pid>\[[^\]]*\])?(?P<colon>: ?)"
_MONTHS = pa.array(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
_BSD_TIME = r"^[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}$"
_NIL = pa.scalar(None, pa.string())


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
        return self._parse(batch, reference=False)

    def parse_reference(self, batch: LineBatch) -> Parsed:
        """The definition :meth:`parse` must agree with: the whole :data:`_R3164` pattern per line and
        ``strptime`` per time (slow; for tests)."""
        return self._parse(batch, reference=True)

    def _parse(self, batch: LineBatch, reference: bool) -> Parsed:
        lines = batch.lines.cast(pa.string())
        # one regex per line: lines that look like RFC 5424 get that pattern, all others RFC 3164's
        looks_5424 = pc.fill_null(pc.match_substring_regex(lines, r"^<\d{1,3}>\d"), False)
        n_5424 = pc.sum(looks_5424).as_py() or 0
        if n_5424 == 0 and not reference:
            return Parsed(*_rfc3164(lines, batch.date, reference))
        if n_5424 == len(lines) and not reference:
            return Parsed(*_rfc5424(pc.extract_regex(lines, _R5424)))
        idx_a = pc.indices_nonzero(looks_5424).cast(pa.int64())
        idx_b = pc.indices_nonzero(pc.invert(looks_5424)).cast(pa.int64())
        parts = [
            _rfc5424(pc.extract_regex(lines.take(idx_a), _R5424)),
            _rfc3164(lines.take(idx_b), batch.date, reference),
        ]
        table = pa.concat_tables([t for t, _ in parts])
        reason = pa.concat_arrays([r for _, r in parts])
        order = pc.sort_indices(pa.concat_arrays([idx_a, idx_b]))
        return Parsed(table.take(order), reason.take(order))


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


def bsd_time_reference(text: str, day: dt.date) -> int | None:
    """``Mmm dd HH:MM:SS`` → microseconds since the epoch, in the archive day's year (or the one before
    when that would put it more than two days after ``day``); None where ``strptime`` refuses it.
    The per-value definition :func:`bsd_time` computes on whole arrays."""
    try:
        this = dt.datetime.strptime(f"{day.year} {text}", "%Y %b %d %H:%M:%S").replace(tzinfo=dt.UTC)
        if this.date() > day + dt.timedelta(days=2):
            this = this.replace(year=day.year - 1)
    except ValueError:
        return None
    return int(this.timestamp()) * 1_000_000


def bsd_time(text: pa.Array, day: dt.date, checked: bool = False) -> pa.Array:
    """:func:`bsd_time_reference` on a whole string array (values as the RFC 3164 regex takes them,
    ``[A-Z][a-z]{2} [ \\d]\\d \\d{2}:\\d{2}:\\d{2}``; any other value is null), as ``timestamp[us, UTC]``.
    ``checked``: the caller vouches that every value has that form (or is null).

    Arithmetic on the fixed-width parts: a month name, a day that exists in the year (29 Feb only in
    a leap year, also after moving a line to the previous year), hours < 24, minutes and seconds < 60
    (``strptime`` refuses a leap second); the year is ``day``'s, or the one before where the date would
    be more than two days after ``day`` (no value converts when ``day``'s year has fewer than four digits).
    """
    text = pc.cast(text, pa.string())
    year = day.year
    if year < 1000:  # strptime's %Y takes four digits
        return pa.nulls(len(text), TS)
    if not checked:
        text = pc.if_else(pc.fill_null(pc.match_substring_regex(text, _BSD_TIME), False), text, _NIL)
    m = pc.add(pc.index_in(pc.utf8_slice_codeunits(text, 0, 3), value_set=_MONTHS).cast(pa.int64()), 1)
    # "dd HH:MM:SS" (dd maybe space-padded) as one number: dd0HHMMSS
    digits = pc.replace_substring(pc.replace_substring(pc.utf8_slice_codeunits(text, 4, 15), ":", ""), " ", "0")
    v = pc.cast(digits, pa.int64())
    d, hms = pc.divide(v, 10_000_000), _mod(v, 1_000_000)
    hh, mi, ss = pc.divide(hms, 10_000), _mod(pc.divide(hms, 100), 100), _mod(hms, 100)
    ok = pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, pc.take(days_in_month(year), pc.subtract(m, 1))))
    ok = pc.and_(ok, pc.and_(pc.less(hh, 24), pc.and_(pc.less(mi, 60), pc.less(ss, 60))))
    limit = day + dt.timedelta(days=2)
    if limit.year > year:  # no date of this year is after the limit
        y: pa.Array | int = year
    else:
        later = pc.greater(pc.add(pc.multiply(m, 32), d), limit.month * 32 + limit.day)
        fits = pc.less_equal(d, pc.take(days_in_month(year - 1), pc.subtract(m, 1)))
        ok = pc.and_(ok, pc.or_(pc.invert(later), fits))
        y = pc.subtract(year, pc.cast(later, pa.int64()))
    secs = pc.add(
        pc.multiply(days_from_civil(y, m, d), 86400),
        pc.add(pc.add(pc.multiply(hh, 3600), pc.multiply(mi, 60)), ss),
    )
    out: pa.Array = pc.if_else(pc.fill_null(ok, False), pc.multiply(secs, 1_000_000), pa.scalar(None, pa.int64()))
    return out.cast(TS)


def _mod(a: pa.Array, k: int) -> pa.Array:
    return pc.subtract(a, pc.multiply(pc.divide(a, k), k))


def _rfc3164_fields(lines: pa.Array) -> pa.Array:
    """The fields of :data:`_R3164` for each line, as ``extract_regex(lines, _R3164)`` gives them (a struct,
    null where the line does not match), without capturing the message by regex.

    RE2 tracks submatches byte by byte (and one-pass, its fast way, only for patterns of at most four
    groups that never need to look back), so capturing the long message costs most of the time. Here
    one pattern captures PRI, time and host, another the TAG and PID (both read only the line's head),
    and the message is the rest of the line after the head, cut by byte counts (:func:`drop_prefix`).
    In a line without a newline the full pattern's optional TAG and ``.*$`` cannot fail, so it
    matches where the head does, and takes its TAG branch where the TAG pattern matches: the fields
    are the same. A batch with newlines in records (``multiline``) takes the full pattern.
    """
    if pc.any(pc.match_substring(lines, "\n")).as_py():
        return pc.extract_regex(lines, _R3164)
    head = pc.extract_regex(lines, _HEAD3164)
    matched = pc.is_valid(head)
    tag = pc.extract_regex(lines, _TAG3164)
    pri, host = pc.struct_field(head, "pri"), pc.struct_field(head, "host")
    pri_len = pc.if_else(pc.equal(pri, ""), 0, pc.add(pc.binary_length(pri), 2))
    head_len = pc.add(pc.add(pri_len, 16), pc.binary_length(host))  # <PRI> + time + space + host
    tagged = pc.fill_null(pc.and_(matched, pc.is_valid(tag)), False)
    tag_name, pid_part, colon = (pc.struct_field(tag, f) for f in ("tag", "pid", "colon"))
    tag_len = pc.add(pc.add(pc.binary_length(tag_name), pc.binary_length(pid_part)), pc.binary_length(colon))
    # after the space that follows the host (past the end where the host ends the line: no message)
    start = pc.add(pc.add(head_len, 1), pc.if_else(tagged, tag_len, 0))
    msg = drop_prefix(lines, pc.if_else(matched, start, pa.scalar(None, pa.int64())))
    none = pa.nulls(len(lines), pa.string())
    return pa.StructArray.from_arrays(
        [
            pri,
            pc.struct_field(head, "ts"),
            host,
            pc.if_else(tagged, tag_name, none),
            pc.if_else(tagged, pc.utf8_slice_codeunits(pid_part, 1, -1), none),
            msg,
        ],
        names=["pri", "ts", "host", "tag", "pid", "msg"],
        mask=pc.invert(matched),
    )


def _rfc3164(lines: pa.Array, day: dt.date, reference: bool = False) -> tuple[pa.Table, pa.Array]:
    s = pc.extract_regex(lines, _R3164) if reference else _rfc3164_fields(lines)
    text = pc.struct_field(s, "ts")
    if reference:
        values = [None if v is None else bsd_time_reference(v, day) for v in text.to_pylist()]
        ts = pa.array(values, pa.int64()).cast(TS)
    else:
        ts = bsd_time(text, day, checked=True)  # the pattern took the time's form
    bad = pc.and_(pc.is_valid(text), pc.is_null(ts))
    table = _syslog_table("rfc3164", s, ts, "host", "tag", "pid", None, None)
    return table, _syslog_reason(s, table, bad)
