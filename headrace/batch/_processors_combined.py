"""The ``combined`` processor: Apache/Nginx combined (and common) access log lines.

``host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status size "referer" "agent"``

The definition is one RE2 regex per line (:data:`_SLOW`; :meth:`CombinedProcessor.parse_reference`).
Fast path: one DFA match (no captures) picks the lines of the plain shape (:data:`_PLAIN`), and
their text goes through Arrow's CSV reader (space-delimited, ``"`` quoted — the bracketed time is
two space-separated fields), which splits such lines into exactly the fields the regex takes; the
other lines (common log format, extra trailing fields, escaped quotes, truncated or odd lines) take
the regex, so a bad line costs only itself. Fields are validated and converted with
``pyarrow.compute``; the time is computed arithmetically from its fixed-width parts (Arrow's
``strptime`` is ~10× slower). A line the regex does not accept is an error, with the reason.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ._civil import days_from_civil
from ._lines import LineBatch, join_lines
from ._processors import TS, Options, Parsed, first_reason

__all__ = ["CombinedProcessor", "clf_time"]

_NAMES = ["host", "ident", "user", "t1", "t2", "request", "status", "size", "referer", "agent"]
_NULL = pa.scalar(None, pa.string())
_SLOW = (
    r'^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\S+) (?P<size>\S+)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?(?P<rest> .*)?$'
)
# lines the CSV reader splits into exactly the fields _SLOW takes: unquoted fields without quotes,
# backslashes or whitespace (\S), the time as 20 + 5 characters, the quoted ones without quotes or
# backslashes (the CSV reader would unescape what _SLOW keeps), all four quoted fields present
_WORD = r'[^\s"\\]+'
_QUOTED = r'"[^"\\\r\n]*"'
_PLAIN = (
    rf"^{_WORD} {_WORD} {_WORD} \[[^\s\]\\\"]{{20}} [^\s\]\\\"]{{5}}\] {_QUOTED} {_WORD} {_WORD} {_QUOTED} {_QUOTED}$"
)
# the request line as Apache and Nginx log it: the path may hold spaces; the protocol is the last word
_REQUEST = r"^\S+ (?P<path>.*?) (?P<protocol>[A-Za-z]+/[0-9][0-9.]*) *$"
_PROTOCOL = r"^[A-Za-z]+/[0-9][0-9.]*$"
_MONTHS = pa.array(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
_T1 = r"^\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}$"
_T2 = r"^[+-]\d{4}\]$"


def _num(a: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.cast(pc.utf8_slice_codeunits(a, start, stop), pa.int64())


_DAYS_IN_MONTH = pa.array([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int64())


def _local_seconds(t1: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``[dd/Mon/yyyy:HH:MM:SS`` → (seconds since the epoch of that wall time, ok mask), on whole arrays.
    A leap second (``:60``) counts as the next second; an impossible date (31/Feb, year 0) is not ok."""
    month = pc.index_in(pc.utf8_slice_codeunits(t1, 4, 7), value_set=_MONTHS)
    ok = pc.fill_null(pc.and_(pc.match_substring_regex(t1, _T1), pc.is_valid(month)), False)
    t1 = pc.if_else(ok, t1, pa.scalar(None, pa.string()))  # nulls from here on are not ok
    m = pc.add(month.cast(pa.int64()), 1)
    d = _num(t1, 1, 3)
    # "yyyy:HH:MM:SS" as one number, yyyyHHMMSS (fewer slices and casts than one per part)
    v = pc.cast(pc.replace_substring(pc.utf8_slice_codeunits(t1, 8, 21), ":", ""), pa.int64())
    y, hms = pc.divide(v, 1_000_000), _mod(v, 1_000_000)
    hh, mi, ss = pc.divide(hms, 10_000), _mod(pc.divide(hms, 100), 100), _mod(hms, 100)
    leap = pc.and_(
        pc.equal(pc.bit_wise_and(y, 3), 0),
        pc.or_(
            pc.not_equal(pc.subtract(y, pc.multiply(pc.divide(y, 100), 100)), 0),
            pc.equal(pc.subtract(y, pc.multiply(pc.divide(y, 400), 400)), 0),
        ),
    )
    mdays = pc.subtract(
        pc.take(_DAYS_IN_MONTH, pc.subtract(m, 1)), pc.and_(pc.equal(m, 2), pc.invert(leap)).cast(pa.int64())
    )
    ok = pc.and_(ok, pc.and_(pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, mdays)), pc.less(hh, 24)))
    ok = pc.and_(ok, pc.and_(pc.and_(pc.less(mi, 60), pc.less_equal(ss, 60)), pc.greater_equal(y, 1)))
    days = days_from_civil(y, m, d)
    secs = pc.add(pc.multiply(days, 86400), pc.add(pc.add(pc.multiply(hh, 3600), pc.multiply(mi, 60)), ss))
    return pc.fill_null(secs, 0), pc.fill_null(ok, False)


def _mod(a: pa.Array, k: int) -> pa.Array:
    return pc.subtract(a, pc.multiply(pc.divide(a, k), k))


def _zone_seconds(t2: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``+zzzz]`` → (offset from UTC in seconds, ok mask), on whole arrays."""
    ok = pc.fill_null(pc.match_substring_regex(t2, _T2), False)
    t2 = pc.if_else(ok, t2, "+0000]")
    zone = pc.add(pc.multiply(_num(t2, 1, 3), 3600), pc.multiply(_num(t2, 3, 5), 60))
    return pc.if_else(pc.starts_with(t2, "-"), pc.negate(zone), zone), ok


def _encoded(a: pa.Array) -> pa.DictionaryArray:
    d = pc.dictionary_encode(a)
    return d.combine_chunks() if isinstance(d, pa.ChunkedArray) else d


def clf_time(t1: pa.Array, t2: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``[dd/Mon/yyyy:HH:MM:SS`` and ``+zzzz]`` → (UTC timestamps, bad mask).

    The time is computed arithmetically from its fixed-width parts (Arrow's ``strptime`` is ~10×
    slower), once per distinct value: log lines of one batch share few distinct seconds and fewer
    zones, so both are dictionary-encoded, converted, and spread back with ``take``.
    """
    d1, d2 = _encoded(t1), _encoded(t2)
    local, ok1 = _local_seconds(d1.dictionary)
    zone, ok2 = _zone_seconds(d2.dictionary)
    ok = pc.and_(pc.take(ok1, d1.indices), pc.take(ok2, d2.indices))  # null where t1 or t2 is null
    micros = pc.multiply(pc.subtract(pc.take(local, d1.indices), pc.take(zone, d2.indices)), 1_000_000)
    ts = pc.if_else(ok, micros, pa.scalar(None, pa.int64())).cast(TS)
    return ts, pc.and_(pc.is_valid(t1), pc.invert(pc.fill_null(ok, False)))


def _digits(a: pa.Array, max_len: int) -> pa.Array:
    """ASCII digits only, 1 to ``max_len`` of them (cheaper than a regex; ``\\d`` would be the same)."""
    n = pc.binary_length(a)
    return pc.and_(pc.ascii_is_decimal(a), pc.and_(pc.greater_equal(n, 1), pc.less_equal(n, max_len)))


def _element(lists: pa.Array, k: int) -> pa.Array:
    """Element ``k`` of each list, null where the list is shorter (``list_element`` raises instead)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    offsets = pc.subtract(lists.offsets, lists.offsets[0])
    start, end = offsets.slice(0, len(lists)), offsets.slice(1)
    at = pc.add(start, k)
    at = pc.if_else(pc.and_(pc.less(at, end), lists.is_valid()), at, pa.scalar(None, at.type))
    return pc.take(lists.flatten(), at)


def _dash_null(a: pa.Array) -> pa.Array:
    empty = pc.or_(pc.equal(a, "-"), pc.equal(pc.binary_length(a), 0))
    return pc.if_else(empty, pa.scalar(None, a.type), a)


def _request_parts(request: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """``"GET /a b HTTP/1.1"`` → method, path, protocol. Most requests are three words and split
    cheaply; the rest (a path with spaces, logged as is, or no protocol word at the end) take a regex
    that keeps the last word as the protocol when it looks like one (``HTTP/1.1``), else NULL."""
    parts = pc.split_pattern(request, " ", max_splits=2)
    method, path = _element(parts, 0), _element(parts, 1)
    protocol = pc.utf8_rtrim(_element(parts, 2), characters=" ")
    odd = pc.or_(
        pc.greater(pc.count_substring(request, " "), 2),
        pc.invert(pc.match_substring_regex(protocol, _PROTOCOL)),
    )
    odd = pc.fill_null(odd, False)
    if pc.any(odd).as_py():
        s = pc.extract_regex(pc.if_else(odd, request, _NULL), _REQUEST)
        matched = pc.fill_null(pc.is_valid(s), False)
        after_method = pc.replace_substring_regex(request, r"^\S+ ", "", max_replacements=1)
        path = pc.if_else(matched, pc.struct_field(s, "path"), pc.if_else(odd, after_method, path))
        protocol = pc.if_else(matched, pc.struct_field(s, "protocol"), pc.if_else(odd, _NULL, protocol))
    return method, path, protocol


def _unclosed_quote(rest: pa.Array) -> pa.Array:
    """True where the text after the size field holds an odd number of unescaped quotes: the line was
    cut inside the referer or user agent (the regex then could not take them as fields)."""
    quotes = pc.subtract(pc.count_substring(rest, '"'), pc.count_substring(rest, '\\"'))
    return pc.fill_null(pc.equal(pc.bit_wise_and(quotes, 1), 1), False)


def _slow_fields(lines: pa.Array) -> pa.Table:
    s = pc.extract_regex(lines, _SLOW)
    time = pc.struct_field(s, "time")
    return pa.table(
        {
            "host": pc.struct_field(s, "host"),
            "ident": pc.struct_field(s, "ident"),
            "user": pc.struct_field(s, "user"),
            "t1": pc.binary_join_element_wise("[", pc.utf8_slice_codeunits(time, 0, 20), ""),
            "t2": pc.binary_join_element_wise(pc.utf8_slice_codeunits(time, 21, 26), "]", ""),
            "request": pc.struct_field(s, "request"),
            "status": pc.struct_field(s, "status"),
            "size": pc.struct_field(s, "size"),
            "referer": pc.struct_field(s, "referer"),
            "agent": pc.struct_field(s, "agent"),
            "rest": pc.struct_field(s, "rest"),
        }
    ).cast(pa.schema([(name, pa.string()) for name in (*_NAMES, "rest")]))


class _CombinedOptions(Options):
    pass


class CombinedProcessor:
    """Parses combined/common access logs; see the module docstring."""

    def __init__(self, options: dict[str, Any]) -> None:
        _CombinedOptions.model_validate(options)

    def _csv(self, text: bytes) -> pa.Table:
        table = pacsv.read_csv(
            pa.py_buffer(text),
            # 1 MiB blocks stay in cache (~15% faster than 4 MiB)
            read_options=pacsv.ReadOptions(column_names=_NAMES, use_threads=False, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=" ", quote_char='"', escape_char=False, double_quote=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(_NAMES, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                # the batch text is valid UTF-8 (split_records checked it) and fields split at ASCII bytes are too
                check_utf8=False,
            ),
        )
        return table

    def _fields(self, batch: LineBatch, reference: bool = False) -> pa.Table:
        """The 10 raw string fields (and ``rest``) for every line, as :data:`_SLOW` takes them (nulls
        where it does not match). Lines of the plain shape (:data:`_PLAIN`) go through the CSV
        reader, which splits them into exactly the same fields; the others take :data:`_SLOW`."""
        n = len(batch)
        lines = batch.lines.cast(pa.string())
        if reference or n == 0:
            return _slow_fields(lines)
        plain = pc.fill_null(pc.match_substring_regex(lines, _PLAIN), False)
        n_plain = pc.sum(plain).as_py() or 0
        text = batch.text if n_plain == n else join_lines(lines.filter(plain))
        fast: pa.Table | None = None
        if n_plain:
            # serial (demux runs batches on parallel threads); every plain line is one valid row
            fast = self._csv(text)
            fast = fast.append_column("rest", pa.nulls(fast.num_rows, pa.string()))
            if n_plain == n:
                return fast
        slow_idx = pc.indices_nonzero(pc.invert(plain)).cast(pa.int64())
        slow = _slow_fields(lines.take(slow_idx))
        if fast is None:
            return slow
        fast_idx = pc.indices_nonzero(plain).cast(pa.int64())
        both = pa.concat_tables([fast, slow]).combine_chunks()
        return both.take(pc.sort_indices(pa.concat_arrays([fast_idx, slow_idx])))

    def parse_reference(self, batch: LineBatch) -> Parsed:
        """The definition :meth:`parse` must agree with: :data:`_SLOW` on every line (slow; for tests)."""
        return self._parse(batch, reference=True)

    def parse(self, batch: LineBatch) -> Parsed:
        return self._parse(batch, reference=False)

    def _parse(self, batch: LineBatch, reference: bool) -> Parsed:
        f = self._fields(batch, reference)
        matched = pc.is_valid(f["host"])
        ts, bad_time = clf_time(f["t1"], f["t2"])
        status_ok = pc.and_(pc.ascii_is_decimal(f["status"]), pc.equal(pc.binary_length(f["status"]), 3))
        status = pc.cast(pc.if_else(status_ok, f["status"], pa.scalar(None, pa.string())), pa.int32())
        size_digits = _digits(f["size"], 18)
        size_ok = pc.or_(size_digits, pc.equal(f["size"], "-"))
        size = pc.cast(pc.if_else(size_digits, f["size"], None), pa.int64())
        request = _dash_null(f["request"])
        method, path, protocol = _request_parts(request)
        table = pa.table(
            {
                "host": f["host"],
                "ident": _dash_null(f["ident"]),
                "user": _dash_null(f["user"]),
                "time": ts,
                "method": pc.if_else(pc.equal(method, ""), _NULL, method),
                "path": pc.if_else(pc.equal(path, ""), _NULL, path),
                "protocol": pc.if_else(pc.equal(protocol, ""), _NULL, protocol),
                "request": request,
                "status": status,
                "size": size,
                "referer": _dash_null(f["referer"]),
                "user_agent": _dash_null(f["agent"]),
            }
        )
        reason = first_reason(
            (pc.invert(matched), "not an Apache/Nginx combined or common log line"),
            (_unclosed_quote(f["rest"]), "truncated line: a quoted field is not closed"),
            (bad_time, "bad time: expected [dd/Mon/yyyy:HH:MM:SS +zzzz]"),
            (pc.invert(status_ok), "bad status: expected 3 digits"),
            (pc.invert(size_ok), "bad size: expected digits or -"),
        )
        return Parsed(table, reason)
