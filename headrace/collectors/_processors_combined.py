"""The ``combined`` processor: Apache/Nginx combined (and common) access log lines.

``host ident user [dd/Mon/yyyy:HH:MM:SS +zzzz] "request" status size "referer" "agent"``

Fast path: the batch text goes through Arrow's multithreaded CSV reader (space-delimited, ``"``
quoted, ``\\`` escaped — the bracketed time is two space-separated fields), and fields are validated
and converted with ``pyarrow.compute``; the time is computed arithmetically from its fixed-width parts
(Arrow's ``strptime`` is ~10× slower). Lines the CSV reader refuses (common log format, extra trailing
fields, odd quoting) take the slow path: one RE2 regex over just those lines. A line neither path
accepts is an error, with the reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ._demux_lines import LineBatch
from ._processors import TS, Options, Parsed, first_reason

__all__ = ["CombinedProcessor", "clf_time"]

_NAMES = ["host", "ident", "user", "t1", "t2", "request", "status", "size", "referer", "agent"]
_SLOW = (
    r'^(?P<host>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\S+) (?P<size>\S+)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?(?: .*)?$'
)
_MONTHS = pa.array(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
_T1 = r"^\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}$"
_T2 = r"^[+-]\d{4}\]$"


def _num(a: pa.Array, start: int, stop: int) -> pa.Array:
    return pc.cast(pc.utf8_slice_codeunits(a, start, stop), pa.int64())


_MONTH_NO = {m: i + 1 for i, m in enumerate(_MONTHS.to_pylist())}


def _clf_seconds(t1: str, t2: str) -> int | None:
    """``[dd/Mon/yyyy:HH:MM:SS`` + ``+zzzz]`` → seconds since the epoch (None if not such a time).
    Fixed-width slicing: ``datetime.strptime`` costs ~10× more. A leap second (``:60``) counts as
    the next second."""
    if len(t1) != 21 or len(t2) != 6 or t1[0] != "[" or t2[-1] != "]" or t2[0] not in "+-":
        return None
    try:
        month = _MONTH_NO[t1[4:7]]
        parts = (t1[1:3], t1[8:12], t1[13:15], t1[16:18], t1[19:21], t2[1:3], t2[3:5])
        if not all(p.isdigit() and p.isascii() for p in parts) or t1[3] + t1[7] + t1[12] + t1[15] + t1[18] != "//:::":
            return None
        d, y, hh, mi, ss, zh, zm = (int(p) for p in parts)
        base = dt.datetime(y, month, d, hh, mi, tzinfo=dt.UTC)
    except (KeyError, ValueError):
        return None
    if ss > 60:
        return None
    zone = (zh * 3600 + zm * 60) * (-1 if t2[0] == "-" else 1)
    return int(base.timestamp()) + ss - zone


def clf_time(t1: pa.Array, t2: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``[dd/Mon/yyyy:HH:MM:SS`` and ``+zzzz]`` → (UTC timestamps, bad mask).

    Log lines of one batch share few distinct seconds, so the distinct (time, zone) pairs are parsed
    once each and spread back with ``take``; when most values are distinct, the time is computed
    arithmetically from its fixed-width parts on whole arrays (Arrow's ``strptime`` is far slower).
    """
    n = len(t1)
    d1 = pc.dictionary_encode(t1)
    d2 = pc.dictionary_encode(t2)
    if isinstance(d1, pa.ChunkedArray):
        d1, d2 = d1.combine_chunks(), d2.combine_chunks()
    if len(d1.dictionary) * len(d2.dictionary) <= max(64, n // 16):
        table = {
            (i, j): _clf_seconds(a, b)
            for i, a in enumerate(d1.dictionary.to_pylist())
            for j, b in enumerate(d2.dictionary.to_pylist())
        }
        width = len(d2.dictionary)
        secs = pa.array([table[(k // width, k % width)] for k in range(len(d1.dictionary) * width)], pa.int64())
        key = pc.add(pc.multiply(d1.indices.cast(pa.int64()), width), d2.indices.cast(pa.int64()))
        ts = pc.multiply(pc.take(secs, key), 1_000_000).cast(TS)
        return ts, pc.fill_null(pc.and_(pc.is_valid(t1), pc.is_null(ts)), True)
    return _clf_time_arith(t1, t2)


def _clf_time_arith(t1: pa.Array, t2: pa.Array) -> tuple[pa.Array, pa.Array]:
    month = pc.index_in(pc.utf8_slice_codeunits(t1, 4, 7), value_set=_MONTHS)
    ok = pc.and_(pc.and_(pc.match_substring_regex(t1, _T1), pc.match_substring_regex(t2, _T2)), pc.is_valid(month))
    ok = pc.fill_null(ok, False)
    t1 = pc.if_else(ok, t1, "[01/Jan/1970:00:00:00")
    t2 = pc.if_else(ok, t2, "+0000]")
    m = pc.add(pc.fill_null(month, 0).cast(pa.int64()), 1)
    d, y = _num(t1, 1, 3), _num(t1, 8, 12)
    hh, mi, ss = _num(t1, 13, 15), _num(t1, 16, 18), _num(t1, 19, 21)
    ok = pc.and_(ok, pc.and_(pc.and_(pc.greater_equal(d, 1), pc.less_equal(d, 31)), pc.less(hh, 24)))
    ok = pc.and_(ok, pc.and_(pc.less(mi, 60), pc.less_equal(ss, 60)))
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil), for y >= 0
    y = pc.subtract(y, pc.cast(pc.less_equal(m, 2), pa.int64()))
    era = pc.divide(y, 400)
    yoe = pc.subtract(y, pc.multiply(era, 400))
    mp = pc.if_else(pc.greater(m, 2), pc.subtract(m, 3), pc.add(m, 9))
    doy = pc.add(pc.divide(pc.add(pc.multiply(mp, 153), 2), 5), pc.subtract(d, 1))
    doe = pc.add(pc.subtract(pc.add(pc.multiply(yoe, 365), pc.divide(yoe, 4)), pc.divide(yoe, 100)), doy)
    days = pc.subtract(pc.add(pc.multiply(era, 146097), doe), 719468)
    secs = pc.add(pc.multiply(days, 86400), pc.add(pc.add(pc.multiply(hh, 3600), pc.multiply(mi, 60)), ss))
    zone = pc.add(pc.multiply(_num(t2, 1, 3), 3600), pc.multiply(_num(t2, 3, 5), 60))
    zone = pc.if_else(pc.starts_with(t2, "-"), pc.negate(zone), zone)
    micros = pc.multiply(pc.subtract(secs, zone), 1_000_000)
    ts = pc.if_else(ok, micros, pa.scalar(None, pa.int64())).cast(TS)
    return ts, pc.invert(ok)


def _dash_null(a: pa.Array) -> pa.Array:
    empty = pc.or_(pc.equal(a, "-"), pc.equal(pc.binary_length(a), 0))
    return pc.if_else(empty, pa.scalar(None, a.type), a)


class _CombinedOptions(Options):
    pass


class CombinedProcessor:
    """Parses combined/common access logs; see the module docstring."""

    def __init__(self, options: dict[str, Any]) -> None:
        _CombinedOptions.model_validate(options)

    def _csv(self, text: bytes, threads: bool) -> tuple[pa.Table, list[int]]:
        bad: list[int] = []

        def invalid(row: Any) -> str:
            bad.append(-1 if row.number is None else row.number - 1)
            return "skip"

        table = pacsv.read_csv(
            pa.py_buffer(text),
            # 1 MiB blocks stay in cache (~15% faster than 4 MiB)
            read_options=pacsv.ReadOptions(column_names=_NAMES, use_threads=threads, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=" ",
                quote_char='"',
                escape_char="\\",
                double_quote=False,
                ignore_empty_lines=False,
                invalid_row_handler=invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(_NAMES, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                # the batch text is valid UTF-8 (split_records checked it) and fields split at ASCII bytes are too
                check_utf8=False,
            ),
        )
        return table, bad

    def _fields(self, batch: LineBatch) -> pa.Table:
        """The 10 raw string fields for every line (nulls where no path could split the line)."""
        n = len(batch)
        text = batch.text
        fast: pa.Table | None = None
        bad: list[int] = []
        if n and b"\r" not in text:
            try:
                # serial (demux runs batches on parallel threads), which also gives the bad rows' numbers
                fast, bad = self._csv(text, threads=False)
                if fast.num_rows + len(bad) != n or -1 in bad:
                    fast, bad = None, []
            except pa.ArrowInvalid:
                fast, bad = None, []
        if fast is not None and not bad:
            return fast
        slow_idx = pa.array(bad if fast is not None else range(n), pa.int64())
        s = pc.extract_regex(batch.lines.take(slow_idx), _SLOW)
        time = pc.struct_field(s, "time")
        slow = pa.table(
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
            }
        ).cast(pa.schema([(name, pa.string()) for name in _NAMES]))
        if fast is None:
            return slow
        bad_set = set(bad)
        fast_idx = pa.array([i for i in range(n) if i not in bad_set], pa.int64())
        both = pa.concat_tables([fast, slow]).combine_chunks()
        return both.take(pc.sort_indices(pa.concat_arrays([fast_idx, slow_idx])))

    def parse(self, batch: LineBatch) -> Parsed:
        f = self._fields(batch)
        matched = pc.is_valid(f["host"])
        ts, bad_time = clf_time(f["t1"], f["t2"])
        status_ok = pc.match_substring_regex(f["status"], r"^\d{3}$")
        status = pc.cast(pc.if_else(status_ok, f["status"], pa.scalar(None, pa.string())), pa.int32())
        size_ok = pc.match_substring_regex(f["size"], r"^(\d{1,18}|-)$")
        size = pc.cast(pc.if_else(pc.and_(size_ok, pc.not_equal(f["size"], "-")), f["size"], None), pa.int64())
        parts = pc.split_pattern(pc.binary_join_element_wise(f["request"], "  ", ""), " ", max_splits=2)
        method = pc.list_element(parts, 0)
        path = pc.list_element(parts, 1)
        protocol = pc.utf8_rtrim(pc.list_element(parts, 2), characters=" ")
        table = pa.table(
            {
                "host": f["host"],
                "ident": _dash_null(f["ident"]),
                "user": _dash_null(f["user"]),
                "time": ts,
                "method": pc.if_else(pc.equal(method, ""), pa.scalar(None, pa.string()), method),
                "path": pc.if_else(pc.equal(path, ""), pa.scalar(None, pa.string()), path),
                "protocol": pc.if_else(pc.equal(protocol, ""), pa.scalar(None, pa.string()), protocol),
                "request": f["request"],
                "status": status,
                "size": size,
                "referer": _dash_null(f["referer"]),
                "user_agent": _dash_null(f["agent"]),
            }
        )
        reason = first_reason(
            (pc.invert(matched), "not an Apache/Nginx combined or common log line"),
            (bad_time, "bad time: expected [dd/Mon/yyyy:HH:MM:SS +zzzz]"),
            (pc.invert(status_ok), "bad status: expected 3 digits"),
            (pc.invert(size_ok), "bad size: expected digits or -"),
        )
        return Parsed(table, reason)
