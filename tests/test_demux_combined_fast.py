"""The combined processor's fast path (plain lines through Arrow's CSV reader, the rest through one
RE2 pattern) against its reference (the pattern on every line), on generated lines: good, truncated,
odd (quoted hosts, escaped quotes, empty fields, extra fields, common log format) and bad ones.
A bad line costs only itself: the lines around it still take the fast path."""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
from hypothesis import example, given, settings
from hypothesis import strategies as st

from headrace.batch import _processors_combined
from headrace.batch._lines import split_records
from headrace.batch._processors_combined import CombinedProcessor

GOOD = '1.2.3.4 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla/4.08"'

_word = st.text(st.sampled_from('ab1-_.:/[]"\\\t é'), min_size=0, max_size=6)
_field = st.one_of(st.sampled_from(["-", "1.2.3.4", "frank", '"q"', "a b", ""]), _word)
_time = st.one_of(
    st.sampled_from(
        [
            "[10/Oct/2000:13:55:36 -0700]",
            "[31/Feb/2024:00:00:00 +0000]",
            "[29/Feb/2024:23:59:60 +1245]",
            "[10/Oct/2000:13:55:36X+0700 junk]",
            "[10/Oct/2000:13:55:36  -0700]",
            "[10/oct/2000:13:55:36 -0700]",
            "[]",
            "[10/Oct/2000:13:55:36 -07]",
        ]
    ),
    st.builds(lambda a, b: f"[{a} {b}]", _word, _word),
)
_quoted_text = st.text(st.sampled_from('ab /\\"-.é\t\r'), max_size=10)
_quoted = st.one_of(
    st.sampled_from(['"GET / HTTP/1.1"', '"-"', '""', '"GET /a b c HTTP/1.1"', '"a \\"q\\" b"', "-", "GET /"]),
    _quoted_text.map(lambda t: f'"{t}"'),
)
_number = st.one_of(st.sampled_from(["200", "404", "-", "2000", "20", '"200"', "12345678901234567890"]), _word)


@st.composite
def _line(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40).filter(lambda t: "\n" not in t and "\r" not in t))
    parts = [draw(_field), draw(_field), draw(_field), draw(_time), draw(_quoted), draw(_number), draw(_number)]
    tail = draw(st.integers(0, 3))
    if tail:  # referer and agent, and maybe an extra field (0: common log format)
        parts += [draw(_quoted), draw(_quoted)] + ([draw(_field)] if tail == 3 else [])
    line = " ".join(parts)
    if draw(st.integers(0, 4)) == 0:
        line = line[: draw(st.integers(0, len(line)))]  # a truncated line
    return line


def _parse_both(lines: list[str]) -> tuple[object, object]:
    data = "".join(line + "\n" for line in lines).encode()
    chunk = {"data": data, "seq_start": 0, "source": "s", "stream": "x"}
    proc = CombinedProcessor({})
    got = proc.parse(split_records("t", dt.date(2026, 1, 2), [chunk]))
    want = proc.parse_reference(split_records("t", dt.date(2026, 1, 2), [chunk]))
    return got, want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.just(GOOD), _line()), max_size=30))
@example([GOOD, GOOD[:60], GOOD, '"1.2.3.4"' + GOOD[7:], GOOD.replace("Mozilla", 'a \\"q\\" b'), GOOD + " 0.1"])
@example([GOOD.replace("[10/Oct/2000:13:55:36 -0700]", "[10/Oct/2000:13:55:36X+0700 junk]"), GOOD])
@example([GOOD.replace('"http://x/"', '"a\rb"'), GOOD.replace("frank", "fr\rank"), GOOD])
def test_combined_fast_path_agrees_with_reference(lines: list[str]) -> None:
    got, want = _parse_both(lines)
    assert got.table.schema == want.table.schema  # type: ignore[attr-defined]
    assert got.table.to_pylist() == want.table.to_pylist()  # type: ignore[attr-defined]
    assert got.reason.to_pylist() == want.reason.to_pylist()  # type: ignore[attr-defined]


def test_a_truncated_line_costs_only_itself(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A line cut inside a quoted field used to make the CSV reader swallow the next lines, and the
    whole batch went to the slow path; now only the bad line takes it."""
    slow_lines: list[int] = []
    real = _processors_combined._slow_fields

    def spy(lines):  # type: ignore[no-untyped-def]
        slow_lines.append(len(lines))
        return real(lines)

    monkeypatch.setattr(_processors_combined, "_slow_fields", spy)
    lines = [GOOD] * 500 + [GOOD[:-5]] + [GOOD] * 500  # cut inside the user agent
    data = "".join(line + "\n" for line in lines).encode()
    batch = split_records("t", dt.date(2026, 1, 2), [{"data": data, "seq_start": 0, "source": "s", "stream": "x"}])
    parsed = CombinedProcessor({}).parse(batch)
    assert slow_lines == [1]
    assert pc.is_null(parsed.reason).to_pylist() == [True] * 500 + [False] + [True] * 500
    assert parsed.reason[500].as_py() == "truncated line: a quoted field is not closed"
