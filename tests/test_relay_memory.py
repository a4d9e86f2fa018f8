"""Bounded memory under slow or many readers: streamed bodies, the stream-request cap, the in-flight budget.

Sans-io: the buffer's plan + pieces give exactly what a whole read gives, in pieces of the asked size,
and a body whose windows are evicted mid-way stops. End to end (a real relay process, real sockets
on loopback): eight readers with tiny receive buffers leave the relay's RSS within a bound derived
from the config and still get every byte; 2,000 concurrent long-polls stay within a per-poll bound,
the ones past ``max_stream_requests`` are refused at once with 503 ``too_many_streams``, and every
admitted poll completes when data arrives or at its ``wait_ms``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import resource
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from relay_support import start_relay, status
from support import rss_mib, wait_until

from headrace.relay import Event, Op, encode_event, encode_key, iter_frames, split_windows
from headrace.relay import _buffer as buffer_mod
from headrace.relay._buffer import WINDOW_OVERHEAD, RingBuffer, TooOld
from headrace.relay._codec import EncodedWindow
from headrace.relay._event import peek_header
from headrace.relay._filter import Filter, parse_filter

# --------------------------------------------------------------------------------------------- sans-io


def _window(scn: int, n: int, table: str, size: int) -> EncodedWindow:
    data = b"".join(
        encode_event(
            Event(
                scn - n + 1 + i,
                table,
                Op.INSERT,
                encode_key([scn * 10 + i]),
                0,
                "00" * 8,
                None,
                b"x" * size,
                i == n - 1,
            )
        )
        for i in range(n)
    )
    return EncodedWindow(scn, scn - n + 1, 0, n, data, frozenset({table}))


def _reference(buf: RingBuffer, since: int, flt: Filter | None) -> list[tuple[int, bytes]]:
    """(SCN, key) of every event after ``since`` that ``flt`` lets through, frame by frame."""
    out = []
    for w in buf._wins[buf._head :]:
        off = 0
        while off < len(w.data):
            h = peek_header(w.data, off)
            if w.scn > since and (flt is None or (flt.wants_tables(w.tables) is not False and flt.matches(h))):
                out.append((h.scn, h.key))
            off += h.length
    return out


@pytest.mark.parametrize("masks", [buffer_mod.MAX_PLAN_MASKS, 7])
def test_pieces_are_the_whole_read_cut_at_the_asked_size(masks: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buffer_mod, "MAX_PLAN_MASKS", masks)  # 7: most windows are filtered again while sent
    rng = random.Random(5)
    buf = RingBuffer(1 << 30)
    scn = 0
    for _ in range(60):
        n = rng.randint(1, 12)
        scn += n
        buf.append(_window(scn, n, rng.choice("ab"), rng.randint(0, 3000)))
    for text in (None, "mod:3:1", "range:500:", None):
        for sources in (None, frozenset({"a"})):
            flt = parse_filter(text, sources)
            use = None if flt.sources is None and not flt.per_event else flt
            whole = buf.read(0, 1 << 30, use)
            for piece_bytes in (1, 37, 4096, 1 << 20):
                plan = buf.plan(0, 1 << 30, use)
                pieces = list(buf.pieces(plan, piece_bytes))
                assert b"".join(pieces) == whole.data and plan.length == len(whole.data)
                assert all(len(p) == piece_bytes for p in pieces[:-1]) and all(
                    0 < len(p) <= piece_bytes for p in pieces
                )
                assert (plan.scn, plan.windows, plan.events) == (whole.scn, whole.windows, whole.events)
            windows = list(split_windows(iter_frames(whole.data)))
            assert len(windows) == whole.windows and sum(map(len, windows)) == whole.events
            for w in windows:  # every window of the body ends marked, and only there
                assert [e.window_end for e in w] == [False] * (len(w) - 1) + [True]
            assert [(e.scn, e.key) for w in windows for e in w] == _reference(buf, 0, use)
            # a body limited by max_bytes is the same prefix, cut at a window end
            part = buf.read(0, len(whole.data) // 3 or 1, use)
            assert whole.data.startswith(part.data)


def test_a_body_whose_windows_are_evicted_meanwhile_stops_and_older_evictions_do_not_matter() -> None:
    w1 = _window(1, 1, "t", 100_000)
    cap = (len(w1.data) + WINDOW_OVERHEAD) * 5 + 10  # five windows
    buf = RingBuffer(cap)
    for scn in range(1, 6):
        buf.append(_window(scn, 1, "t", 100_000))
    plan = buf.plan(2, 1 << 30)
    it = buf.pieces(plan, 50_000)
    first = next(it)
    buf.append(_window(6, 1, "t", 100_000))  # evicts window 1: older than the body, no harm
    assert buf.oldest_scn == 1
    second = next(it)
    buf.append(_window(7, 1, "t", 100_000))  # evicts window 2 (not in the body)
    buf.append(_window(8, 1, "t", 100_000))  # evicts window 3, the one being sent
    with pytest.raises(TooOld):
        for _ in it:
            pass
    assert len(first) == len(second) == 50_000


# ------------------------------------------------------------------------------------------ end to end

KIB = 1 << 10
MIB = 1 << 20


def _http_get(sock: socket.socket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed before the response head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return code, headers, rest


class SlowReader(threading.Thread):
    """One /v1/stream request on a socket with a tiny receive buffer, read a few KiB at a time."""

    def __init__(self, port: int, path: str, fast: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.fast = port, path, fast
        self.sha = hashlib.sha256()
        self.length = 0
        self.headers: dict[str, str] = {}
        self.error: BaseException | None = None
        self.started_body = threading.Event()

    def run(self) -> None:
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
                s.settimeout(60)
                s.connect(("127.0.0.1", self.port))
                _http_get(s, self.path)
                code, self.headers, rest = _read_head(s)
                assert code == 200, (code, self.headers, rest[:200])
                want = int(self.headers["content-length"])
                self.sha.update(rest)
                self.length = len(rest)
                self.started_body.set()
                while self.length < want:
                    if self.fast.is_set():
                        chunk = s.recv(256 * KIB)
                    else:
                        chunk = s.recv(4 * KIB)
                        time.sleep(0.005)
                    assert chunk, f"body cut at {self.length} of {want}"
                    self.sha.update(chunk)
                    self.length += len(chunk)
        except BaseException as exc:
            self.error = exc
            self.started_body.set()


def _fill(db: Path, n: int, size: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS big (id INTEGER PRIMARY KEY, payload TEXT)")
    conn.commit()
    rng = random.Random(11)
    for i in range(n):
        conn.execute("INSERT INTO big VALUES (?, ?)", (i, "".join(rng.choices("abcdefghij", k=size))))
        conn.commit()
    conn.close()


def _sampler(pid: int, stop: threading.Event, out: list[float]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            out.append(rss_mib(pid))
            stop.wait(0.05)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_slow_readers_cost_a_bounded_batch_each_and_still_get_every_byte(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    n_windows, row = 128, 256 * KIB  # 32 MiB of windows in a 256 MiB buffer
    _fill(db, 0, 0)
    batch = 256 * KIB
    relay, url = start_relay(daemons, tmp_path, db, buffer_bytes=256 * MIB, stream_batch_bytes=batch)
    assert relay.proc is not None
    pid, port = relay.proc.pid, int(url.rsplit(":", 1)[1])
    _fill(db, n_windows, row)
    wait_until(lambda: status(url)["events"] >= n_windows, 60, "the relay to take every window in")
    path = f"/v1/stream?since=0&max_bytes={64 * MIB}&wait_ms=0"
    httpx.get(url + "/v1/stream", params={"since": 0, "max_bytes": 1, "wait_ms": 0}, timeout=10)  # warm up
    before = rss_mib(pid)

    fast = threading.Event()
    readers = [SlowReader(port, path, fast) for _ in range(8)]
    samples: list[float] = []
    stop = threading.Event()
    sampler = _sampler(pid, stop, samples)
    for r in readers:
        r.start()
    for r in readers:
        assert r.started_body.wait(20) and r.error is None, r.error
    # the readers take ~800 KiB/s each for 3 s: the relay must not hold their 32 MiB bodies meanwhile
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        time.sleep(0.05)
    slow_peak = max(samples)
    fast.set()
    for r in readers:
        r.join(60)
        assert not r.is_alive() and r.error is None, r.error
    stop.set()
    sampler.join()
    peak = max(samples)

    normal = httpx.get(url + "/v1/stream", params={"since": 0, "max_bytes": 64 * MIB, "wait_ms": 0}, timeout=30)
    windows = list(split_windows(iter_frames(normal.content)))
    # SQLite may group transactions committed within one cut interval into one window: count events
    assert sum(len(w) for w in windows) == n_windows
    assert [w[0].scn for w in windows] == sorted({w[0].scn for w in windows})
    digest = hashlib.sha256(normal.content).hexdigest()
    for r in readers:  # every reader got every window, byte for byte
        assert r.length == len(normal.content) and r.sha.hexdigest() == digest
        assert r.headers["x-headrace-windows"] == str(len(windows))
    # Bound (docs/relay.md "Memory and connections"): a body being written holds at most the piece the
    # transport still has plus the one being copied, plus asyncio's 16 KiB low-water rest: < 3 pieces.
    bound = 8 * 3 * batch / MIB + 16  # + 16 MiB for the allocator and the per-connection objects
    print(f"relay RSS {before:.1f} MiB before, {slow_peak:.1f} while slow, {peak:.1f} MiB peak; bound +{bound:.1f}")
    assert peak - before <= bound, f"relay RSS grew {peak - before:.1f} MiB with 8 slow readers (bound {bound:.1f})"


def test_inflight_budget_refuses_a_second_writer_then_serves_it(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _fill(db, 0, 0)
    batch = 64 * KIB
    _relay, url = start_relay(
        daemons, tmp_path, db, stream_batch_bytes=batch, max_inflight_bytes=2 * batch + batch // 2
    )
    port = int(url.rsplit(":", 1)[1])
    _fill(db, 16, 256 * KIB)
    wait_until(lambda: status(url)["events"] >= 16, 60, "the relay to take every window in")
    fast = threading.Event()
    hog = SlowReader(port, f"/v1/stream?since=0&max_bytes={64 * MIB}&wait_ms=0", fast)
    hog.start()
    assert hog.started_body.wait(20) and hog.error is None
    t0 = time.monotonic()
    r = httpx.get(url + "/v1/stream", params={"since": 0, "wait_ms": 0}, timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "inflight_bytes_limit", r.text
    assert r.headers["retry-after"] == "1" and time.monotonic() - t0 < 5
    fast.set()
    hog.join(30)
    assert hog.error is None
    r = httpx.get(url + "/v1/stream", params={"since": 0, "wait_ms": 0}, timeout=10)
    assert r.status_code == 200 and r.headers["x-headrace-windows"] != "0"
    # a reader that goes away mid-body gives its budget back
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        _http_get(s, f"/v1/stream?since=0&max_bytes={64 * MIB}&wait_ms=0")
        assert _read_head(s)[0] == 200
        wait_until(lambda: _gauge(url, "headrace_relay_stream_inflight_bytes") > 0, 5, "the body to hold budget")
    wait_until(lambda: _gauge(url, "headrace_relay_stream_inflight_bytes") == 0, 10, "the budget to come back")
    assert _gauge(url, "headrace_relay_stream_requests") == 0
    assert 'headrace_relay_rejects_total{reason="inflight_bytes_limit"} 1.0' in httpx.get(url + "/metrics").text


async def _poll(port: int, path: str) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return code, headers, body, time.monotonic() - t0
    finally:
        writer.close()


def _fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _gauge(url: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", httpx.get(url + "/metrics", timeout=5).text, re.M)
    assert m, name
    return float(m.group(1))


def test_two_thousand_long_polls_cap_refuse_and_all_complete(daemons: Any, tmp_path: Path) -> None:
    want = 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard open-file limit ({hard}) is below the {want} this test needs")
    db = tmp_path / "app.db"
    _fill(db, 0, 0)
    cap, n_polls = 1500, 2000
    # the relay starts with a soft limit of 1024 and must raise its own to hold 1,500 connections
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        relay, url = start_relay(daemons, tmp_path, db, max_stream_requests=cap)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    assert relay.proc is not None
    pid, port = relay.proc.pid, int(url.rsplit(":", 1)[1])
    limits = Path(f"/proc/{pid}/limits").read_text()
    relay_soft = re.search(r"^Max open files\s+(\S+)\s+(\S+)", limits, re.M)
    assert relay_soft and relay_soft.group(1) == relay_soft.group(2), limits
    _fill(db, 1, 100)
    wait_until(lambda: status(url)["events"] >= 1, 30, "the first window")
    since = status(url)["newest_scn"]
    httpx.get(url + "/v1/stream", params={"since": 0, "wait_ms": 0}, timeout=10)  # warm up
    rss0, fds0 = rss_mib(pid), _fds(pid)

    async def run() -> None:
        path = f"/v1/stream?since={since}&wait_ms=25000"
        tasks = [asyncio.ensure_future(_poll(port, path)) for _ in range(n_polls)]
        # the polls past the cap are refused at once, with the reason and Retry-After
        deadline = time.monotonic() + 20
        while sum(t.done() for t in tasks) < n_polls - cap and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        refused = [t.result() for t in tasks if t.done()]
        assert len(refused) == n_polls - cap
        for code, headers, body, took in refused:
            assert code == 503 and b'"too_many_streams"' in body and headers["retry-after"] == "1", (code, body)
            assert took < 10
        assert await asyncio.to_thread(_gauge, url, "headrace_relay_stream_requests") == cap
        rss, fds = rss_mib(pid), _fds(pid)
        print(f"{cap} waiting long-polls: RSS {rss0:.1f} -> {rss:.1f} MiB, fds {fds0} -> {fds}")
        # docs/relay.md: a waiting long-poll holds one descriptor and < 24 KiB; refused ones hold none
        assert fds - fds0 <= cap + 10
        assert rss - rss0 <= cap * 24 / 1024 + 16, f"{cap} waiting polls took {rss - rss0:.1f} MiB"
        # new data wakes every waiting poll, each gets the new window
        t_write = time.monotonic()
        await asyncio.to_thread(_fill_one, db)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        woke = [r for r in results if r[0] == 200]
        assert len(woke) == cap
        for _code, headers, body, _took in woke:
            evs = list(iter_frames(body))
            assert headers["x-headrace-windows"] == "1" and len(evs) == 1 and evs[0].scn > since
        print(f"all {cap} woke within {time.monotonic() - t_write:.1f}s of the write")
        # with nothing new, every poll ends at its wait_ms with an empty body
        since2 = int(woke[0][1]["x-headrace-scn"])
        t0 = time.monotonic()
        ends = await asyncio.wait_for(
            asyncio.gather(*(_poll(port, f"/v1/stream?since={since2}&wait_ms=1500") for _ in range(1000))), 30
        )
        assert all(c == 200 and b == b"" and h["x-headrace-scn"] == str(since2) for c, h, b, _ in ends)
        assert all(took >= 1.4 for *_, took in ends) and time.monotonic() - t0 < 20

        # clients that give up free their slots at once, not at their wait_ms
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        for _r, w in conns:
            w.write(f"GET /v1/stream?since={since2}&wait_ms=25000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await _until(lambda: _gauge(url, "headrace_relay_stream_requests") == 200, 10)
        for _r, w in conns:
            w.close()
        await _until(lambda: _gauge(url, "headrace_relay_stream_requests") == 0, 5)

    asyncio.run(run())
    assert _gauge(url, "headrace_relay_stream_inflight_bytes") == 0


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"not within {timeout}s"
        await asyncio.sleep(0.05)


def _fill_one(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO big VALUES ((SELECT max(id) + 1 FROM big), 'new')")
    conn.commit()
    conn.close()
