"""The syslog processor's fast path (head patterns, the message cut by bytes, the BSD time on arrays)
against its reference (the whole RFC 3164 pattern per line, ``strptime`` per time), on generated
lines: good, truncated, odd and bad ones, batches mixing RFC 5424 and 3164, records with newlines."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from headrace.batch._lines import LineBatch
from headrace.batch._processors_syslog import SyslogProcessor, bsd_time, bsd_time_reference
from headrace.batch._suffix import drop_prefix

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

_days = st.one_of(
    st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 28)),
    st.sampled_from([dt.date(2024, 2, 27), dt.date(2024, 12, 30), dt.date(2025, 1, 1), dt.date(999, 6, 1)]),
)
_day_of_month = st.integers(0, 39).flatmap(lambda d: st.sampled_from([f"{d:2d}", f"{d:02d}"]))
_bsd = st.builds(
    lambda m, d, h, mi, s: f"{m} {d} {h:02d}:{mi:02d}:{s:02d}",
    st.sampled_from([*MONTHS, "Foo", "Xyz"]),
    _day_of_month,
    st.integers(0, 29),
    st.integers(0, 65),
    st.integers(0, 65),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_bsd, st.none(), st.text(max_size=16)), max_size=40), _days)
@example(["Feb 29 12:00:00", "Mar  1 00:00:00", "Dec 31 23:59:59", "Jan  1 00:00:60"], dt.date(2024, 1, 1))
@example(["Feb 29 12:00:00", "Dec 31 23:59:59"], dt.date(2025, 1, 1))
def test_bsd_time_agrees_with_strptime(values: list[str | None], day: dt.date) -> None:
    got = bsd_time(pa.array(values, pa.string()), day).cast(pa.int64()).to_pylist()
    assert got == [None if v is None else bsd_time_reference(v, day) for v in values]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.integers(-3, 20) | st.none()), max_size=30), st.integers(0, 3))
def test_drop_prefix_cuts_bytes_per_row(rows: list[tuple[str, int | None]], skip: int) -> None:
    values = pa.array([None if i % 7 == 3 else s for i, (s, _) in enumerate(rows)], pa.string())
    values = values.slice(min(skip, len(values)))  # an array with an offset
    cuts = [n for _, n in rows][min(skip, len(rows)) :]
    # cut at whole characters: n counts characters, converted to bytes here
    strs = values.to_pylist()
    byte_cuts = [
        None if n is None or s is None else len(s[: max(n, 0)].encode()) for s, n in zip(strs, cuts, strict=True)
    ]
    got = drop_prefix(values, pa.array(byte_cuts, pa.int64()))
    got.validate(full=True)
    assert got.to_pylist() == [
        None if s is None or n is None else s[max(n, 0) :] for s, n in zip(strs, cuts, strict=True)
    ]


_word = st.text(st.sampled_from("abz09-_./é:[] \t"), min_size=0, max_size=8)
_host = st.one_of(st.sampled_from(["web-01", "combo", "-", "h\u00e9"]), _word)
_tag = st.one_of(
    st.sampled_from(
        ["sshd[123]:", "CRON[9]: ", "kernel:", "postfix/smtpd[3]:", "app[]:", "a[b: c]:", "syslogd 1.4.1:"]
    ),
    st.builds(
        lambda w, p, c: w + p + c,
        _word,
        st.sampled_from(["", "[12]", "[x", "[]"]),
        st.sampled_from(["", ":", ": ", ":  "]),
    ),
)
_message = st.one_of(
    st.sampled_from(["Accepted publickey for deploy", "", "-- MARK --", "x: y [z]", "  two spaces", "\u00e9t\u00e9"]),
    st.text(max_size=20),
)


@st.composite
def _rfc3164_line(draw: st.DrawFn) -> str:
    pri = draw(st.sampled_from(["", "<13>", "<0>", "<191>", "<192>", "<999>", "<1234>", "<>", "<x>"]))
    line = (
        f"{pri}{draw(_bsd)} {draw(_host)}{draw(st.sampled_from([' ', '', chr(9), '  ']))}{draw(_tag)}{draw(_message)}"
    )
    if draw(st.booleans()):
        return line
    return line[: draw(st.integers(0, len(line)))]  # a truncated line


_rfc5424 = st.sampled_from(
    [
        "<165>1 2026-10-11T22:14:15.003Z host app 12 ID47 - message",
        "<13>1 - - - - - -",
        '<13>1 2026-13-45T99:00:00Z h a p m [x@1 a="b"] msg',
        "<1>1 2026-01-01T00:00:00+02:00 h a p m [a][b] m",
        "<999>1 2026-01-01T00:00:00Z h a p m - x",
    ]
)
_lines = st.lists(st.one_of(_rfc3164_line(), _rfc5424, st.text(max_size=30)), max_size=40)


def _batch(lines: list[str], day: dt.date) -> LineBatch:
    n = len(lines)
    dictionary = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["s"]))
    return LineBatch("t", day, pa.array(lines, pa.string()), dictionary, dictionary, pa.array(range(n), pa.int64()))


@settings(max_examples=300, deadline=None)
@given(_lines, _days)
@example(["Jun 15 04:06:20 combo", "Jun 15 04:06:20 combo ", "Jun 15 04:06:20 combo\tx: y"], dt.date(2026, 6, 15))
@example(
    ["<13>Feb 29 10:00:00 h a[1\n2]: m", "Jan  5 10:00:00 h a: x\ny", "Jan  5 10:00:00 h a[b: c]: d"],
    dt.date(2024, 3, 1),
)
def test_syslog_fast_path_agrees_with_reference(lines: list[str], day: dt.date) -> None:
    proc = SyslogProcessor({})
    got, want = proc.parse(_batch(lines, day)), proc.parse_reference(_batch(lines, day))
    assert got.table.to_pylist() == want.table.to_pylist()
    assert got.table.schema == want.table.schema
    assert got.reason.to_pylist() == want.reason.to_pylist()
