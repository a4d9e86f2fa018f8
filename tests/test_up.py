"""``headrace up`` on its embedded defaults: log lines and committed rows arrive while each child in
turn is killed with SIGKILL and restarted by the supervisor; nothing is lost or duplicated (counted).
Also: the restart policy (plain code) and a bad config stopping everything with exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import fastavro
import httpx
import pytest
from support import wait_until

from headrace._up import PARTS, RestartPolicy

URLS = {"collector": "http://127.0.0.1:7070", "agent": "http://127.0.0.1:7071",
        "relay": "http://127.0.0.1:7080", "bootstrap": "http://127.0.0.1:7090"}  # fmt: skip


def children(pid: int) -> dict[str, int]:
    """``{part: pid}`` of the processes whose parent is ``pid``."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and len(argv) > 3 and argv[1:3] == [b"-m", b"headrace"]:
            out[argv[3].decode()] = int(proc.name)
    return out


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_on_defaults_survives_kill9_of_each_child_with_nothing_lost(tmp_path: Path) -> None:
    if any(healthy(u) for u in URLS.values()):
        pytest.skip("a headrace daemon already listens on one of the default ports 7070/7071/7080/7090")
    base = tmp_path / "hd"
    out = (tmp_path / "up.out").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "headrace", "up", "--dir", str(base)], stdout=out, stderr=subprocess.STDOUT
    )
    stop = threading.Event()
    written = {"lines": 0, "rows": 0}
    sub: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: b"4 parts running" in (tmp_path / "up.out").read_bytes(), 90, "up to start its parts")
        with contextlib.closing(sqlite3.connect(base / "app.db")) as c:
            c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        log = base / "logs" / "app.log"

        def writer() -> None:
            with contextlib.closing(sqlite3.connect(base / "app.db", timeout=30)) as c, log.open("ab") as f:
                while not stop.is_set():
                    i = written["lines"]
                    f.write(f"line {i:08d}\n".encode())
                    f.flush()
                    c.execute("INSERT INTO t VALUES (?, ?)", (i, f"v{i}"))
                    c.commit()
                    written["lines"] = written["rows"] = i + 1
                    time.sleep(0.005)

        t = threading.Thread(target=writer)
        t.start()
        checkpoint, events = tmp_path / "sub.cp", tmp_path / "events.jsonl"
        sub = subprocess.Popen(
            [sys.executable, "-m", "headrace", "subscribe", "--relay", URLS["relay"], "--checkpoint", str(checkpoint)],
            stdout=events.open("wb"),
            stderr=subprocess.DEVNULL,
        )
        for part in PARTS:
            before = children(up.pid)
            assert set(before) == set(PARTS), before
            mark = written["lines"]
            wait_until(lambda mark=mark: written["lines"] > mark + 50, 30, "the writer to go on")
            with contextlib.suppress(ProcessLookupError):
                os.kill(before[part], signal.SIGKILL)
            wait_until(
                lambda part=part, old=before[part]: children(up.pid).get(part, old) != old and healthy(URLS[part]),
                60,
                f"{part} to be restarted",
            )
        time.sleep(1.0)
        stop.set()
        t.join(10)
        total = written["rows"]

        def agent_acked() -> bool:
            streams = httpx.get(URLS["agent"] + "/v1/status", timeout=5).json()["streams"]
            return sum(s["acked_offset"] for s in streams) >= log.stat().st_size

        wait_until(agent_acked, 60, "the agent to have every byte acknowledged")

        def seen() -> list[dict[str, object]]:
            return [json.loads(x) for x in events.read_text().splitlines() if x.strip()] if events.exists() else []

        wait_until(
            lambda: len([e for e in seen() if e["table"] == "t"]) >= total, 60, f"the subscriber at {total} rows"
        )
        assert b"part_died" in (tmp_path / "up.out").read_bytes()
    finally:
        stop.set()
        if sub is not None:
            sub.send_signal(signal.SIGTERM)
            sub.wait(30)
        up.send_signal(signal.SIGTERM)
        rc = up.wait(120)
    assert rc == 0
    assert children(up.pid) == {}
    # every line exactly once in the sink files (a clean stop closed the open one)
    lines: list[bytes] = []
    for f in sorted((base / "sink" / "done").glob("*.avro")):
        with f.open("rb") as fh:
            for rec in fastavro.reader(fh):
                lines += bytes(rec["data"]).splitlines()  # type: ignore[index, call-overload]
    assert sorted(lines) == [f"line {i:08d}".encode() for i in range(written["lines"])]
    # every row exactly once, in commit order, across a relay kill -9: a SQLite relay killed within a
    # second of serving a window regroups windows after its restart, and one may span the
    # subscriber's checkpoint; the client delivers only the events past its checkpoint
    rows = [e for e in seen() if e["table"] == "t"]
    ids = [int(e["after"]["id"]) for e in rows]  # type: ignore[index, call-overload]
    assert ids == list(range(total)), _around(ids, sorted(set(ids), key=ids.index), total)
    scns = [int(e["scn"]) for e in rows]  # type: ignore[call-overload]
    assert scns == sorted(scns)


def _around(ids: list[int], first: list[int], total: int) -> str:
    i = next((i for i, (a, b) in enumerate(zip(first, range(total), strict=False)) if a != b), len(first))
    j = ids.index(first[i]) if i < len(first) else len(ids)
    return f"first difference at {i}: delivered {ids[max(0, j - 5) : j + 8]}, {len(first)} distinct of {total}"


def test_restart_policy_backs_off_resets_and_gives_up() -> None:
    p = RestartPolicy(max_restarts=3, window_seconds=100, first_delay=1, max_delay=4, healthy_after=60)
    assert p.on_exit(1, now=10, up_since=9) == ("restart", 1)
    assert p.on_exit(-9, now=12, up_since=11) == ("restart", 2)
    assert p.on_exit(1, now=15, up_since=14) == ("restart", 4)
    assert p.on_exit(1, now=200, up_since=100) == ("restart", 1)  # it had stayed up: backoff starts over
    assert p.on_exit(2, now=201, up_since=200) == ("usage", 0)  # a config error is not retried
    p = RestartPolicy(max_restarts=2, window_seconds=100)
    assert [p.on_exit(1, now=t, up_since=t)[0] for t in (1, 2, 3)] == ["restart", "restart", "crash_loop"]


def test_up_with_a_bad_config_stops_with_exit_2_and_starts_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "h.yaml"
    cfg.write_text("collector: {listen: 127.0.0.1:1, roll_byts: 5}\nagent: {sources: []}\n")
    p = subprocess.run([sys.executable, "-m", "headrace", "up", "--config", str(cfg)], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"collector.roll_byts" in p.stderr, p.stderr
