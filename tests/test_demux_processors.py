"""Every built-in processor's parsed values, reasons for bad records, user processors, option errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace._chunk import Chunk, chunk_to_record
from headrace.batch._demux import demux_batch
from headrace.batch._lines import split_records
from headrace.batch._processors import load_processor
from headrace.errors import ConfigError

UTC = dt.UTC
DAY = dt.date(2026, 1, 2)


def run(processor: str, data: bytes, options: dict[str, Any] | None = None, seq_start: int = 1000):
    chunk = chunk_to_record(Chunk("host-a", "x.log", "t", seq_start, seq_start + len(data), data), 1)
    good, errors = demux_batch(
        load_processor(processor, options or {}, "demux.types.t"), split_records("t", DAY, [chunk])
    )
    return good.to_pylist(), errors.to_pylist()


def offsets_of(data: bytes, start: int = 1000) -> list[int]:
    out, pos = [], start
    for line in data.split(b"\n")[:-1]:
        out.append(pos)
        pos += len(line) + 1
    return out


def test_combined_values_and_errors() -> None:
    data = (
        b'1.2.3.4 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif?x=1 HTTP/1.0" 200 2326 "http://r/" "Moz 4"\n'
        b'5.6.7.8 - - [29/Feb/2024:23:59:60 +0130] "POST /api HTTP/2.0" 503 - "-" "-"\n'
        b'9.9.9.9 - - [01/Jan/2026:00:00:00 +0000] "GET /common HTTP/1.1" 404 12\n'  # common log format
        b'9.9.9.9 - - [01/Jan/2026:00:00:00 +0000] "GET /q\\"uote HTTP/1.1" 200 1 "-" "a" 0.003\n'  # extra field
        b"not a log line\n"
        b'1.1.1.1 - - [32/Foo/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"\n'
        b'1.1.1.1 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-"\n'
        b"\xff\xfe\n"
    )
    good, errors = run("combined", data)
    offs = offsets_of(data)
    assert good[0] == {
        "host": "1.2.3.4",
        "ident": None,
        "user": "frank",
        "time": dt.datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC),
        "method": "GET",
        "path": "/a.gif?x=1",
        "protocol": "HTTP/1.0",
        "request": "GET /a.gif?x=1 HTTP/1.0",
        "status": 200,
        "size": 2326,
        "referer": "http://r/",
        "user_agent": "Moz 4",
        "_source": "host-a",
        "_stream": "x.log",
        "_offset": offs[0],
    }
    assert good[1]["time"] == dt.datetime(2024, 3, 1, 0, 0, 0, tzinfo=UTC) - dt.timedelta(hours=1, minutes=30)
    assert (good[1]["status"], good[1]["size"], good[1]["referer"], good[1]["user_agent"]) == (503, None, None, None)
    assert (good[2]["path"], good[2]["status"], good[2]["size"], good[2]["referer"]) == ("/common", 404, 12, None)
    assert good[3]["request"].startswith("GET /q") and good[3]["user_agent"] == "a"
    assert [g["_offset"] for g in good] == offs[:4]
    reasons = {e["_offset"]: (e["raw"], e["reason"]) for e in errors}
    assert reasons[offs[4]] == ("not a log line", "not an Apache/Nginx combined or common log line")
    assert reasons[offs[5]][1].startswith("bad time")
    assert reasons[offs[6]][1].startswith("bad status")
    assert reasons[offs[7]][1].startswith("invalid_utf8")
    assert len(good) + len(errors) == data.count(b"\n")


def test_syslog_rfc5424_and_rfc3164() -> None:
    data = (
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed\n"
        b'<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - [exampleSDID@32473 iut="3"] An app event\n'
        b"<13>Feb  5 17:32:18 10.0.0.99 myapp[123]: hello world\n"
        b"Dec 31 23:59:59 host cron: yearly\n"
        b"garbage\n"
    )
    good, errors = run("syslog", data)
    assert good[0] | {"_offset": 0} == {
        "format": "rfc5424",
        "priority": 34,
        "facility": 4,
        "severity": 2,
        "timestamp": dt.datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC),
        "hostname": "mymachine.example.com",
        "app_name": "su",
        "procid": None,
        "msgid": "ID47",
        "structured_data": None,
        "message": "'su root' failed",
        "_source": "host-a",
        "_stream": "x.log",
        "_offset": 0,
    }
    assert good[1]["timestamp"] == dt.datetime(2003, 8, 24, 12, 14, 15, 3, tzinfo=UTC)
    assert good[1]["structured_data"] == '[exampleSDID@32473 iut="3"]' and good[1]["procid"] == "8710"
    assert (good[2]["format"], good[2]["facility"], good[2]["severity"]) == ("rfc3164", 1, 5)
    # no year in RFC 3164: the archive day's year, or the year before when that would be in the future
    assert good[2]["timestamp"] == dt.datetime(2025, 2, 5, 17, 32, 18, tzinfo=UTC)
    assert good[3]["timestamp"] == dt.datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert (good[2]["app_name"], good[2]["procid"], good[2]["message"]) == ("myapp", "123", "hello world")
    assert good[3]["priority"] is None and good[3]["app_name"] == "cron"
    assert [(e["raw"], e["reason"]) for e in errors] == [("garbage", "not an RFC 5424 or RFC 3164 syslog line")]


def test_json_inferred_and_declared() -> None:
    data = b'{"a": 1, "b": "x"}\n{"a": 2, "c": [1, 2]}\nnot json\n\n[1]\n{"a": 3.5}\n'
    good, errors = run("json", data)
    assert [(g["a"], g.get("b"), g.get("c")) for g in good] == [(1, "x", None), (2, None, [1, 2]), (3.5, None, None)]
    assert [g["_offset"] for g in good] == [offsets_of(data)[i] for i in (0, 1, 5)]
    assert {e["raw"]: e["reason"].split(":")[0] for e in errors} == {
        "not json": "not a JSON object of the declared types",
        "": "empty record",
        "[1]": "not a JSON object of the declared types",
    }
    data = b'{"n": 1, "t": "2026-01-02T03:04:05Z", "extra": 1}\n{"n": "nope", "t": "2026-01-02T03:04:05Z"}\n'
    good, errors = run("json", data, {"fields": {"n": "int", "t": "timestamp"}, "other_fields": "ignore"})
    assert good == [
        {
            "n": 1,
            "t": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "_source": "host-a",
            "_stream": "x.log",
            "_offset": 1000,
        }
    ]
    assert [e["_offset"] for e in errors] == [offsets_of(data)[1]]


def test_regex_declared_types() -> None:
    opts = {
        "pattern": r"(?P<ts>\S+) (?P<level>\w+) (?P<n>\S+) (?P<ok>\S+) (?P<msg>.*)",
        "types": {"ts": "timestamp", "n": "int", "ok": "bool"},
    }
    data = b"2026-01-02T03:04:05+01:00 INFO 42 yes hello there\n2026-01-02T03:04:05Z WARN x no m\nnomatch\n"
    good, errors = run("regex", data + b"2026-01-02T03:04:05Z INFO - no dash is null\n", opts)
    assert (good[1]["n"], good[1]["ok"], good[1]["msg"]) == (None, False, "dash is null")
    good = good[:1]
    assert good == [
        {
            "ts": dt.datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC),
            "level": "INFO",
            "n": 42,
            "ok": True,
            "msg": "hello there",
            "_source": "host-a",
            "_stream": "x.log",
            "_offset": 1000,
        }
    ]
    assert [(e["raw"], e["reason"]) for e in errors] == [
        ("2026-01-02T03:04:05Z WARN x no m", "field n: not a valid int"),
        ("nomatch", "no match for the pattern"),
    ]
    good, _ = run(
        "regex",
        b"10/Oct/2000:13:55:36 -0700 x\n",
        {"pattern": r"(?P<t>\S+ \S+) (?P<v>\w)", "types": {"t": "timestamp"}, "formats": {"t": "%d/%b/%Y:%H:%M:%S %z"}},
    )
    assert good[0]["t"] == dt.datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC)


def test_raw_keeps_every_line_and_unterminated_tail() -> None:
    data = b"one\n\nthree\nno newline at the end"
    good, errors = run("raw", data, seq_start=0)
    assert [(g["line"], g["_offset"]) for g in good] == [
        ("one", 0),
        ("", 4),
        ("three", 5),
        ("no newline at the end", 11),
    ]
    assert errors == []


def test_user_processor_by_dotted_path_and_option_errors() -> None:
    good, errors = run("demux_userproc:make", b"a=1 b=2\nzzz\n", {"keys": ["a", "b"]})
    assert [(g["a"], g["b"]) for g in good] == [("1", "2")]
    assert [e["reason"] for e in errors] == ["missing keys"]
    with pytest.raises(ConfigError, match=r"demux.types.t.patern: unknown key"):
        load_processor("regex", {"patern": "x"}, "demux.types.t")
    with pytest.raises(ConfigError, match=r"demux.types.t.processor: unknown processor 'nope'"):
        load_processor("nope", {}, "demux.types.t")
    with pytest.raises(ConfigError, match="not a valid RE2 pattern"):
        load_processor("regex", {"pattern": "(?P<x>"}, "demux.types.t")


@pytest.mark.parametrize("distinct", [5, 3000])
def test_clf_time_both_paths_agree_with_strptime(distinct: int) -> None:
    import random

    import pyarrow as pa

    from headrace.batch._processors_combined import clf_time

    rng = random.Random(distinct)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    pool = []
    for _ in range(distinct):
        t1 = (
            f"[{rng.randint(1, 28):02d}/{rng.choice(months)}/{rng.randint(1971, 2099)}:"
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        )
        t2 = f"{rng.choice('+-')}{rng.randint(0, 14):02d}{rng.choice([0, 30, 45]):02d}]"
        pool.append((t1, t2))
    values = [rng.choice(pool) for _ in range(3000)] + [("[99/Foo/2020:00:00:00", "+0000]")]
    ts, bad = clf_time(pa.array([a for a, _ in values]), pa.array([b for _, b in values]))
    want = [dt.datetime.strptime(a + " " + b, "[%d/%b/%Y:%H:%M:%S %z]").astimezone(UTC) for a, b in values[:-1]]
    assert ts.to_pylist()[:-1] == want
    assert bad.to_pylist() == [False] * (len(values) - 1) + [True]


def test_multiline_records_keep_stack_traces_whole() -> None:
    data = b'2026-01-02 ERROR boom\nTraceback (most recent call last):\n  File "x.py", line 1\n2026-01-02 INFO fine\n'
    tail = b"  continuation that starts the next chunk\n2026-01-02 WARN w\n"
    chunks = [
        chunk_to_record(Chunk("h", "s", "t", 0, len(data), data), 1),
        chunk_to_record(Chunk("h", "s", "t", len(data), len(data) + len(tail), tail), 1),
    ]
    batch = split_records("t", DAY, chunks, multiline=r"^\d{4}-\d{2}-\d{2} ")
    proc = load_processor("regex", {"pattern": r"(?s)(?P<day>\S+) (?P<level>\w+) (?P<msg>.*)"}, "t")
    good, errors = demux_batch(proc, batch)
    rows = good.to_pylist()
    offsets = [0, data.index(b"2026-01-02 INFO"), len(data) + tail.index(b"2026-01-02 WARN")]
    assert [(r["level"], r["_offset"]) for r in rows] == list(zip(["ERROR", "INFO", "WARN"], offsets, strict=True))
    assert rows[0]["msg"] == 'boom\nTraceback (most recent call last):\n  File "x.py", line 1'
    # a chunk starts a record even without the pattern: the agent cut it on a record boundary
    assert errors.to_pylist()[0]["raw"] == "  continuation that starts the next chunk"
    assert errors.to_pylist()[0]["_offset"] == len(data)


def test_user_processor_by_entry_point(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    dist = tmp_path / "headrace_kv_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: headrace-kv-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[headrace.processors]\nkv = demux_userproc:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # an installed distribution, as pip would leave it
    good, errors = run("kv", b"a=1 b=2\nnope\n", {"keys": ["a", "b"]})
    assert [(g["a"], g["b"]) for g in good] == [("1", "2")] and [e["reason"] for e in errors] == ["missing keys"]


def test_crlf_line_ends_are_not_part_of_the_record() -> None:
    data = (
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a HTTP/1.0" 200 5 "-" "curl"\r\n'
        b'1.2.3.5 - - [10/Oct/2000:13:55:37 +0000] "GET /b HTTP/1.0" 404 - "-" "curl"\r\n'
    )
    good, errors = run("combined", data)
    assert errors == []
    assert [(g["path"], g["user_agent"], g["_offset"]) for g in good] == [
        ("/a", "curl", 1000),
        ("/b", "curl", 1000 + data.index(b"1.2.3.5")),
    ]


def test_syslog_batches_of_one_kind_only() -> None:
    good, errors = run("syslog", b"Oct 11 22:14:15 host sshd: x\nOct 11 22:14:16 host sshd: y\n")
    assert [g["message"] for g in good] == ["x", "y"] and errors == []
    good, errors = run("syslog", b"<1>1 - h a - - - m\n")
    assert [(g["timestamp"], g["hostname"], g["message"]) for g in good] == [(None, "h", "m")] and errors == []


def test_clf_time_rejects_impossible_dates_and_keeps_valid_ones() -> None:
    import pyarrow as pa

    from headrace.batch._processors_combined import clf_time

    cases = {
        "[29/Feb/2024:12:00:00": True,  # leap year
        "[29/Feb/2000:12:00:00": True,  # divisible by 400
        "[29/Feb/2023:12:00:00": False,
        "[29/Feb/1900:12:00:00": False,  # divisible by 100, not 400
        "[31/Apr/2026:12:00:00": False,
        "[00/Jan/2026:12:00:00": False,
        "[01/Jan/0000:12:00:00": False,
        "[01/Jan/2026:24:00:00": False,
        "[01/Jan/2026:12:60:00": False,
        "[01/jan/2026:12:00:00": False,
    }
    # many distinct values besides the cases, so nothing depends on a batch having few distinct times
    filler = [f"[{d:02d}/Mar/2026:{h:02d}:{m:02d}:00" for d in range(1, 29) for h in range(24) for m in range(0, 60, 5)]
    t1 = list(cases) + filler
    ts, bad = clf_time(pa.array(t1), pa.array(["+0100]"] * len(t1)))
    assert bad.to_pylist()[: len(cases)] == [not ok for ok in cases.values()]
    oks = [*cases.values()] + [True] * len(filler)
    want = [
        dt.datetime.strptime(v + " +0100]", "[%d/%b/%Y:%H:%M:%S %z]").astimezone(UTC) if ok else None
        for v, ok in zip(t1, oks, strict=True)
    ]
    assert ts.to_pylist() == want


def test_record_origins_across_empty_and_unterminated_chunks() -> None:
    pieces = [b"a1\na2\n", b"", b"b1\nb2", b"\n\nc2\n", b"d1"]
    chunks, pos = [], 500
    for i, p in enumerate(pieces):
        chunks.append(chunk_to_record(Chunk(f"h{i % 2}", f"s{i}", "t", pos, pos + len(p), p), 1))
        pos += len(p) + 7
    batch = split_records("t", DAY, chunks)
    want = []
    pos = 500
    for i, p in enumerate(pieces):
        off = pos
        for line in (p if p.endswith(b"\n") or not p else p + b"\n").split(b"\n")[:-1]:
            want.append((line.decode(), f"h{i % 2}", f"s{i}", off))
            off += len(line) + 1
        pos += len(p) + 7
    got = list(
        zip(
            batch.lines.to_pylist(),
            batch.source.to_pylist(),
            batch.stream.to_pylist(),
            batch.offset.to_pylist(),
            strict=True,
        )
    )
    assert got == want


def test_rfc3164_lines_without_a_tag_keep_their_message() -> None:
    # real sysklogd lines (loghub's Linux_2k): the word after the host is not followed by ':' or '[pid]:'
    data = (
        b"Jun 15 04:06:20 combo syslogd 1.4.1: restart.\n"
        b"Jun 20 04:44:39 combo -- MARK --\n"
        b"Jul  1 09:01:05 combo last message repeated 3 times\n"
        b"Jul  1 09:01:06 combo sshd(pam_unix)[2345]: session opened for user test\n"
        b"Jul  1 09:01:07 combo postfix/smtpd[77]: connect from a[1.2.3.4]\n"
        b"Jul  1 09:01:08 combo systemd-logind[1]: New session 3: of user x\n"
        b"Jul  1 09:01:09 combo kernel: Linux version 2.6.5\n"
        b"Jul  1 09:01:10 combo\n"
    )
    good, errors = run("syslog", data)
    assert errors == []
    got = [(r["hostname"], r["app_name"], r["procid"], r["message"]) for r in good]
    assert got == [
        ("combo", None, None, "syslogd 1.4.1: restart."),
        ("combo", None, None, "-- MARK --"),
        ("combo", None, None, "last message repeated 3 times"),
        ("combo", "sshd(pam_unix)", "2345", "session opened for user test"),
        ("combo", "postfix/smtpd", "77", "connect from a[1.2.3.4]"),
        ("combo", "systemd-logind", "1", "New session 3: of user x"),
        ("combo", "kernel", None, "Linux version 2.6.5"),
        ("combo", None, None, ""),
    ]
    assert all(r["timestamp"] is not None for r in good)


@pytest.mark.parametrize("filler", [0, 300])  # alone (slow path) and among ordinary lines (CSV fast path)
def test_combined_requests_with_spaces_dash_requests_and_truncated_lines(filler: int) -> None:
    ok = b'1.1.1.1 - - [01/Jan/2026:00:00:00 +0000] "GET /ok HTTP/1.1" 200 1 "-" "ua"\n'
    odd = (
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a b c HTTP/1.1" 200 1 "-" "Moz"\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a b" 200 1 "-" "Moz"\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /x" 200 1 "-" "Moz"\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "-" 408 0 "-" "-"\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "" 400 0 "-" "-"\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "Mozilla/5.0 (X11\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "http://x\n'
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 200 1 "-" "a \\"q\\" b" 0.1\n'
    )
    good, errors = run("combined", ok * filler + odd)
    good = good[filler:]
    got = [(r["method"], r["path"], r["protocol"], r["request"], r["user_agent"]) for r in good]
    assert got == [
        ("GET", "/a b c", "HTTP/1.1", "GET /a b c HTTP/1.1", "Moz"),
        ("GET", "/a b", None, "GET /a b", "Moz"),
        ("GET", "/x", None, "GET /x", "Moz"),
        (None, None, None, None, None),
        (None, None, None, None, None),
        ("GET", "/", "HTTP/1.1", "GET / HTTP/1.1", 'a \\"q\\" b'),
    ]
    assert [e["reason"] for e in errors] == ["truncated line: a quoted field is not closed"] * 2
    assert [e["raw"][-4:] for e in errors] == ["(X11", "://x"]


_json_docs = st.fixed_dictionaries(
    {},
    optional={
        "a": st.integers(0, 10**6),
        "b": st.text(max_size=10),
        "c": st.booleans(),
        "d": st.lists(st.integers(0, 9)),
    },
)
_bad_lines = st.sampled_from(
    ['{"a": 1', "not json", "[1, 2]", '{"a": }', "{oops}", '{"a": 1}}', '"text"', "{", '{"b": "unterminated}']
)


def _reference(processor: str, lines: list[bytes]) -> tuple[list[dict[str, Any]], list[int]]:
    """Each line parsed alone (the slow path): good rows and the indices of failed lines."""
    good, bad = [], []
    for i, line in enumerate(lines):
        g, e = run(processor, line + b"\n")
        if e:
            bad.append(i)
        good += [{k: v for k, v in r.items() if not k.startswith("_")} for r in g]
    return good, bad


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(_json_docs.map(lambda d: ("ok", d)), _bad_lines.map(lambda b: ("bad", b))), max_size=60))
def test_json_batch_and_line_by_line_agree_bad_lines_included(items: list[tuple[str, Any]]) -> None:
    import json as _json

    lines = [(_json.dumps(x) if kind == "ok" else x).encode() for kind, x in items]
    data = b"".join(line + b"\n" for line in lines)
    good, errors = run("json", data)
    want_good, want_bad = _reference("json", lines)
    offsets = offsets_of(data)
    assert sorted(offsets.index(e["_offset"]) for e in errors) == want_bad
    assert [{k: v for k, v in r.items() if not k.startswith("_") and v is not None} for r in good] == [
        {k: v for k, v in r.items() if v is not None} for r in want_good
    ]
