"""Request-level limits (issue 11 item 6): slow headers, slow bodies and connection floods on every daemon.

Real daemons on real sockets; attackers are raw sockets. The daemons run with small ``limits:`` so
each cut-off happens within a second or two.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import start_collector, stream_bytes
from support import Daemon, free_port, peak_rss_mib, rss_mib, wait_until, write_config

from headrace._limits import BodyClock, HttpLimits, LogThrottle

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 3.0
GRACE = 0.5
MIN_RATE = 1000.0
SMALL_LIMITS = {
    "max_connections": 4,
    "header_timeout_seconds": HEADER_TIMEOUT,
    "body_timeout_seconds": BODY_TIMEOUT,
    "min_body_rate_bytes_per_second": MIN_RATE,
    "min_body_rate_grace_seconds": GRACE,
}


# -- the timing core ---------------------------------------------------------------------------------


def test_body_clock_allows_the_grace_then_a_second_per_rate_bytes_up_to_the_overall_timeout() -> None:
    clock = BodyClock(timeout=10.0, min_rate=100.0, grace=1.0)
    assert clock.allowance() == pytest.approx(1.0)
    clock.note(0.5, 50)  # half a second for 50 bytes: 0.5 s more credit
    assert clock.allowance() == pytest.approx(1.0)
    clock.note(1.0, 0)
    assert clock.allowance() <= 0 and clock.reason() == "body_too_slow"
    fast = BodyClock(timeout=2.0, min_rate=100.0, grace=1.0)
    fast.note(0.1, 1 << 20)  # plenty of credit: the overall timeout bounds it
    assert fast.allowance() == pytest.approx(1.9)
    fast.note(1.9, 0)
    assert fast.reason() == "body_timeout"
    off = BodyClock.of(HttpLimits(min_body_rate_bytes_per_second=0, body_timeout_seconds=5))
    assert off.allowance() == pytest.approx(5.0)


def test_log_throttle_lets_one_line_a_second_through_per_key_and_counts_the_rest() -> None:
    t = LogThrottle(1.0)
    assert t.allow("a", 100.0) == 0
    assert t.allow("a", 100.5) is None and t.allow("a", 100.9) is None
    assert t.allow("b", 100.9) == 0  # keys are independent
    assert t.allow("a", 101.0) == 2


# -- raw-socket helpers ------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _status(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else 0


@dataclass
class Outcome:
    seconds: float  # from the first request byte (or connect) to the connection being closed
    response: bytes
    closed: bool

    @property
    def status(self) -> int:
        return _status(self.response)


def _trickle(sock: socket.socket, first: bytes, drip: bytes, interval: float, give_up: float) -> Outcome:
    """Send ``first``, then ``drip`` every ``interval`` s, until the peer answers and closes (or ``give_up`` s)."""
    started = time.monotonic()
    got = bytearray()
    closed = False
    sock.settimeout(interval)
    try:
        if first:
            sock.sendall(first)
        while time.monotonic() - started < give_up:
            try:
                part = sock.recv(65536)
                if not part:
                    closed = True
                    break
                got += part
                continue
            except TimeoutError:
                pass
            except OSError:
                closed = True
                break
            if drip and not got:
                with contextlib.suppress(OSError):  # closed: the next recv says so
                    sock.sendall(drip)
    finally:
        sock.close()
    return Outcome(time.monotonic() - started, bytes(got), closed)


def _in_thread(fn: Callable[[], Outcome]) -> Callable[[], Outcome]:
    box: list[Outcome] = []
    t = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    t.start()

    def result() -> Outcome:
        t.join(30)
        assert box, "the attacker thread did not finish"
        return box[0]

    return result


def _get(sock: socket.socket, path: str = "/healthz") -> bytes:
    """One keep-alive GET on ``sock``; the whole response (JSON bodies with Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    got = bytearray()
    sock.settimeout(10)
    while True:
        part = sock.recv(65536)
        if not part:
            break
        got += part
        head, sep, body = bytes(got).partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?i)content-length: (\d+)", head)
            if m and len(body) >= int(m.group(1)):
                break
    return bytes(got)


# -- the daemons ---------------------------------------------------------------------------------------


@dataclass
class Target:
    daemon: Daemon
    port: int
    body_path: str  # a POST endpoint that reads its body (None-reading daemons: any POST)
    reads_body: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start(kind: str, daemons: Callable[..., Daemon], tmp: Path, limits: dict[str, Any]) -> Target:
    port = free_port()
    listen = f"127.0.0.1:{port}"
    if kind == "collector":
        d, url, _ = start_collector(daemons, tmp, limits=limits)
        return Target(d, int(url.rsplit(":", 1)[1]), "/v1/chunks", True)
    if kind == "agent":
        dead = f"http://127.0.0.1:{free_port()}"
        cfg = {"name": "host-a", "collectors": [dead], "state_dir": str(tmp / "agent"), "listen": listen}
        path = write_config(tmp / "agent.yaml", {"agent": {**cfg, "limits": limits}})
        d = daemons(["agent", "--config", str(path)], "agent")
        body_path, reads = "/v1/log", True
    elif kind == "relay":
        db = tmp / "app.db"
        sqlite3.connect(db).close()
        relay = {"listen": listen, "source": f"sqlite:///{db}", "state_dir": str(tmp / "relay"), "limits": limits}
        relay["max_stream_requests"] = 2
        path = write_config(tmp / "relay.yaml", {"relay": relay})
        d = daemons(["relay", "--config", str(path)], "relay")
        body_path, reads = "/v1/ack", True
    else:
        boot = {
            "listen": listen,
            "relays": [f"http://127.0.0.1:{free_port()}"],
            "store": f"sqlite:///{tmp / 'boot.db'}",
            "limits": limits,
        }
        path = write_config(tmp / "boot.yaml", {"bootstrap": boot})
        d = daemons(["bootstrap", "--config", str(path)], "bootstrap")
        body_path, reads = "/v1/status", False  # no bootstrap endpoint takes a body: a POST is refused at once
    d.start()
    d.wait_http(f"http://127.0.0.1:{port}/healthz")
    return Target(d, port, body_path, reads)


@pytest.mark.parametrize("kind", ["collector", "agent", "relay", "bootstrap"])
def test_slow_headers_slow_bodies_and_connection_floods_are_cut_off(
    kind: str, daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    t = _start(kind, daemons, tmp_path, SMALL_LIMITS)
    head = f"POST {t.body_path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n".encode()
    attacks = {
        # connects and sends nothing
        "idle": _in_thread(lambda: _trickle(_connect(t.port), b"", b"", 0.1, 10)),
        # request line and headers, one byte every 0.1 s, never finished
        "slow headers": _in_thread(
            lambda: _trickle(_connect(t.port), b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"a", 0.1, 10)
        ),
        # a 60,000-byte body announced (under every size limit), then a byte every 0.2 s (5 B/s < 1000 B/s)
        "slow body": _in_thread(
            lambda: _trickle(_connect(t.port), head + b"Content-Length: 60000\r\n\r\n[", b" ", 0.2, 10)
        ),
        # the same, chunked
        "slow chunked body": _in_thread(
            lambda: _trickle(
                _connect(t.port), head + b"Transfer-Encoding: chunked\r\n\r\n1\r\n[\r\n", b"1\r\n \r\n", 0.2, 10
            )
        ),
    }
    got = {name: result() for name, result in attacks.items()}
    for name in ("idle", "slow headers"):
        o = got[name]
        assert o.closed and o.status == 408, (name, o)
        assert json.loads(o.response.partition(b"\r\n\r\n")[2])["error"] == "header_timeout"
        assert HEADER_TIMEOUT - 0.1 <= o.seconds < HEADER_TIMEOUT + 1.5, (name, o.seconds)
    for name in ("slow body", "slow chunked body"):
        o = got[name]
        assert o.closed, (name, o)
        if t.reads_body:
            assert o.status == 408, (name, o)
            assert json.loads(o.response.partition(b"\r\n\r\n")[2])["error"] == "body_too_slow"
            assert GRACE - 0.1 <= o.seconds < GRACE + 1.5, (name, o.seconds)
        else:  # answered before the body was read: the connection is closed, not left to trickle
            assert 400 <= o.status < 500 and o.seconds < 1.0, (name, o)

    # headers larger than max_header_bytes (64 KiB by default): 431 and closed
    big = _trickle(_connect(t.port), b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (1 << 20), b"", 0.5, 10)
    assert big.status == 431 and big.closed, big

    # connection cap: four kept-alive connections are served, the fifth gets 503 and is closed
    held = [_connect(t.port) for _ in range(4)]
    try:
        for s in held:
            assert _status(_get(s)) == 200
        flood = [_connect(t.port) for _ in range(50)]
        answers = [_get(s) for s in flood]
        for s in flood:
            s.close()
        assert all(_status(a) == 503 for a in answers), {_status(a) for a in answers}
        assert all(b"connection: close" in a.lower() for a in answers)
    finally:
        for s in held:
            s.close()
    wait_until(lambda: httpx.get(t.url + "/healthz", timeout=5).status_code == 200, 10, "service after the flood")
    metrics = httpx.get(t.url + "/metrics", timeout=5).text
    assert t.daemon.alive()
    # 50 refusals, logged at most once a second with a count of the ones not logged
    log_lines = [json.loads(x) for x in t.daemon.output().splitlines() if x.startswith("{")]
    refusals = [x for x in log_lines if x.get("reason") == "too_many_connections"]
    assert 1 <= len(refusals) <= 3 and sum(1 + x["suppressed_since_last"] for x in refusals) <= 50, refusals
    assert not [x for x in log_lines if "Exceeded concurrency limit" in str(x.get("event"))]
    for limit in ("header_timeout", "headers_too_large", "too_many_connections"):
        assert re.search(rf'headrace_http_limit_hits_total{{limit="{limit}"}} [1-9]', metrics), limit
    if t.reads_body:
        assert re.search(r'headrace_http_limit_hits_total{limit="body_too_slow"} 2\.0', metrics), metrics


# -- slowloris against a collector while an agent ships -----------------------------------------------


class Slowloris(threading.Thread):
    """One attacker: announces a 64 MiB batch, trickles a byte every ``interval`` s, reconnects when cut."""

    def __init__(self, port: int, stop: threading.Event, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.interval = port, stop, interval
        self.cuts: list[Outcome] = []
        self.connected = threading.Event()

    def run(self) -> None:
        head = (
            b"POST /v1/chunks HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-headrace-batch\r\n"
            b"Content-Length: 67108864\r\n\r\n"
        )
        while not self.stop.is_set():
            sock = _connect(self.port)
            self.connected.set()
            outcome = _trickle(sock, head, b"\x00", self.interval, 30)
            if not self.stop.is_set():
                self.cuts.append(outcome)


@pytest.fixture
def agent_factory(tmp_path: Path, daemons: Callable[..., Daemon]) -> Iterator[Callable[[str], tuple[Daemon, str]]]:
    def make(collector: str) -> tuple[Daemon, str]:
        port = free_port()
        cfg = {
            "name": "host-a",
            "collectors": [collector],
            "state_dir": str(tmp_path / "agent"),
            "listen": f"127.0.0.1:{port}",
            "max_backoff_seconds": 0.2,
        }
        path = write_config(tmp_path / "agent.yaml", {"agent": cfg})
        d = daemons(["agent", "--config", str(path)], "agent").start()
        url = f"http://127.0.0.1:{port}"
        d.wait_http(url + "/healthz")
        return d, url

    yield make


def _api_acked(agent_url: str) -> int:
    for s in httpx.get(agent_url + "/v1/status", timeout=5).json()["streams"]:
        if s["stream"] == "_api/app":
            return int(s["acked_offset"])
    return 0


def test_slowloris_on_a_collector_does_not_stop_an_agent_shipping(
    daemons: Callable[..., Daemon], tmp_path: Path, agent_factory: Callable[[str], tuple[Daemon, str]]
) -> None:
    """The issue's attack: eight connections announce 64 MiB each (8 x 64 MiB = the default 512 MiB
    in-flight cap) and trickle. The collector reserves bytes as they arrive and cuts each attacker at
    the minimum rate; the agent's batches keep being acked meanwhile."""
    limits = {**SMALL_LIMITS, "max_connections": 64}
    col, col_url, sink = start_collector(daemons, tmp_path, limits=limits)
    port = int(col_url.rsplit(":", 1)[1])
    stop = threading.Event()
    attackers = [Slowloris(port, stop) for _ in range(8)]
    for a in attackers:
        a.start()
    for a in attackers:
        assert a.connected.wait(10)
    time.sleep(0.3)  # the announcements are in; the attackers now hold their connections

    agent, agent_url = agent_factory(col_url)
    expected = bytearray()
    latencies: list[float] = []
    try:
        for i in range(25):  # ~5 s of shipping, through several rounds of attackers being cut and reconnecting
            records = [f"post {i:03d} record {j:03d}" for j in range(40)]
            r = httpx.post(agent_url + "/v1/log", json={"data_type": "app", "records": records}, timeout=10)
            assert r.status_code == 200, r.text
            expected += "".join(r + "\n" for r in records).encode()
            posted = time.monotonic()
            want = len(expected)
            wait_until(lambda w=want: _api_acked(agent_url) >= w, 10, f"post {i} acked", interval=0.01)
            latencies.append(time.monotonic() - posted)
            time.sleep(0.1)
    finally:
        stop.set()
        for a in attackers:
            a.join(15)
    cuts = [c for a in attackers for c in a.cuts]
    metrics = httpx.get(col_url + "/metrics", timeout=5).text
    col.stop()
    print(
        f"agent ack latency under slowloris: median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms; {len(cuts)} attacker connections cut after "
        f"{min(c.seconds for c in cuts):.2f}-{max(c.seconds for c in cuts):.2f} s"
    )
    assert max(latencies) < 3.0, latencies
    assert len(cuts) >= 16  # every attacker was cut at least twice during the run
    for c in cuts:
        assert c.closed and c.status == 408, c
        assert GRACE - 0.1 <= c.seconds < GRACE + 1.5, c.seconds
    assert 'reason="overloaded"' not in metrics  # no batch was refused for in-flight bytes
    got = b"".join(data for _, _, data in sorted(stream_bytes(sink)["_api/app"]))
    assert got == bytes(expected)
    assert agent.alive()


def test_collector_reserves_in_flight_bytes_as_they_arrive_not_as_announced(
    daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Announcements reserve nothing (eight 64 MiB announcements do not fill the 512 MiB cap); bytes
    really held still count, and are released when their request ends."""
    from collector_helpers import make_chunk, post

    limits = {"body_timeout_seconds": 60, "min_body_rate_bytes_per_second": 0, "max_connections": 64}
    _, url, _ = start_collector(daemons, tmp_path, limits=limits, max_inflight_bytes=2 << 20)
    port = int(url.rsplit(":", 1)[1])
    head = b"POST /v1/chunks HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-headrace-batch\r\n"
    announcers = [_connect(port) for _ in range(8)]
    for s in announcers:
        s.sendall(head + b"Content-Length: 67108864\r\n\r\n\x00")
    time.sleep(0.3)  # the collector has taken the announcements in
    assert post(url, [make_chunk("s", 0, 100)]).status_code == 200
    # one request really holding 1.5 MiB of a 2 MiB cap: a 1 MiB batch does not fit
    holder = _connect(port)
    holder.sendall(head + b"Content-Length: 3145728\r\n\r\n" + b"\x00" * (3 << 19))
    batch = [make_chunk("s", 3200, 32 << 10)]  # 1 MiB of lines
    wait_until(lambda: post(url, batch).status_code == 503, 10, "the held bytes to count")
    holder.close()
    wait_until(lambda: post(url, batch).status_code == 200, 10, "the held bytes to be released")
    for s in announcers:
        s.close()


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_relay_ack_body_is_read_only_up_to_its_limit(
    framing: str, daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    """``POST /v1/ack`` used to read any body whole (``request.json()``): 200 MiB took the relay's RSS up
    by hundreds of MiB. Now it is refused 413 after 64 KiB, with the peak RSS (VmHWM) bounded."""
    t = _start("relay", daemons, tmp_path, {})
    assert t.daemon.proc is not None
    pid = t.daemon.proc.pid
    base = rss_mib(pid)
    head = b"POST /v1/ack HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    block = b'{"consumer": "' + b"x" * ((1 << 20) - 14)
    n = 200
    if framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n"
        parts: Iterator[bytes] = (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(n))
    else:
        head += b"Content-Length: %d\r\n\r\n" % (n * len(block))
        parts = (block for _ in range(n))
    sock = _connect(t.port)
    stop = threading.Event()

    def send() -> None:
        with contextlib.suppress(OSError):  # the relay answered and closed
            sock.sendall(head)
            for part in parts:
                if stop.is_set():
                    return
                sock.sendall(part)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    outcome = _trickle(sock, b"", b"", 0.5, 20)
    stop.set()
    sender.join(10)
    assert outcome.status == 413 and outcome.closed, outcome
    assert json.loads(outcome.response.partition(b"\r\n\r\n")[2])["error"] == "too_large"
    peak = peak_rss_mib(pid)
    print(f"relay /v1/ack, 200 MiB {framing} body: RSS {base:.0f} MiB before, peak (VmHWM) {peak:.0f} MiB")
    assert peak < base + 40, (base, peak)
    ack = httpx.post(t.url + "/v1/ack", json={"consumer": "nobody", "scn": 1}, timeout=5)
    assert ack.status_code == 400 and ack.json()["error"] == "unknown_consumer"  # still answering, same rules


def test_one_client_address_cannot_take_every_connection(daemons: Callable[..., Daemon], tmp_path: Path) -> None:
    """With ``max_connections_per_client: 3``, a fourth connection from 127.0.0.1 is refused at once
    (503, closed) while another address (127.0.0.2) is still served."""
    limits = {**SMALL_LIMITS, "max_connections": 64, "max_connections_per_client": 3}
    d, url, _ = start_collector(daemons, tmp_path, limits=limits)
    port = int(url.rsplit(":", 1)[1])
    upgrade = b"GET /v1/status HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    upgrade += b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    for _ in range(5):  # upgraded connections leave the HTTP protocol: they must not stay counted
        refused = _trickle(_connect(port), upgrade, b"", 0.1, 5)
        assert refused.status == 403 and refused.closed, refused
    time.sleep(0.2)
    held = [_connect(port) for _ in range(3)]
    try:
        for s in held:
            assert _status(_get(s)) == 200
        extra = _trickle(_connect(port), b"", b"", 0.1, 5)
        assert extra.status == 503 and extra.closed and extra.seconds < 0.5, extra
        assert json.loads(extra.response.partition(b"\r\n\r\n")[2])["error"] == "too_many_client_connections"
        other = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        with other:
            assert _status(_get(other)) == 200
    finally:
        for s in held:
            s.close()
    wait_until(lambda: httpx.get(url + "/healthz", timeout=5).status_code == 200, 10, "127.0.0.1 served again")
    assert d.alive()


def test_limits_section_on_every_daemon_with_environment_overrides_and_the_relay_check(tmp_path: Path) -> None:
    from headrace._config import load_section
    from headrace.agents._config import AgentConfig
    from headrace.bootstrap._config import BootstrapConfig
    from headrace.collectors._config import CollectorConfig
    from headrace.errors import ConfigError
    from headrace.relay._config import RelayConfig

    path = write_config(tmp_path / "c.yaml", {"collector": {"limits": {"max_connections": 10}}})
    env = {"HEADRACE_COLLECTOR__LIMITS__BODY_TIMEOUT_SECONDS": "7.5"}
    cfg = load_section(path, "collector", CollectorConfig, environ=env)
    assert (cfg.limits.max_connections, cfg.limits.body_timeout_seconds) == (10, 7.5)
    for section, model in (("agent", AgentConfig), ("relay", RelayConfig), ("bootstrap", BootstrapConfig)):
        assert load_section(None, section, model, environ={}).limits == HttpLimits()
    bad = write_config(tmp_path / "b.yaml", {"collector": {"limits": {"max_conections": 10}}})
    with pytest.raises(ConfigError, match=r"collector\.limits\.max_conections: unknown key"):
        load_section(bad, "collector", CollectorConfig, environ={})
    relay = write_config(tmp_path / "r.yaml", {"relay": {"max_stream_requests": 3000}})
    with pytest.raises(ConfigError, match=r"limits\.max_connections"):
        load_section(relay, "relay", RelayConfig, environ={})


def _send_fast(port: int, head: bytes, parts: Iterator[bytes]) -> Outcome:
    """Send ``head`` and ``parts`` as fast as the peer takes them; the answer and whether it closed."""
    sock = _connect(port)
    stop = threading.Event()

    def send() -> None:
        with contextlib.suppress(OSError):  # answered and closed
            sock.sendall(head)
            for part in parts:
                if stop.is_set():
                    return
                sock.sendall(part)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return _trickle(sock, b"", b"", 0.5, 20)
    finally:
        stop.set()
        sender.join(10)


def test_chunk_framing_and_trailers_are_bounded(daemons: Callable[..., Daemon], tmp_path: Path) -> None:
    """httptools buffers every header line whole and uvicorn adds trailers to the request's headers:
    200 MB of trailers after a chunked body took a collector to 280 MiB. Now what a body brings besides
    its bytes is bounded by max_header_bytes (plus 32 bytes a chunk), while small chunks still work."""
    from collector_helpers import make_chunk

    from headrace._chunk import encode_batch

    d, url, _ = start_collector(daemons, tmp_path, limits={"max_connections": 64})
    port = int(url.rsplit(":", 1)[1])
    assert d.proc is not None
    base = rss_mib(d.proc.pid)
    head = b"POST /v1/chunks HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-headrace-batch\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"

    # a valid batch in 16-byte chunks (6 bytes of framing each: 3x the 64 KiB for a 170 KiB body) is accepted
    body = encode_batch([make_chunk("s", 0, 5000)])
    pieces = [body[i : i + 16] for i in range(0, len(body), 16)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    ok = _send_fast(port, head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), iter([framed]))
    assert ok.status == 200, ok

    line = b"X-T: " + b"a" * 1000 + b"\r\n"
    trailers = _send_fast(port, head + b"1\r\nx\r\n0\r\n", (line for _ in range(200_000)))
    # (the 431 is written before the close; a reset for the unread rest may still beat it to the client)
    assert trailers.closed and trailers.status in (0, 431) and trailers.seconds < 5, trailers
    one_line = _send_fast(port, head + b"1\r\nx\r\n0\r\nX-T: ", (b"a" * 65536 for _ in range(3000)))
    assert one_line.closed and one_line.status in (0, 431) and one_line.seconds < 5, one_line
    extension = _send_fast(port, head + b"1;e=", (b"a" * 65536 for _ in range(3000)))
    assert extension.closed and extension.status in (400, 431), extension  # llhttp or the framing bound
    peak = peak_rss_mib(d.proc.pid)
    print(f"collector, 200 MB of trailers, a 200 MB trailer line, a chunk extension: RSS {base:.0f} -> {peak:.0f} MiB")
    assert peak < base + 40, (base, peak)
    assert d.alive()
    metrics = httpx.get(url + "/metrics", timeout=5).text
    assert re.search(r'headrace_http_limit_hits_total{limit="trailers_too_large"} [23]\.0', metrics), metrics
