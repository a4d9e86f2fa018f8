"""The agent daemon as a real process: rotation, truncation, deletion, kill -9, backpressure, control API.

A small real HTTP receiver (tests/agent_testsink.py) stands in for the collector, on a real socket.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_testsink import TestSink
from support import Daemon, free_port, mapped_packages, rss_mib, wait_until, write_config


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
        self.state = state

    def start(self) -> Agent:
        self.d.start()
        self.d.wait_http(self.url + "/healthz")
        return self

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/v1/status", timeout=5, headers=self.headers).json()  # type: ignore[no-any-return]

    def stream(self, path: Path) -> dict[str, Any] | None:
        for s in self.status()["streams"]:
            if s["path"] == str(path):
                return s  # type: ignore[no-any-return]
        return None

    def caught_up(self, path: Path) -> bool:
        s = self.stream(path)
        return s is not None and s["lag_bytes"] == 0 and s["acked_offset"] == s["read_offset"]


@pytest.fixture
def make_agent(tmp_path: Path, daemons: Callable[..., Daemon]) -> Callable[..., Agent]:
    def make(collectors: list[str], sources: list[dict[str, Any]], **extra: Any) -> Agent:
        port = free_port()
        state = tmp_path / "state"
        cfg = {
            "name": "host-a",
            "collectors": collectors,
            "state_dir": str(state),
            "listen": f"127.0.0.1:{port}",
            "sources": sources,
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


def lines(tag: str, start: int, stop: int) -> bytes:
    return b"".join(b"%s %08d %s\n" % (tag.encode(), i, b"x" * (i % 37)) for i in range(start, stop))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def stream_of(path: Path) -> str:
    return str(path).lstrip("/")


def test_rotation_truncation_deletion_recreation(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    a, b = logs / "a.log", logs / "b.log"
    expect_a = lines("a", 0, 2000)
    append(a, expect_a)
    agent = make_agent([sink.url], [{"path": str(logs / "*.log"), "data_type": "app", "tags": {"env": "t"}}]).start()
    wait_until(lambda: agent.caught_up(a), 20, "a.log shipped")

    # rename rotation: late writes into the renamed file come before the new file's lines
    os.rename(a, logs / "a.log.1")
    append(logs / "a.log.1", lines("a", 2000, 2100))
    append(a, lines("a", 2100, 3000))
    expect_a += lines("a", 2000, 3000)
    wait_until(lambda: sink.data_by_stream().get(stream_of(a)) == expect_a, 20, "rotated stream delivered")

    # copytruncate: copy, truncate, keep writing; acked bytes are not sent again
    shutil.copy(a, logs / "a.log.2")
    with open(a, "r+b") as f:
        f.truncate(0)
    wait_until(lambda: agent.stream(a)["file_size"] == 0, 20, "truncation seen")  # type: ignore[index]
    append(a, lines("a", 3000, 3500))
    expect_a += lines("a", 3000, 3500)

    # deletion: written, then deleted while the agent holds it: read to its end
    append(b, lines("b", 0, 100))
    wait_until(lambda: agent.stream(b) is not None and agent.stream(b)["read_offset"] > 0, 20, "b.log found")  # type: ignore[index]
    append(b, lines("b", 100, 5000))
    b.unlink()
    # recreated under the same name: a new file of the same stream
    wait_until(lambda: agent.stream(b)["files_open"] == 0, 20, "deleted b.log released")  # type: ignore[index]
    append(b, lines("b", 5000, 6000))
    expect_b = lines("b", 0, 6000)

    wait_until(lambda: sink.data_by_stream().get(stream_of(a)) == expect_a, 20, "a after truncation")
    wait_until(lambda: sink.data_by_stream().get(stream_of(b)) == expect_b, 20, "b after deletion and re-creation")
    assert {c.data_type for c in sink.chunks} == {"app"} and all(c.tags == {"env": "t"} for c in sink.chunks)
    assert all(c.source == "host-a" for c in sink.chunks)
    assert sink.duplicates == 0

    # SIGTERM: clean exit, checkpoints saved; a restart sends nothing again and picks up new lines
    assert agent.d.stop() == 0
    agent.start()
    append(a, lines("a", 3500, 3600))
    expect_a += lines("a", 3500, 3600)
    wait_until(lambda: sink.data_by_stream().get(stream_of(a)) == expect_a, 20, "new lines after restart")
    assert sink.duplicates == 0
    assert sink.data_by_stream()[stream_of(b)] == expect_b


def test_kill9_at_random_moments_resumes_exactly(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    files = [logs / f"f{i}.log" for i in range(4)]
    agent = make_agent([sink.url], [{"path": str(logs / "*.log"), "data_type": "app"}], read_block_bytes=65536)
    agent.start()
    rng = random.Random(7)
    expect = {f: b"" for f in files}
    n = 0
    for round_ in range(4):
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        rotate_at = time.monotonic() + rng.uniform(0.0, 0.5)
        while time.monotonic() < deadline:
            f = rng.choice(files)
            data = lines(f.stem, n, n + 200)
            n += 200
            append(f, data)
            expect[f] += data
            if time.monotonic() > rotate_at:  # one rename rotation per round, writing goes on
                os.rename(f, f.with_suffix(f".log.{round_}"))
                rotate_at = float("inf")
            time.sleep(0.001)
        agent.d.kill9()
        append(files[0], lines("f0", n, n + 10))  # written while the agent is down
        expect[files[0]] += lines("f0", n, n + 10)
        n += 10
        agent.start()
    for f in files:
        try:
            wait_until(lambda f=f: sink.data_by_stream().get(stream_of(f)) == expect[f], 30, f"{f.name} exactly once")
        except AssertionError as exc:
            got = sink.data_by_stream().get(stream_of(f), b"")
            gl, el = got.splitlines(), expect[f].splitlines()
            i = next((k for k in range(min(len(gl), len(el))) if gl[k] != el[k]), min(len(gl), len(el)))
            raise AssertionError(
                f"{f.name}: {len(gl)} lines arrived, {len(el)} expected; first difference at line {i}: "
                f"got {gl[max(0, i - 2) : i + 3]}, expected {el[max(0, i - 2) : i + 3]}"
            ) from exc


def test_collector_down_spool_stays_under_cap_then_delivers(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    f = logs / "big.log"
    sink.stop()
    cap = 512 * 1024
    agent = make_agent(
        [sink.url],
        [{"path": str(logs / "*.log"), "data_type": "app"}],
        spool_cap_bytes=cap,
        spool_segment_bytes=64 * 1024,
        read_block_bytes=32 * 1024,
    ).start()
    data = lines("big", 0, 60_000)  # ~3.5 MB, far over the cap
    append(f, data)
    wait_until(lambda: agent.status()["spool"]["used_bytes"] > cap * 0.8, 20, "spool filling")
    wait_until(lambda: (agent.stream(f) or {}).get("blocked"), 20, "reading stopped (backpressure)")
    on_disk = sum(p.stat().st_size for p in (agent.state / "spool").glob("*.*"))
    assert agent.status()["spool"]["used_bytes"] <= cap and on_disk <= cap + 64 * 1024
    time.sleep(1.0)  # still blocked a moment later: no reading past the cap
    assert agent.status()["spool"]["used_bytes"] <= cap
    assert agent.stream(f)["lag_bytes"] > len(data) - cap  # type: ignore[index]
    # SIGTERM while no collector answers: a prompt, clean exit; the spool waits on disk
    started = time.monotonic()
    assert agent.d.stop() == 0 and time.monotonic() - started < 10
    agent.start()
    sink.start()
    wait_until(lambda: sink.data_by_stream().get(stream_of(f)) == data, 60, "everything delivered after return")


def test_failover_to_second_collector(tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    f = logs / "x.log"
    dead = f"http://127.0.0.1:{free_port()}"
    agent = make_agent([dead, sink.url], [{"path": str(logs / "*.log"), "data_type": "app"}]).start()
    append(f, lines("x", 0, 1000))
    wait_until(lambda: sink.data_by_stream().get(stream_of(f)) == lines("x", 0, 1000), 20, "delivered via the live one")
    assert agent.status()["last_ack_from"] == sink.url


def test_multiline_records_and_unterminated_last_line(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    f = logs / "trace.log"
    agent = make_agent(
        [sink.url],
        [{"path": str(logs / "*.log"), "data_type": "java", "multiline_start": r"\d{4}-\d\d-\d\d "}],
        partial_line_seconds=2.0,
    ).start()
    rec1 = b"2024-01-01 ERROR boom\n  at a.b(C.java:1)\n  at d.e(F.java:2)\n"
    rec2 = b"2024-01-01 ERROR again\n"
    append(f, rec1 + rec2)
    # rec1 is complete once the next record's start line is there; rec2 may still get continuation lines
    wait_until(lambda: sink.data_by_stream().get(stream_of(f)) == rec1, 20, "first record")
    append(f, b"  at g.h(I.java:3)\n")
    time.sleep(0.5)
    assert sink.data_by_stream()[stream_of(f)] == rec1  # still held: the file grew recently
    wait_until(
        lambda: sink.data_by_stream().get(stream_of(f)) == rec1 + rec2 + b"  at g.h(I.java:3)\n",
        20,
        "held record released after the idle timeout",
    )
    assert all(c.data.startswith(b"2024") for c in sink.chunks)  # no chunk starts inside a record
    # an unterminated last line is held, then released after the timeout
    append(f, b"2024-01-02 no newline")
    wait_until(lambda: sink.data_by_stream()[stream_of(f)].endswith(b"2024-01-02 no newline"), 20, "tail released")
    wait_until(lambda: agent.stream(f)["lag_bytes"] == 0, 20, "all acked")  # type: ignore[index]


def test_start_end_skips_existing_content(tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.log"
    append(old, lines("old", 0, 100))
    agent = make_agent([sink.url], [{"path": str(logs / "*.log"), "data_type": "app", "start": "end"}]).start()
    wait_until(lambda: agent.stream(old) is not None, 20, "found")
    agent.d.stop()
    agent.start()  # a restart must not read the skipped part either
    append(old, lines("old", 100, 110))
    new = logs / "new.log"  # created after the first scan: read from its beginning
    append(new, lines("new", 0, 10))
    wait_until(lambda: sink.data_by_stream().get(stream_of(old)) == lines("old", 100, 110), 20, "only new lines")
    wait_until(lambda: sink.data_by_stream().get(stream_of(new)) == lines("new", 0, 10), 20, "new file whole")


def test_sources_added_and_removed_at_run_time(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    f1, f2 = tmp_path / "one" / "a.log", tmp_path / "two" / "b.log"
    agent = make_agent(
        [sink.url],
        [{"path": str(tmp_path / "one" / "*.log"), "data_type": "one", "name": "one"}],
        tokens=["full-access"],  # run-time source changes need a token with the control scope
        allowed_paths=[str(tmp_path)],
    )
    agent.start()
    auth = agent.headers
    bad = httpx.post(agent.url + "/v1/sources", json={"path": "x", "data_type": "../etc"}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_source"
    assert httpx.post(agent.url + "/v1/sources", json={"path": "x", "data_typo": "a"}, headers=auth).status_code == 400
    r = httpx.post(
        agent.url + "/v1/sources", json={"path": str(tmp_path / "two" / "*.log"), "data_type": "two"}, headers=auth
    )
    assert r.status_code == 201
    append(f1, lines("a", 0, 10))
    append(f2, lines("b", 0, 10))
    wait_until(lambda: sink.data_by_stream().get(stream_of(f2)) == lines("b", 0, 10), 20, "added source shipped")
    wait_until(lambda: sink.data_by_stream().get(stream_of(f1)) == lines("a", 0, 10), 20, "configured source")
    assert {c.data_type for c in sink.chunks if c.stream == stream_of(f2)} == {"two"}
    # the addition survives a restart
    agent.d.stop()
    agent.start()
    assert {s["id"] for s in httpx.get(agent.url + "/v1/sources", headers=auth).json()["sources"]} == {
        "one",
        str(tmp_path / "two" / "*.log"),
    }
    assert httpx.delete(agent.url + "/v1/sources/one", headers=auth).status_code == 204
    assert httpx.delete(agent.url + "/v1/sources/nope", headers=auth).status_code == 404
    assert agent.stream(f1) is None
    append(f1, lines("a", 10, 20))
    append(f2, lines("b", 10, 20))
    wait_until(lambda: sink.data_by_stream().get(stream_of(f2)) == lines("b", 0, 20), 20, "remaining source")
    time.sleep(0.5)
    assert sink.data_by_stream()[stream_of(f1)] == lines("a", 0, 10)  # removed: not read any more


def test_log_api_and_logging_handler(tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]) -> None:
    import logging

    from headrace.agents import AgentLogHandler

    agent = make_agent([sink.url], []).start()
    for body, reason in [
        (b"{nope", "malformed"),
        (b'{"data_type": "../x", "records": ["a"]}', "bad_data_type"),
        (b'{"data_type": "app", "records": "a"}', "malformed"),
    ]:
        r = httpx.post(agent.url + "/v1/log", content=body)
        assert r.status_code == 400 and r.json()["error"] == reason
    r = httpx.post(agent.url + "/v1/log", json={"data_type": "audit", "records": ["one", "two"]})
    assert r.status_code == 200 and r.json() == {"accepted": 2}

    logger = logging.getLogger("test_agent_handler")
    logger.propagate = False
    handler = AgentLogHandler(agent.url, data_type="pyapp", batch=100)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    for i in range(1000):
        logger.warning("message %d", i)
    handler.close()
    logger.removeHandler(handler)
    expect = b"".join(b"WARNING message %d\n" % i for i in range(1000))
    wait_until(lambda: sink.data_by_stream().get("_api/pyapp") == expect, 20, "handler records in order")
    assert sink.data_by_stream()["_api/audit"] == b"one\ntwo\n"
    assert handler.sent == 1000 and handler.dropped == 0
    metrics = httpx.get(agent.url + "/metrics").text
    assert 'headrace_agent_rejects_total{reason="malformed"} 2.0' in metrics


def test_idle_agent_with_1000_files_uses_almost_no_cpu(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(1000):
        append(logs / f"f{i:04d}.log", b"hello %d\n" % i)
    agent = make_agent([sink.url], [{"path": str(logs / "*.log"), "data_type": "app"}]).start()
    wait_until(lambda: len(sink.data_by_stream()) == 1000, 60, "1000 files shipped")
    wait_until(lambda: all(s["lag_bytes"] == 0 for s in agent.status()["streams"]), 30, "all acked")
    assert agent.d.proc is not None

    def cpu_seconds() -> float:
        assert agent.d.proc is not None
        fields = Path(f"/proc/{agent.d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wakeups() -> int:  # voluntary + involuntary context switches of all its threads
        assert agent.d.proc is not None
        total = 0
        for task in Path(f"/proc/{agent.d.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        return total

    time.sleep(1.0)  # the last acks settle
    before, woke = cpu_seconds(), wakeups()
    time.sleep(6.0)  # more than one rescan_seconds period: no rescans while events work
    used, woken = cpu_seconds() - before, wakeups() - woke
    print(f"idle agent with 1000 files: {used:.3f} s CPU and {woken} wakeups in 6 s")
    assert used < 0.3, f"idle agent used {used:.2f}s CPU in 6s"
    assert woken <= 6, f"idle agent woke {woken} times in 6 s (no timer should run)"


def test_running_agent_loads_neither_pyarrow_nor_sqlalchemy(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    """The agent runs on every host: it must not carry the batch jobs' libraries (half its memory)."""
    log = tmp_path / "app.log"
    append(log, lines("a", 0, 100))
    agent = make_agent([sink.url], [{"path": str(log), "data_type": "app"}]).start()
    wait_until(lambda: agent.caught_up(log), 30, "the lines acked")
    assert agent.d.proc is not None
    loaded = mapped_packages(agent.d.proc.pid)
    assert not loaded, f"the agent process loaded {loaded}"
    print(f"agent RSS after shipping: {rss_mib(agent.d.proc.pid):.0f} MiB")


def test_misspelled_config_key_is_named_and_nothing_starts(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    cfg = write_config(tmp_path / "bad.yaml", {"agent": {"state_dir": str(tmp_path / "s"), "spool_cap_byte": 10}})
    d = daemons(["agent", "--config", str(cfg)], "bad").start()
    assert d.proc is not None and d.proc.wait(30) == 2
    assert "agent.spool_cap_byte" in d.output() and "unknown key" in d.output()
    assert not (tmp_path / "s").exists()


def test_second_agent_on_the_same_state_dir_is_refused(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent], daemons: Callable[..., Daemon]
) -> None:
    make_agent([sink.url], []).start()
    cfg = write_config(
        tmp_path / "two.yaml", {"agent": {"state_dir": str(tmp_path / "state"), "listen": f"127.0.0.1:{free_port()}"}}
    )
    d = daemons(["agent", "--config", str(cfg)], "two").start()
    assert d.proc is not None and d.proc.wait(30) == 1
    assert "another agent is using state_dir" in d.output()


def test_fast_rotations_between_looks_lose_nothing(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    # Files created and renamed away within microseconds, before the reader could stat them: the
    # rename events (with the files' identities) still lead the agent to them, in order.
    logs = tmp_path / "logs"
    logs.mkdir()
    f = logs / "fast.log"
    agent = make_agent([sink.url], [{"path": str(logs / "*.log"), "data_type": "app"}]).start()
    expect = lines("fast", 0, 10)
    append(f, expect)
    wait_until(lambda: agent.caught_up(f), 20, "first lines acked")
    for r in range(1, 5):
        data = lines("fast", r * 100, r * 100 + 100)
        append(f, data)
        expect += data
        os.rename(f, logs / f"fast.log.{r}")
    append(f, lines("fast", 500, 600))
    expect += lines("fast", 500, 600)
    wait_until(lambda: sink.data_by_stream().get(stream_of(f)) == expect, 20, "every rotated file in order")
    assert agent.stream(f)["lag_bytes"] == 0  # type: ignore[index]


def test_kill9_with_a_batch_compressed_ahead_delivers_every_line_exactly_once(
    tmp_path: Path, sink: TestSink, make_agent: Callable[..., Agent]
) -> None:
    # Batch 1 reaches the collector (recorded: "fsynced") but its ack is held back; batch 2 is
    # compressed ahead, waiting. kill -9 then: neither is acked, so both come again after the restart.
    logs = tmp_path / "logs"
    logs.mkdir()
    f = logs / "a.log"
    expect = lines("a", 0, 6000)
    append(f, expect)
    sink.hold = threading.Event()
    agent = make_agent(
        [sink.url],
        [{"path": str(logs / "*.log"), "data_type": "app"}],
        read_block_bytes=4096,
        batch_bytes=16384,
        compression="zstd",
    ).start()

    def pipeline_full() -> bool:
        metrics = httpx.get(agent.url + "/metrics", timeout=5).text
        return sink.held == 1 and "headrace_ship_batches_prepared 1.0" in metrics

    wait_until(pipeline_full, 20, "batch 1 held at the collector, batch 2 compressed ahead")
    first = sink.stats()["chunks"]
    assert first > 0 and agent.stream(f)["acked_offset"] == 0  # type: ignore[index]
    agent.d.kill9()
    sink.hold.set()
    agent.start()
    wait_until(lambda: sink.data_by_stream().get(stream_of(f)) == expect, 30, "every line exactly once")
    assert sink.duplicates >= first  # the batch held at the kill was sent again (and deduplicated)
    wait_until(lambda: agent.caught_up(f), 20, "acked after the restart")
