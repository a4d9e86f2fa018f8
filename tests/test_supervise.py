"""A dead thread is a dead daemon (issue 11, item 2): health turns 503 naming the worker, and the
supervisor restarts it (counted, logged) or the daemon exits non-zero; no acked data is lost.

The agent tests cause real faults in real agent processes (the checkpoint file can no longer be
replaced: a folder sits where ``write_atomic`` puts its temporary file). The unit tests drive
:class:`headrace._supervise.Supervisor` with workers written here, whose deaths are deliberate
(that is the code under test); the watcher test stops watchdog's observer thread from outside,
which is an injected fault (a real observer ends that way only when a handler raises).
"""

from __future__ import annotations

import errno
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_testsink import TestSink
from support import Daemon, free_port, wait_until, write_config

from headrace._supervise import Supervisor, SupervisorConfig, is_disk_full

FAST = {"backoff_seconds": 0.1, "max_backoff_seconds": 0.3, "settle_seconds": 1.0}


# -- the supervisor itself ------------------------------------------------------------------------


def test_a_dying_worker_is_reported_restarted_and_healthy_again_after_settling() -> None:
    runs: list[int] = []
    fatal: list[str] = []
    release = threading.Event()

    def worker() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        release.wait()

    sup = Supervisor("test", SupervisorConfig(**FAST, max_restarts=5), on_fatal=fatal.append)
    sup.run("w", worker)
    h = wait_until(lambda: (h := sup.health())["ok"] is False and h, 5, "health not ok")
    assert "w " in h["reason"] and "RuntimeError: boom" in h["reason"]
    wait_until(lambda: len(runs) == 3, 5, "restarted twice")
    assert sup.health()["workers"]["w"]["restarts"] == 2
    assert sup.health()["ok"] is False  # not settled yet: it only just came back
    wait_until(lambda: sup.health()["ok"], 5, "healthy after settle_seconds")
    assert not fatal
    sup.stop()
    release.set()


def test_too_many_deaths_give_up_and_ask_the_daemon_to_exit() -> None:
    fatal: list[str] = []

    def worker() -> None:
        raise ValueError("always")

    sup = Supervisor("test", SupervisorConfig(**FAST, max_restarts=2, window_seconds=60), on_fatal=fatal.append)
    t = sup.run("w", worker)
    t.join(10)
    assert not t.is_alive()
    assert len(fatal) == 1 and "w died more than 2 restarts in 60 s" in fatal[0] and "ValueError: always" in fatal[0]
    h = sup.health()
    assert h["ok"] is False and h["workers"]["w"]["state"] == "dead" and h["workers"]["w"]["restarts"] == 2


def test_a_full_disk_is_waited_out_not_counted_towards_the_limit() -> None:
    fatal: list[str] = []
    deaths = 0

    def worker() -> None:
        nonlocal deaths
        deaths += 1
        if deaths <= 6:
            raise RuntimeError("append failed") from OSError(errno.ENOSPC, "No space left on device")
        threading.Event().wait(30)

    sup = Supervisor("test", SupervisorConfig(**FAST, max_restarts=1), on_fatal=fatal.append)
    sup.run("w", worker)
    h = wait_until(lambda: (h := sup.health())["ok"] is False and h, 5, "health not ok")
    assert "disk full" in h["reason"]
    wait_until(lambda: deaths == 7, 10, "restarted past max_restarts")
    assert not fatal
    wait_until(lambda: sup.health()["ok"], 5, "healthy once space returned")
    sup.stop()
    assert is_disk_full(RuntimeError("x").with_traceback(None)) is False


def test_a_watched_thread_that_stops_is_restarted_then_left_degraded() -> None:
    alive = {"v": True}
    restarts: list[int] = []

    def restart() -> None:
        restarts.append(1)  # and it does not take: the thread is still not alive

    sup = Supervisor("test", SupervisorConfig(**FAST, max_restarts=1), on_fatal=pytest.fail, check_seconds=0.05)
    sup.watch("obs", lambda: alive["v"], restart)
    alive["v"] = False
    wait_until(lambda: len(restarts) == 1, 5, "first restart")
    wait_until(lambda: sup.health()["workers"]["obs"]["state"] == "degraded", 5, "given up: degraded")
    h = sup.health()
    assert h["ok"] is True and "obs" in h["degraded"] and len(restarts) == 1
    sup.stop()


def test_a_notifying_watched_thread_is_not_polled_and_restarted_when_it_pokes() -> None:
    """notifies=True: no timer while it runs (alive() is not called); its poke gets it restarted."""
    alive = {"v": True}
    calls: list[str] = []

    def is_alive() -> bool:
        calls.append("alive")
        return alive["v"]

    def restart() -> None:
        calls.append("restart")
        alive["v"] = True

    sup = Supervisor("test", SupervisorConfig(**FAST), on_fatal=pytest.fail, check_seconds=0.01)
    sup.watch("obs", is_alive, restart, notifies=True)
    time.sleep(0.3)  # 30 polls' worth of check_seconds
    assert calls == []
    alive["v"] = False
    sup.poke()
    wait_until(lambda: "restart" in calls, 5, "restarted after the poke")
    wait_until(lambda: sup.health()["workers"]["obs"]["state"] == "running", 5, "running again")
    n = len(calls)
    time.sleep(0.3)
    assert len(calls) == n  # quiet again
    sup.stop()


# -- real agents ------------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[TestSink]:
    s = TestSink().start()
    yield s
    s.stop()


class AgentProc:
    def __init__(self, daemon: Daemon, port: int, state: Path) -> None:
        self.d = daemon
        self.url = f"http://127.0.0.1:{port}"
        self.state = state

    def start(self) -> AgentProc:
        self.d.start()
        self.d.wait_http(self.url + "/healthz")
        return self

    @property
    def pid(self) -> int:
        assert self.d.proc is not None
        return self.d.proc.pid

    def log(self, *records: str) -> int:
        body = json.dumps({"data_type": "app", "records": list(records)})
        return httpx.post(self.url + "/v1/log", content=body, timeout=10).status_code

    def health(self) -> httpx.Response:
        return httpx.get(self.url + "/healthz", timeout=5)

    def metric(self, name: str, worker: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        m = re.search(rf'^{name}\{{worker="{worker}"\}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    def break_checkpoints(self) -> Path:
        """A real fault: a folder where write_atomic creates the checkpoint's temporary file."""
        fault = self.state / f".checkpoints.json.tmp-{self.pid}"

        def made() -> bool:
            try:
                fault.mkdir()  # a save may be writing that file right now: try again
            except FileExistsError:
                return False
            return True

        wait_until(made, 10, "the fault in place")
        return fault


@pytest.fixture
def make_agent(tmp_path: Path, daemons: Callable[..., Daemon]) -> Callable[..., AgentProc]:
    def make(collectors: list[str], **extra: Any) -> AgentProc:
        port = free_port()
        state = tmp_path / "state"
        cfg = {
            "name": "host-a",
            "collectors": collectors,
            "state_dir": str(state),
            "listen": f"127.0.0.1:{port}",
            "rotate_wait_seconds": 0.2,
            "partial_line_seconds": 0.3,
            "rescan_seconds": 0.5,
            "max_backoff_seconds": 0.2,
            **extra,
        }
        path = write_config(tmp_path / "agent.yaml", {"agent": cfg})
        return AgentProc(daemons(["agent", "--config", str(path)], "agent"), port, state)

    return make


def test_dead_shipper_and_reader_turn_healthz_503_then_are_restarted(
    sink: TestSink, make_agent: Callable[..., AgentProc], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("a0\na1\n")
    agent = make_agent(
        [sink.url],
        sources=[{"path": str(logs / "*.log"), "data_type": "files"}],
        supervise={**FAST, "max_restarts": 1000},
    ).start()
    assert agent.log("one") == 200
    wait_until(lambda: sink.data_by_stream().get("_api/app") == b"one\n", 20, "first record")
    fault = agent.break_checkpoints()
    # The shipper: the collector acks, the ack cannot be recorded -> pump raises -> dead.
    assert agent.log("two") == 200
    # The reader: a new file is a new stream, saved to the checkpoint before it is read -> dead.
    (logs / "b.log").write_text("b0\nb1\n")

    def both_down() -> httpx.Response | None:
        r = agent.health()
        why = r.json().get("reason", "")
        return r if r.status_code == 503 and "agent-reader" in why and "agent-shipper" in why else None

    reason = wait_until(both_down, 20, "healthz 503 naming both").json()["reason"]
    assert "agent-shipper" in reason and "agent-reader" in reason and "IsADirectoryError" in reason
    assert agent.log("three") == 200  # the Log API still takes records: they are durable in the spool
    fault.rmdir()  # the fault goes away: both are restarted and everything arrives exactly once
    wait_until(lambda: agent.health().status_code == 200, 20, "healthy again")
    assert agent.metric("headrace_worker_restarts_total", "agent-shipper") >= 1
    assert agent.metric("headrace_worker_restarts_total", "agent-reader") >= 1
    out = agent.d.output()
    assert '"worker_died"' in out and '"worker_restarted"' in out
    logs_a, logs_b = str(logs / "a.log").lstrip("/"), str(logs / "b.log").lstrip("/")

    def delivered() -> bool:
        d = sink.data_by_stream()  # asserts every stream is tiled exactly: no gap, no overlap
        return (
            d.get("_api/app") == b"one\ntwo\nthree\n" and d.get(logs_a) == b"a0\na1\n" and d.get(logs_b) == b"b0\nb1\n"
        )

    wait_until(delivered, 20, "every acked record and every line exactly once")


def test_a_worker_that_keeps_dying_makes_the_agent_exit_non_zero_and_nothing_acked_is_lost(
    sink: TestSink, make_agent: Callable[..., AgentProc]
) -> None:
    agent = make_agent([sink.url], supervise={**FAST, "max_restarts": 2, "window_seconds": 60}).start()
    assert agent.log("one") == 200
    wait_until(lambda: sink.data_by_stream().get("_api/app") == b"one\n", 20, "first record")
    fault = agent.break_checkpoints()
    assert agent.log("two") == 200
    r = wait_until(lambda: (r := agent.health()).status_code == 503 and r, 20, "healthz 503")
    assert "agent-shipper" in r.json()["reason"] and "could not record an ack" in r.json()["reason"]
    assert agent.d.proc is not None
    assert agent.d.proc.wait(30) == 1  # gave up: exit non-zero so the service manager restarts it
    out = agent.d.output()
    assert '"worker_given_up"' in out and "agent-shipper died more than 2 restarts" in out
    fault.rmdir()
    agent.start()  # what systemd would do
    assert agent.log("three") == 200
    wait_until(lambda: sink.data_by_stream().get("_api/app") == b"one\ntwo\nthree\n", 20, "exactly once")


def test_the_watchdog_observer_dying_is_noticed_and_restarted(tmp_path: Path, sink: TestSink) -> None:
    """Injected fault: the observer thread is stopped from outside (a handler raising ends it the same way)."""
    from headrace.agents._agent import Agent
    from headrace.agents._config import AgentConfig

    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = AgentConfig(
        name="host-w",
        collectors=[sink.url],
        state_dir=str(tmp_path / "state"),
        sources=[{"path": str(logs / "*.log"), "data_type": "files"}],  # type: ignore[list-item]
        rescan_seconds=3600,  # only filesystem events can find the new file quickly
        supervise=SupervisorConfig(**FAST),
    )
    fatal: list[str] = []
    agent = Agent(cfg, on_fatal=fatal.append)
    agent.start()
    try:
        agent.supervisor.check_seconds = 0.05
        old = agent.watcher._observer
        old.stop()
        old.join(5)
        wait_until(lambda: agent.watcher._observer is not old and agent.watcher.alive(), 10, "observer restarted")
        wait_until(lambda: agent.health()["workers"]["agent-watcher"]["restarts"] == 1, 5, "restart counted")
        (logs / "new.log").write_text("seen by the new observer\n")
        stream = str(logs / "new.log").lstrip("/")
        wait_until(lambda: sink.data_by_stream().get(stream) == b"seen by the new observer\n", 10, "event-driven")
        wait_until(lambda: agent.health()["ok"], 5, "healthy after settling")
        assert not fatal
    finally:
        agent.stop()


# -- a forwarding collector's pump ------------------------------------------------------------------


def test_a_forwarding_collectors_dead_pump_is_reported_and_restarted(
    daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    """Real fault: the spool's ack position (head.json) can no longer be replaced, so the pump stops."""
    from collector_helpers import HTTP, done_records, make_chunk, post, start_collector

    root, root_url, root_sink = start_collector(daemons, tmp_path, name="root")
    port = free_port()
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "sink_dir": str(tmp_path / "fwd"),
        "name": "fwd",
        "upstream": [root_url],
        "upstream_max_backoff": 0.2,
        "supervise": {**FAST, "max_restarts": 1000},
    }
    fwd = daemons(["collector", "--config", str(write_config(tmp_path / "fwd.yaml", {"collector": cfg}))], "fwd")
    fwd.start()
    url = f"http://127.0.0.1:{port}"
    fwd.wait_http(url + "/healthz")
    chunks = [make_chunk("app/x.log", i * 640, 20) for i in range(3)]
    assert post(url, chunks[:1]).status_code == 200
    spooled = lambda: HTTP.get(url + "/v1/status").json()["store"]["spool_chunks"]  # noqa: E731
    wait_until(lambda: spooled() == 0, 20, "forwarded")
    assert fwd.proc is not None
    fault = tmp_path / "fwd" / "forward-spool" / "chunks" / f".head.json.tmp-{fwd.proc.pid}"
    wait_until(lambda: not fault.exists(), 10, "no ack being saved")  # the last ack's write may still run
    fault.mkdir()
    assert post(url, chunks[1:2]).status_code == 200
    r = wait_until(lambda: (r := HTTP.get(url + "/healthz")).status_code == 503 and r, 20, "healthz 503")
    assert "forward-pump" in r.json()["reason"] and "IsADirectoryError" in r.json()["reason"]
    fault.rmdir()
    wait_until(lambda: HTTP.get(url + "/healthz").status_code == 200, 20, "healthy again")
    assert post(url, chunks[2:]).status_code == 200
    wait_until(lambda: spooled() == 0, 20, "forwarded after the restart")
    assert '"worker_restarted"' in fwd.output()
    assert fwd.stop() == 0 and root.stop() == 0
    got = sorted((r["seq_start"], r["data"]) for r in done_records(root_sink))
    assert [d for _, d in got] == [c.data for c in chunks]  # each exactly once
