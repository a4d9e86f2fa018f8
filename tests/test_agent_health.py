"""The agent's /healthz tells the truth: 503 with the reason while no collector has acked for longer
than ``unreachable_after_seconds`` (with data waiting), and while a file its sources match cannot be
opened; /v1/status says which collector failed how and which file cannot be read. Both turn back
to 200 once fixed, and the data then arrives."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_testsink import TestSink
from support import free_port, wait_until, write_config


def health(url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(url + "/healthz", timeout=5)
    return r.status_code, r.json()


def test_no_collector_acking_turns_health_red_then_green(tmp_path: Path, daemons: Any) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port, cport = free_port(), free_port()
    cfg = write_config(
        tmp_path / "agent.yaml",
        {"agent": {"listen": f"127.0.0.1:{port}", "state_dir": str(tmp_path / "state"), "max_backoff_seconds": 0.2,
                   "collectors": [f"http://127.0.0.1:{cport}"], "unreachable_after_seconds": 1,
                   "sources": [{"path": str(logs / "*.log"), "data_type": "app"}]}},
    )  # fmt: skip
    agent = daemons(["agent", "--config", str(cfg)], "agent").start()
    url = f"http://127.0.0.1:{port}"
    agent.wait_http(url + "/healthz")
    (logs / "a.log").write_bytes(b"one\ntwo\n")
    wait_until(lambda: health(url)[0] == 503, 30, "the agent to report that no collector acks")
    _, body = health(url)
    assert "no collector has acked for" in body["reason"] and "Connect" in body["reason"], body
    state = httpx.get(url + "/v1/status", timeout=5).json()["collector_state"]
    assert state[0]["url"] == f"http://127.0.0.1:{cport}" and state[0]["last_ack"] is None
    assert state[0]["last_error"] and state[0]["last_error_at"], state
    sink = TestSink(port=cport).start()
    try:
        wait_until(lambda: health(url)[0] == 200, 30, "health to turn green once the collector acks")
        wait_until(lambda: b"".join(sink.data_by_stream().values()) == b"one\ntwo\n", 30, "the lines")
        state = httpx.get(url + "/v1/status", timeout=5).json()["collector_state"]
        assert state[0]["last_ack"] is not None
    finally:
        sink.stop()


def test_a_file_the_agent_cannot_open_turns_health_red_and_is_named_in_status(tmp_path: Path) -> None:
    # root opens any file: as root the agent runs without the capabilities that bypass file modes
    wrap: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        wrap = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ok.log").write_bytes(b"fine\n")
    secret = logs / "secret.log"
    secret.write_bytes(b"hidden\n")
    secret.chmod(0o000)
    sink = TestSink().start()
    port = free_port()
    cfg = write_config(
        tmp_path / "agent.yaml",
        {"agent": {"listen": f"127.0.0.1:{port}", "state_dir": str(tmp_path / "state"), "collectors": [sink.url],
                   "sources": [{"path": str(logs / "*.log"), "data_type": "app"}]}},
    )  # fmt: skip
    proc = subprocess.Popen(
        [*wrap, sys.executable, "-m", "headrace", "agent", "--config", str(cfg), "--log-format", "json"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: health(url)[0] == 503, 30, "the agent to report the file it cannot read")
        reason = health(url)[1]["reason"]
        assert "1 file(s) the sources match cannot be read (Permission denied)" in reason, reason
        assert str(secret) not in reason  # /healthz is open: no paths
        status = httpx.get(url + "/v1/status", timeout=5).json()
        assert status["unreadable_files"] == {str(secret): "Permission denied"}
        assert next(s for s in status["streams"] if s["path"] == str(secret))["error"] == "Permission denied"
        secret.chmod(0o644)
        wait_until(lambda: health(url)[0] == 200, 30, "health to turn green once the file is readable")
        wait_until(lambda: b"hidden\n" in sink.data_by_stream().values(), 30, "its lines")
        assert b"fine\n" in sink.data_by_stream().values()
    finally:
        proc.terminate()
        proc.wait(30)
        sink.stop()
