"""``headrace sink``'s health and metrics listener (``sink.listen``), and ``headrace up`` supervising a sink:
rows reach the replica, /metrics counts them, a SIGKILLed sink is restarted by ``up`` and goes on from its
checkpoint; a sink whose target fails answers 503 and counts the errors."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from sink_support import checkpoint, replica_table
from support import free_port, wait_until, write_config


def _metric(text: str, name: str, sink: str = "sink") -> float | None:
    m = re.search(rf'^{name}{{sink="{sink}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def _insert(db: Path, lo: int, hi: int) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(lo, hi)])
    conn.close()


def _sink_pid(up_pid: int) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == up_pid and argv[1:4] == [b"-m", b"headrace", b"sink"]:
            return int(proc.name)
    return None


def test_up_starts_and_restarts_a_sink_that_reports_metrics(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    relay_port, sink_port, status_port = free_port(), free_port(), free_port()
    replica = f"sqlite:///{tmp_path / 'replica.db'}"
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "relay": {
                "listen": f"127.0.0.1:{relay_port}",
                "source": f"sqlite:///{db}",
                "state_dir": str(tmp_path / "relay"),
            },
            "sink": {
                "listen": f"127.0.0.1:{sink_port}",
                "relays": [f"http://127.0.0.1:{relay_port}"],
                "target": {"type": "sql", "url": replica, "batch_seconds": 0.1},
            },
        },
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    out = (tmp_path / "up.out").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "headrace", "up", "--config", str(cfg), "--status-listen", f"127.0.0.1:{status_port}"],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: httpx.get(sink_url + "/healthz", timeout=2).status_code == 200, 60, "the sink's /healthz")
        _insert(db, 0, 50)
        wait_until(lambda: len(replica_table(replica, "items", "id")) == 50, 60, "50 rows in the replica")
        text = httpx.get(sink_url + "/metrics", timeout=5).text
        assert (_metric(text, "headrace_sink_rows_applied_total") or 0) >= 50
        assert (_metric(text, "headrace_sink_windows_applied_total") or 0) >= 1
        cp = checkpoint(replica)
        assert cp is not None and _metric(text, "headrace_sink_checkpoint_scn") == cp["scn"]
        health = httpx.get(sink_url + "/healthz", timeout=2).json()
        assert health["ok"] and health["checkpoint_scn"] == cp["scn"] and health["rows_applied"] >= 50
        overview = httpx.get(f"http://127.0.0.1:{status_port}/v1/overview", timeout=10).json()
        assert overview["supervisor"]["sink"]["state"] == "running"  # up's status page knows the sink

        # kill -9 the sink: up restarts it, and it goes on from the checkpoint in the replica
        pid = wait_until(lambda: _sink_pid(up.pid), 10, "the sink process")
        import os

        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: (p := _sink_pid(up.pid)) is not None and p != pid, 30, "up to restart the sink")
        _insert(db, 50, 80)
        wait_until(lambda: len(replica_table(replica, "items", "id")) == 80, 60, "80 rows in the replica")
        wait_until(
            lambda: httpx.get(sink_url + "/healthz", timeout=2).status_code == 200, 30, "the new sink's /healthz"
        )
        assert replica_table(replica, "items", "id")[79]["name"] == "item 79"
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0, (tmp_path / "up.out").read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        out.close()


def test_up_refuses_a_sink_without_listen(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "sink": {
                "relays": ["http://127.0.0.1:1"],
                "target": {"type": "sql", "url": f"sqlite:///{tmp_path / 'r.db'}"},
            }
        },
    )
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "up", "--config", str(cfg), "--status-listen", "off"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "sink.listen" in r.stderr


def test_a_failing_sink_answers_503_and_counts_errors(tmp_path: Path, daemons: object) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path / "sink.yaml",
        {
            "sink": {
                "listen": f"127.0.0.1:{port}",
                "relays": ["http://127.0.0.1:1"],
                "backoff_seconds": 5,
                # a directory that does not exist: opening the replica fails, the sink backs off and retries
                "target": {"type": "sql", "url": f"sqlite:///{tmp_path / 'missing' / 'r.db'}"},
            }
        },
    )
    sink = daemons(["sink", "--config", str(cfg)], "sink")  # type: ignore[operator]
    sink.start()
    url = f"http://127.0.0.1:{port}"
    try:
        r = wait_until(lambda: (x := httpx.get(url + "/healthz", timeout=2)).status_code == 503 and x, 30, "a 503")
        assert r.json()["ok"] is False and "unable to open database" in r.json()["error"]
        text = httpx.get(url + "/metrics", timeout=2).text
        assert (_metric(text, "headrace_sink_errors_total") or 0) >= 1
    finally:
        assert sink.stop() == 0, sink.output()


def test_lag_follows_the_relay_head_and_the_checkpoint() -> None:
    import time

    from prometheus_client import generate_latest

    from headrace.sinks._health import SinkMetrics

    m = SinkMetrics("lagtest")
    m.relay_head(100)
    m.committed(60, "relay", windows=3, rows=30, newest_event_ms=int(time.time() * 1000) - 7_000)
    text = generate_latest().decode()
    assert _metric(text, "headrace_sink_lag_scn", "lagtest") == 40
    assert 6.5 <= (_metric(text, "headrace_sink_lag_seconds", "lagtest") or 0) < 60
    assert _metric(text, "headrace_sink_rows_applied_total", "lagtest") == 30
    m.committed(100, "relay", windows=1, rows=5, newest_event_ms=int(time.time() * 1000) - 9_000)
    text = generate_latest().decode()
    assert _metric(text, "headrace_sink_lag_scn", "lagtest") == 0  # caught up: no lag, however old the last event
    assert _metric(text, "headrace_sink_lag_seconds", "lagtest") == 0
    assert _metric(text, "headrace_sink_windows_applied_total", "lagtest") == 4
    m.failed("boom")
    assert m.health()["ok"] is False and m.health()["error"] == "boom"
