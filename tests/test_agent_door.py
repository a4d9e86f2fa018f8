"""The agent's doors (issue 11): one bad request, record or file never stops the agent or loses acked data.

Real agent processes on real sockets, shipping to the test sink (tests/agent_testsink.py), which
decodes batches with the collector's own decoder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_testsink import TestSink
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Daemon, free_port, peak_rss_mib, rss_mib, wait_until, write_config

from headrace._chunk import Chunk
from headrace._spool import Spool
from headrace.agents._checkpoint import Cursor
from headrace.agents._discover import stream_name


@pytest.fixture
def sink() -> Iterator[TestSink]:
    s = TestSink().start()
    yield s
    s.stop()


class Agent:
    def __init__(self, daemon: Daemon, port: int, state: Path, headers: dict[str, str] | None = None) -> None:
        self.d = daemon
        self.headers = headers or {}  # the bearer token, when the agent has tokens
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.state = state

    def start(self) -> Agent:
        self.d.start()
        self.d.wait_http(self.url + "/healthz")
        return self

    @property
    def pid(self) -> int:
        assert self.d.proc is not None
        return self.d.proc.pid

    def post(self, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + "/v1/log", content=json.dumps(body), timeout=10, headers=self.headers, **kw)

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/v1/status", timeout=5, headers=self.headers).json()  # type: ignore[no-any-return]


@pytest.fixture
def make_agent(tmp_path: Path, daemons: Callable[..., Daemon]) -> Callable[..., Agent]:
    def make(collectors: list[str], sources: list[dict[str, Any]] | None = None, **extra: Any) -> Agent:
        port = free_port()
        state = tmp_path / "state"
        cfg = {
            "name": "host-a",
            "collectors": collectors,
            "state_dir": str(state),
            "listen": f"127.0.0.1:{port}",
            "sources": sources or [],
            "rotate_wait_seconds": 0.2,
            "partial_line_seconds": 0.5,
            "max_backoff_seconds": 0.2,
            **extra,
        }
        path = write_config(tmp_path / "agent.yaml", {"agent": cfg})
        tokens = extra.get("tokens")
        headers = {"authorization": f"Bearer {tokens[0]}"} if tokens and isinstance(tokens[0], str) else None
        return Agent(daemons(["agent", "--config", str(path)], "agent"), port, state, headers)

    return make


def healthz(agent: Agent) -> httpx.Response:
    return httpx.get(agent.url + "/healthz", timeout=5)


def test_bad_tags_refused_at_the_door_and_no_acked_record_lost_after_kill9(
    sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    # 150 fsynced requests may take over a minute on a loaded machine: no "collector unreachable" meanwhile
    agent = make_agent([sink.url], unreachable_after_seconds=3600).start()
    sink.fail_with = 503  # the collector is down: everything acked stays in the agent's spool
    expect = b""
    for i in range(50):
        assert agent.post({"data_type": "app", "records": [f"before {i}"]}).status_code == 200
        expect += b"before %d\n" % i
    for tags, what in [({"k": "a\x00b"}, "NUL in a value"), ({"a\x00": "v"}, "NUL in a key")]:
        r = agent.post({"data_type": "app", "records": ["poison"], "tags": tags})
        assert r.status_code == 400 and r.json()["error"] == "bad_tags", what
    r = agent.post({"data_type": "app", "records": ["poison"], "tags": {f"k{i}": "v" for i in range(65)}})
    assert r.status_code == 400 and r.json()["error"] == "bad_tags"
    r = httpx.post(agent.url + "/v1/log", content=b'{"data_type": "app", "records": ["\\ud800"]}', timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "bad_record"
    for i in range(100):
        r = agent.post({"data_type": "app", "records": [f"after {i}"], "tags": {f"k{j}": "v" for j in range(64)}})
        assert r.status_code == 200
        expect += b"after %d\n" % i
    assert healthz(agent).status_code == 200, healthz(agent).text
    agent.d.kill9()
    sink.fail_with = None
    agent.start()
    wait_until(lambda: sink.data_by_stream().get("_api/app") == expect, 30, "every acked record delivered")
    assert b"poison" not in b"".join(c.data for c in sink.chunks)
    assert healthz(agent).status_code == 200
    assert not (agent.state / "rejected").exists()
    assert "spool_torn_tail_cut" not in agent.d.output()


def test_a_poison_record_already_in_the_spool_is_moved_aside_not_fatal(
    sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    """A record that fails the collector's rules after it was spooled (an older agent's spool):
    dead-lettered with a log line, the records around it delivered, the shipper alive."""
    agent = make_agent([sink.url])
    spool = Spool(agent.state / "spool")
    data = b""
    for i in range(30):
        line = b"line %d\n" % i
        tags = {"k": "bad\x00"} if i == 10 else {}
        chunk = Chunk("host-a", "_api/app", "app", len(data), len(data) + len(line), line, tags)
        spool.append(chunk, Cursor(chunk.seq_end).encode())
        data += line
    spool.sync()
    spool.close()
    agent.start()
    good = data.replace(b"line 10\n", b"")
    wait_until(lambda: sum(len(c.data) for c in sink.chunks) == len(good), 30, "the valid chunks delivered")
    assert b"".join(c.data for c in sorted(sink.chunks, key=lambda c: c.seq_start)) == good
    dead = list((agent.state / "rejected").glob("*.invalid.batch"))
    assert len(dead) == 1 and b"line 10" in dead[0].read_bytes()
    assert "ship_dead_lettered" in agent.d.output() and dead[0].name in agent.d.output()
    assert 'headrace_ship_dead_letters_total{reason="bad_tags"} 1.0' in httpx.get(agent.url + "/metrics").text
    assert healthz(agent).status_code == 200
    r = agent.post({"data_type": "app", "records": ["later"]})  # the shipper still ships
    assert r.status_code == 200
    wait_until(lambda: any(c.data == b"later\n" for c in sink.chunks), 20, "a later record delivered")


def test_spool_keeps_records_after_an_unreadable_one(tmp_path: Path) -> None:
    """A CRC-valid record the spool cannot read back is moved to dead/, never cut with everything after it."""
    spool = Spool(tmp_path / "spool")
    for i in range(5):
        spool.append(Chunk("h", "s", "t", i, i + 1, b"x", {}), Cursor(i + 1).encode())
    spool.sync()
    spool.close()
    seg = next((tmp_path / "spool").glob("*.open"))
    raw = bytearray(seg.read_bytes())
    # Rewrite the 3rd record's payload so that its header is not JSON, with a matching CRC.
    import struct
    import zlib

    pos = 0
    for _ in range(2):
        (length,) = struct.unpack_from(">I", raw, pos)
        pos += 8 + length
    (length,) = struct.unpack_from(">I", raw, pos)
    payload = bytearray(raw[pos + 8 : pos + 8 + length])
    i = payload.index(b'{"source"')
    payload[i] = ord("!")
    raw[pos + 4 : pos + 8] = struct.pack(">I", zlib.crc32(payload))
    raw[pos + 8 : pos + 8 + length] = payload
    seg.write_bytes(bytes(raw))
    spool = Spool(tmp_path / "spool")
    assert [e.chunk.seq_end for e in spool.peek()] == [1, 2, 4, 5]
    assert len(list((tmp_path / "spool" / "dead").glob("*.record"))) == 1
    spool.close()


def _long_path(root: Path) -> Path:
    """A path over 1,000 characters whose last 1,000 (as a stream name) start inside ``_-…``."""
    part = "-" + "a" * 98
    for pad in range(1, 150):
        path = root / "/".join([part] * 11) / ("f" * pad + ".log")
        old = "/".join(("_" + p if p[:1] in ".-=@+" else p) for p in str(path).lstrip("/").split("/"))
        if old[-1000:].lstrip("/")[:1] == "-":
            return path
    raise AssertionError("no padding found")


def test_long_path_is_tailed_under_a_valid_stream_name(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    path = _long_path(tmp_path / "logs")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"deep 1\ndeep 2\n")
    other = tmp_path / "logs" / "short.log"
    other.write_bytes(b"short\n")
    agent = make_agent([sink.url], [{"path": str(tmp_path / "logs" / "**" / "*.log"), "data_type": "app"}]).start()
    wait_until(lambda: sink.data_by_stream().get(stream_name(str(path))) == b"deep 1\ndeep 2\n", 20, "deep file")
    wait_until(lambda: sink.data_by_stream().get(stream_name(str(other))) == b"short\n", 20, "short file")
    assert healthz(agent).status_code == 200


def test_a_source_whose_chunks_cannot_be_valid_is_refused_when_added_or_found(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    bad = tmp_path / "bad.log"
    good = tmp_path / "good.log"
    bad.write_bytes(b"never\n")
    good.write_bytes(b"fine\n")
    sources = [
        {"path": str(bad), "data_type": "app", "tags": {"k": "a\x00"}},
        {"path": str(good), "data_type": "app"},
    ]
    agent = make_agent([sink.url], sources, tokens=["full-access"]).start()  # the control API needs a token
    wait_until(lambda: sink.data_by_stream().get(stream_name(str(good))) == b"fine\n", 20, "the good file")
    entry = wait_until(
        lambda: next((s for s in agent.status()["streams"] if s["path"] == str(bad) and s.get("refused")), None),
        10,
        "a status entry for the refused file",
    )
    assert entry["refused"].startswith("bad_tags")
    assert "file_refused" in agent.d.output()
    assert stream_name(str(bad)) not in sink.data_by_stream()
    assert healthz(agent).status_code == 200
    r = httpx.post(
        agent.url + "/v1/sources",
        json={"path": str(bad), "data_type": "x", "tags": {"k": "a\x00"}},
        headers=agent.headers,
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_tags"


def test_a_dead_shipper_turns_healthz_503_with_its_reason(sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    """A real fault: the checkpoint file can no longer be written, so the shipper stops (it never
    acks what it cannot record) and its thread ends; /healthz must stop saying ok."""
    agent = make_agent([sink.url]).start()
    assert agent.post({"data_type": "app", "records": ["one"]}).status_code == 200
    wait_until(lambda: sink.data_by_stream().get("_api/app") == b"one\n", 20, "first record")
    blocker = agent.state / f".checkpoints.json.tmp-{agent.pid}"  # write_atomic's temp name, now a folder

    def block() -> bool:  # the ack of "one" may still be being recorded (its temp file there): try again
        try:
            blocker.mkdir()
        except FileExistsError:
            return False
        return True

    wait_until(block, 10, "the checkpoint temp name to be free")
    assert agent.post({"data_type": "app", "records": ["two"]}).status_code == 200
    r = wait_until(lambda: (r := healthz(agent)).status_code == 503 and r, 20, "healthz 503")
    assert "agent-shipper" in r.json()["detail"] and "could not record an ack" in r.json()["detail"]
    assert "worker_died" in agent.d.output()  # restarts and the exit rule: tests/test_supervise.py


def _stream_body(port: int, head: bytes, chunks: Iterator[bytes]) -> tuple[bytes, float]:
    """Send ``head`` then ``chunks`` on one socket while reading; return (response head, seconds to it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    started = time.monotonic()
    got = bytearray()
    stop = threading.Event()

    def send() -> None:
        try:
            sock.sendall(head)
            for part in chunks:
                if stop.is_set():
                    return
                sock.sendall(part)
        except OSError:
            pass  # the agent answered and closed: expected

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        while b"\r\n\r\n" not in got:
            part = sock.recv(65536)
            if not part:
                break
            got += part
        return bytes(got), time.monotonic() - started
    finally:
        stop.set()
        sock.close()
        t.join(10)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_oversized_log_api_body_is_refused_while_streaming_with_rss_bounded(
    sink: TestSink, make_agent: Callable[..., Agent], framing: str
) -> None:
    agent = make_agent([sink.url]).start()
    before = rss_mib(agent.pid)
    peak = [before]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak[0] = max(peak[0], rss_mib(agent.pid))
            time.sleep(0.01)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    total = 200 << 20
    block = b'{"data_type": "app", "records": ["' + b"x" * ((1 << 20) - 40)
    start = b"POST /v1/log HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        head = start + b"Transfer-Encoding: chunked\r\n\r\n"
        parts = (b"%x\r\n%s\r\n" % (len(block), block) for _ in range(total // len(block)))
    else:
        head = start + b"Content-Length: %d\r\n\r\n" % total
        parts = (block for _ in range(total // len(block)))
    resp, seconds = _stream_body(agent.port, head, parts)
    watching.set()
    w.join(5)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    assert seconds < 10
    assert peak[0] - before < 40, f"RSS grew from {before:.0f} to {peak[0]:.0f} MiB"
    hwm = peak_rss_mib(agent.pid)  # the kernel's own peak, so no sampling gap can hide a spike
    print(f"{framing}: 200 MiB body, agent RSS {before:.0f} MiB before, peak (VmHWM) {hwm:.0f} MiB")
    assert hwm < 150, f"the agent's peak RSS reached {hwm:.0f} MiB"
    assert agent.d.alive() and healthz(agent).status_code == 200
    assert agent.post({"data_type": "app", "records": ["after"]}).status_code == 200
    wait_until(lambda: sink.data_by_stream().get("_api/app") == b"after\n", 20, "a later record delivered")
    assert agent.status()["spool"]["chunks"] in (0, 1)
    assert os.path.exists(agent.state / "spool")


# -- fuzzing the Log API ------------------------------------------------------------------------------

_ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates and NUL included
_TEXT = st.text(_ANY_CHAR, max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "data_type": st.sampled_from(["app", "web", "a.b-c"]) | _TEXT | _JSON,
        "records": st.lists(_TEXT, max_size=4) | _JSON,
        "tags": st.dictionaries(_TEXT, _TEXT, max_size=3)
        | st.dictionaries(st.text(max_size=4), st.just("v"), min_size=60, max_size=70)
        | _JSON,
    },
)
_REQUEST = st.one_of(
    _BODY.map(lambda o: json.dumps(o).encode()),
    st.binary(max_size=100),
    st.builds(lambda o, cut: json.dumps(o).encode()[:cut], _BODY, st.integers(0, 60)),
)


def _fuzz_log_api(agent: Agent, sink: TestSink, seconds: float, at_least: int) -> int:
    """Fuzz ``POST /v1/log`` for about ``seconds``; return how many requests were sent."""
    client = httpx.Client(timeout=10)
    expect: dict[str, bytes] = {}
    sent = [0]

    def one(body: bytes) -> None:
        r = client.post(agent.url + "/v1/log", content=body)
        sent[0] += 1
        assert r.status_code < 500, (body, r.status_code, r.text)
        if r.status_code == 200:
            obj = json.loads(body)
            lines = b"".join(x.encode() + (b"" if x.endswith("\n") else b"\n") for x in obj["records"])
            assert r.json() == {"accepted": len(obj["records"])}
            if lines:
                name = "_api/" + obj["data_type"]
                expect[name] = expect.get(name, b"") + lines
        else:
            assert r.json()["error"], r.text

    def valid(n: int) -> None:
        r = client.post(agent.url + "/v1/log", json={"data_type": "valid", "records": [f"v{n}"]})
        sent[0] += 1
        assert r.status_code == 200
        expect["_api/valid"] = expect.get("_api/valid", b"") + b"v%d\n" % n

    def run(examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        )
        @given(st.lists(_REQUEST, min_size=1, max_size=4))
        def case(bodies: list[bytes]) -> None:
            for body in bodies:
                one(body)
            valid(sent[0])

        case()

    started = time.monotonic()
    run(50)
    rate = sent[0] / max(time.monotonic() - started, 1e-3)  # requests per second, ~3.5 per example
    examples = max(int((seconds - (time.monotonic() - started)) * rate / 3.5), 1, (at_least - sent[0]) // 3)
    print(f"rate {rate:.0f}/s, {examples} examples")
    run(examples)
    assert agent.d.alive() and healthz(agent).status_code == 200
    wait_until(lambda: sink.data_by_stream() == expect, 60, "exactly the accepted records, once each")
    client.close()
    return sent[0]


def test_fuzz_log_api(sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    agent = make_agent([sink.url]).start()
    n = _fuzz_log_api(agent, sink, seconds=30, at_least=10_000)
    print(f"fuzzed POST /v1/log with {n} requests")
    assert n >= 10_000


@pytest.mark.slow
def test_fuzz_log_api_long(sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    agent = make_agent([sink.url]).start()
    n = _fuzz_log_api(agent, sink, seconds=300, at_least=20_000)
    print(f"fuzzed POST /v1/log with {n} requests")
    assert n >= 20_000
