"""The relay protocol module: what servers write, clients read back; the pure window reader."""

from __future__ import annotations

import httpx
import pytest

from headrace.errors import InvalidInput, ScnTooOld, Unavailable
from headrace.relay import Event, Op, encode_event, encode_key, iter_frames, parse_filter
from headrace.relay._buffer import RingBuffer, TooOld, read_windows
from headrace.relay._codec import EncodedWindow
from headrace.relay._protocol import (
    CaptureStopped,
    capture_headers,
    check_params,
    error_for,
    is_fingerprint,
    parse_sources,
    read_snapshot_headers,
    read_stream_headers,
    snapshot_headers,
    snapshot_query,
    stream_headers,
    stream_query,
)


def _window(scn: int, table: str, n: int = 3) -> EncodedWindow:
    frames = [
        encode_event(Event(scn, table, Op.INSERT, encode_key([scn * 10 + i]), 0, "00" * 8, None, b"v" * 40, i == n - 1))
        for i in range(n)
    ]
    return EncodedWindow(scn, scn, 0, n, b"".join(frames), frozenset({table}))


def test_headers_written_by_servers_read_back_by_clients_in_any_case() -> None:
    h = httpx.Headers(stream_headers(17, 3, 20, 2, 5))
    pos = read_stream_headers(h, 9)
    assert (pos.scanned_scn, pos.oldest_scn, pos.newest_scn) == (17, 3, 20)
    lower = {k.lower(): v for k, v in stream_headers(17, 3, 20, 2, 5).items()}
    assert read_stream_headers(lower, 9) == pos
    assert read_stream_headers({}, 9).scanned_scn == 9 and read_stream_headers({}, None).scanned_scn == 0
    page = read_snapshot_headers(httpx.Headers(snapshot_headers(40, 10, True, "abc")))
    assert (page.snapshot_scn, page.cursor, page.done) == (40, "abc", True)
    assert "X-Headrace-Cursor" not in snapshot_headers(40, 0, False, None)
    with pytest.raises(KeyError):
        read_snapshot_headers({})
    stop = {"reason": "unrepresentable_value", "error": "x" * 900, "table": "t", "column": "c", "scn": 7}
    got = CaptureStopped.from_headers(httpx.Headers(capture_headers(stop)))
    assert got is not None and got.table == "t" and got.scn == 7 and len(got.error) == 500
    assert CaptureStopped.from_headers(httpx.Headers(capture_headers(None))) is None


def test_params_sources_fingerprints_queries_and_error_mapping() -> None:
    with pytest.raises(InvalidInput) as exc:
        check_params({"since": "1", "zz": "1", "aa": "2"}, frozenset({"since"}))
    assert exc.value.reason == "unknown_parameter" and exc.value.detail.endswith("aa, zz")
    assert parse_sources({"sources": " a, b ,"}, frozenset({"a", "b"}), "m", "h") == {"a", "b"}
    assert parse_sources({"sources": ""}, frozenset(), "m", "h") is None
    with pytest.raises(InvalidInput, match=r"not kept here: c \(kept: none yet\)"):
        parse_sources({"sources": "c"}, frozenset(), "not kept here", "kept", "none yet")
    assert is_fingerprint("0123456789abcDEF") and not is_fingerprint("0123456789abcdef\n")
    assert stream_query(0, [], None, None, 5, None) == {"wait_ms": 5, "since": 0}
    assert stream_query(None, ["a", "b"], "mod:2:0", 10, 0, "s") == {
        "wait_ms": 0,
        "sources": "a,b",
        "filter": "mod:2:0",
        "max_bytes": 10,
        "subscriber": "s",
    }
    assert snapshot_query(None, None, None, 100, None, 0) == {"limit": 100, "snapshot_scn": 0}
    too_old = error_for(410, {"error": "scn_too_old", "oldest_scn": 5}, "", "http://r", 2)
    assert isinstance(too_old, ScnTooOld) and (too_old.since, too_old.oldest_scn) == (2, 5)
    assert isinstance(error_for(503, ["not", "a", "dict"], "", "http://r", 2), Unavailable)
    bad = error_for(400, None, "plain text", "http://r", 2)
    assert isinstance(bad, InvalidInput) and bad.reason == "http_400" and "plain text" in bad.detail


def test_read_windows_is_what_the_ring_buffer_reads_and_the_buffer_raises_scn_too_old() -> None:
    windows = [_window(scn, "a" if scn % 2 else "b") for scn in range(1, 30)]
    buf = RingBuffer(1 << 30)
    for w in windows:
        buf.append(w)
    for flt in (None, parse_filter(None, frozenset({"a"})), parse_filter("mod:2:1", None)):
        for since in (0, 4, 28, 29):
            for max_bytes in (1, 500, 1 << 20):
                want = buf.read(since, max_bytes, flt)
                assert read_windows(windows, since, max_bytes, flt) == want
    got = read_windows(windows, 10, 1 << 20, parse_filter(None, frozenset({"b"})))
    assert {e.source for e in iter_frames(got.data)} == {"b"} and got.scn == 29
    assert TooOld is ScnTooOld
    with pytest.raises(ScnTooOld) as exc:
        RingBuffer(1 << 20, start_scn=10).plan(3, 100)
    assert (exc.value.since, exc.value.oldest_scn) == (3, 10)
