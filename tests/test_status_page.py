"""The status page and ``headrace status``, against real daemons run by ``headrace up``.

In headless Chromium (over the DevTools protocol): the page of ``up`` while log lines and database
rows flow shows every part healthy, draws its charts from the polled numbers, shows the same figures
as the parts' ``/v1/status`` once traffic stops, and shows a stopped collector as an error within
seconds (and healthy again once it runs). ``headrace status --json`` exits 0 and then 1 for the same
states. A screenshot is saved to the test's tmp_path. Also: ``GET /`` of a daemon, and tokens (the
page is open, its data is not; ``up`` asks each part with that part's own read token).
"""

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
from typing import Any

import httpx
import pytest
from chromium_cdp import Chromium, chromium_path
from support import free_port, wait_until, write_config

from headrace._overview import figures, problems
from headrace._up_status import insecure

PAGE_STATE = """(() => {
  const out = {overall: document.getElementById('overall').dataset.overall,
               problems: [...document.querySelectorAll('[data-problem]')].map(e => e.textContent), parts: {}};
  for (const el of document.querySelectorAll('.part')) {
    const figs = {};
    for (const f of el.querySelectorAll('[data-fig]')) figs[f.dataset.fig] = f.dataset.value;
    out.parts[el.dataset.part] = {health: el.dataset.health, figs};
  }
  out.order = [...document.querySelectorAll('.part')].map(e => e.dataset.part);
  return out;
})()"""

CHART = """((part, key) => {
  const c = document.querySelector(`[data-part=${part}] [data-chart=${key}] canvas`);
  if (!c || !c.width) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let blue = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 2] > 150 && d[i] < 120) blue++;
  return {drawn: c.dataset.drawn, points: Number(c.dataset.points), max: Number(c.dataset.max || 0), blue};
})"""


def _up(tmp_path: Path, cfg: Path, status_port: int) -> subprocess.Popen[bytes]:
    out = (tmp_path / "up.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace", "up", "--config", str(cfg), "--status-listen", f"127.0.0.1:{status_port}"],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()

    def started() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"up exited {proc.returncode}:\n{(tmp_path / 'up.out').read_text()}")
        return b"parts running" in (tmp_path / "up.out").read_bytes()

    wait_until(started, 60, "headrace up to start its parts")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _status(url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(url + "/v1/status", headers=headers, timeout=5)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def _headrace_status(cfg: Path) -> tuple[int, dict[str, Any]]:
    p = subprocess.run(
        [sys.executable, "-m", "headrace", "status", "--config", str(cfg), "--json", "--timeout", "2"],
        capture_output=True,
        timeout=60,
    )
    return p.returncode, json.loads(p.stdout)


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install chromium)")
def test_status_page_in_chromium_while_traffic_flows_and_a_stopped_collector(tmp_path: Path) -> None:
    t0 = time.monotonic()
    ports = {name: free_port() for name in ("collector", "agent", "relay", "status")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    app_db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(app_db)) as c:
        c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "collector": {"listen": f"127.0.0.1:{ports['collector']}", "sink_dir": str(tmp_path / "sink")},
            "agent": {
                "listen": f"127.0.0.1:{ports['agent']}",
                "collectors": [url["collector"]],
                "state_dir": str(tmp_path / "agent"),
                "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
            },
            "relay": {
                "listen": f"127.0.0.1:{ports['relay']}",
                "source": f"sqlite:///{app_db}",
                "state_dir": str(tmp_path / "relay"),
            },
        },
    )
    up = _up(tmp_path, cfg, ports["status"])
    stop = threading.Event()
    written = {"lines": 0}

    def writer() -> None:
        with contextlib.closing(sqlite3.connect(app_db, timeout=30)) as c, (logs / "app.log").open("ab") as f:
            while not stop.is_set():
                i = written["lines"]
                f.write(f"status page line {i:08d} {'x' * 80}\n".encode())
                f.flush()
                c.execute("INSERT INTO t VALUES (?, ?)", (i, f"v{i}"))
                c.commit()
                written["lines"] = i + 1
                time.sleep(0.01)

    thread = threading.Thread(target=writer, daemon=True)
    browser: Chromium | None = None
    collector_pid: int | None = None
    try:
        thread.start()
        browser = Chromium(tmp_path)
        browser.navigate(url["status"] + "/")

        # every part shows, healthy; the charts draw from the polled numbers while data flows
        def all_ok() -> dict[str, Any] | None:
            st = browser.eval(PAGE_STATE)
            ok = st["overall"] == "ok" and set(st["parts"]) == {"collector", "agent", "relay"}
            return st if ok and all(p["health"] == "ok" for p in st["parts"].values()) else None

        wait_until(all_ok, 20, "the page to show three healthy parts")

        def drawn(part: str, key: str) -> dict[str, Any] | None:
            c = browser.eval(f"{CHART}({json.dumps(part)}, {json.dumps(key)})")
            return c if c and c["drawn"] == "1" and c["points"] >= 3 and c["max"] > 0 and c["blue"] > 50 else None

        chart = wait_until(lambda: drawn("collector", "bytes_per_s"), 20, "the collector's bytes/s chart to draw")
        wait_until(lambda: drawn("relay", "events_per_s"), 20, "the relay's events/s chart to draw")
        shot = browser.screenshot(tmp_path / "status-page.png")
        print(f"\nstatus page screenshot (traffic flowing): {shot}; chart {chart}")

        # traffic stops: the figures shown are those of each part's /v1/status
        stop.set()
        thread.join(10)
        wait_until(
            lambda: (
                all(s["lag_bytes"] == 0 for s in _status(url["agent"])["streams"])
                and _status(url["relay"])["newest_scn"] >= written["lines"]
            ),
            30,
            "the agent to ship everything and the relay to capture every row",
        )

        def figures_match() -> bool:
            page = browser.eval(PAGE_STATE)["parts"]
            col, agent, relay = _status(url["collector"]), _status(url["agent"]), _status(url["relay"])
            want = {
                ("collector", "bytes_in"): col["bytes_in"],
                ("collector", "chunks_in"): col["chunks_in"],
                ("collector", "duplicates"): col["duplicates"],
                ("collector", "sink_files"): col["sink_files_closed"],
                ("agent", "streams"): len(agent["streams"]),
                ("agent", "lag_bytes"): 0,
                ("agent", "spool_bytes"): agent["spool"]["used_bytes"],
                ("relay", "newest_scn"): relay["newest_scn"],
                ("relay", "oldest_scn"): relay["oldest_scn"],
            }
            return all(page[part]["figs"].get(key) == str(value) for (part, key), value in want.items())

        wait_until(figures_match, 15, "the page's figures to equal /v1/status")
        assert _status(url["collector"])["bytes_in"] > 0

        code, doc = _headrace_status(cfg)
        assert code == 0, doc
        assert doc["ok"] and [p["name"] for p in doc["parts"]] == ["collector", "agent", "relay"]
        assert doc["parts"][0]["figures"]["bytes_in"] == _status(url["collector"])["bytes_in"]

        # the collector stops (SIGSTOP: up does not restart it): an error on the page within seconds
        overview = httpx.get(url["status"] + "/v1/overview", timeout=10).json()
        collector_pid = overview["supervisor"]["collector"]["pid"]
        assert collector_pid and overview["supervisor"]["collector"]["state"] == "running"
        os.kill(collector_pid, signal.SIGSTOP)
        stopped_at = time.monotonic()

        def collector_error() -> dict[str, Any] | None:
            st = browser.eval(PAGE_STATE)
            bad = st["parts"]["collector"]["health"] == "unreachable" and st["overall"] == "failed"
            return st if bad and any(p.startswith("collector:") for p in st["problems"]) else None

        st = wait_until(collector_error, 10, "the page to show the stopped collector as an error")
        print(f"collector error shown after {time.monotonic() - stopped_at:.1f} s: {st['problems']}")
        assert st["order"][0] == "collector", "errors first"
        browser.screenshot(tmp_path / "status-page-collector-stopped.png")
        code, doc = _headrace_status(cfg)
        assert code == 1
        assert not doc["ok"] and doc["problems"][0].startswith("collector: not reachable")

        os.kill(collector_pid, signal.SIGCONT)
        collector_pid = None
        wait_until(all_ok, 15, "the page to show every part healthy again")
        assert _headrace_status(cfg)[0] == 0

        # a collector that dies (SIGKILL) is restarted by up: the page counts the restart
        pid = httpx.get(url["status"] + "/v1/overview", timeout=10).json()["supervisor"]["collector"]["pid"]
        os.kill(pid, signal.SIGKILL)
        restarted = "document.querySelector('[data-part=collector]').dataset.restarts"
        wait_until(lambda: browser.eval(restarted) == "1" and all_ok(), 20, "the page to show the collector restarted")

        # each daemon's own page (GET /) polls its own /v1/status and /healthz
        for part, fig, want in (("agent", "streams", "1"), ("relay", "capture", "running")):
            browser.navigate(url[part] + "/")

            def own_page(part: str = part, fig: str = fig, want: str = want) -> bool:
                st = browser.eval(PAGE_STATE)
                return st["parts"].get(part, {}).get("health") == "ok" and st["parts"][part]["figs"].get(fig) == want

            wait_until(own_page, 10, f"the {part}'s own page to show it healthy")
        browser.screenshot(tmp_path / "status-page-relay.png")
        assert browser.exceptions == [], "the page threw"
        print(f"test took {time.monotonic() - t0:.1f} s")
    finally:
        stop.set()
        if collector_pid is not None:
            os.kill(collector_pid, signal.SIGCONT)
        if browser is not None:
            browser.close()
        _stop(up)


def test_daemon_page_is_open_but_its_data_needs_a_read_token_and_up_uses_each_parts_token(tmp_path: Path) -> None:
    ports = {"collector": free_port(), "status": free_port()}
    collector = f"http://127.0.0.1:{ports['collector']}"
    status = f"http://127.0.0.1:{ports['status']}"
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "collector": {
                "listen": f"127.0.0.1:{ports['collector']}",
                "sink_dir": str(tmp_path / "sink"),
                "tokens": [
                    {"token": "writer-secret", "scopes": ["write"]},
                    {"token": "reader-secret", "scopes": ["read"]},
                ],
            }
        },
    )
    up = _up(tmp_path, cfg, ports["status"])
    try:
        page = httpx.get(collector + "/", timeout=5)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '"part": "collector"' in page.text and "<canvas" in page.text
        assert "://" not in page.text and "src=" not in page.text and "<link" not in page.text  # no CDN
        assert httpx.get(collector + "/v1/status", timeout=5).status_code == 401
        assert httpx.get(status + "/v1/overview", timeout=5).status_code == 401
        assert httpx.get(status + "/", timeout=5).status_code == 200
        writer = {"Authorization": "Bearer writer-secret"}
        assert httpx.get(status + "/v1/overview", headers=writer, timeout=5).status_code == 401  # read tokens only
        doc = httpx.get(status + "/v1/overview", headers={"Authorization": "Bearer reader-secret"}, timeout=10).json()
        (part,) = doc["parts"]
        assert part["ok"] and part["status"]["name"] and doc["problems"] == []
        assert httpx.get(status + "/healthz", timeout=10).json() == {"ok": True, "problems": []}
        code, out = _headrace_status(cfg)
        assert code == 0 and out["parts"][0]["status"] is not None
        if chromium_path() is not None:  # in the browser: no token, the page asks for one; #token=… works
            browser = Chromium(tmp_path)
            try:
                browser.navigate(collector + "/")
                wait_until(
                    lambda: browser.eval("getComputedStyle(document.getElementById('token-form')).display") == "block",
                    10,
                    "the page to ask for a token",
                )
                browser.navigate(collector + "/#token=reader-secret")
                wait_until(
                    lambda: browser.eval(PAGE_STATE)["parts"].get("collector", {}).get("health") == "ok",
                    10,
                    "the page to show the collector with the token from the fragment",
                )
                assert "token" not in browser.eval("location.href")  # taken out of the address bar
            finally:
                browser.close()
    finally:
        _stop(up)


def test_headrace_status_exits_1_when_nothing_answers(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "h.yaml", {"relay": {"listen": f"127.0.0.1:{port}", "source": "sqlite:///x.db"}})
    code, doc = _headrace_status(cfg)
    assert code == 1
    assert doc["problems"] == [f"relay: {doc['parts'][0]['error']}"] and "not reachable" in doc["parts"][0]["error"]
    table = subprocess.run(
        [sys.executable, "-m", "headrace", "status", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 1 and "UNREACHABLE" in table.stdout


def test_figures_problems_and_open_listen_rules() -> None:
    col = {"bytes_in": 10, "chunks_in": 2, "duplicates": 1, "rejects": {"bad_chunk": 2, "unauthorized": 1},
           "sink_files_closed": 3, "store": {"open_file": "f.avro"}}  # fmt: skip
    assert figures("collector", col) == {"bytes_in": 10, "chunks_in": 2, "duplicates": 1, "rejects": 3,
                                         "sink_files": 3, "open_file": "f.avro"}  # fmt: skip
    agent = {"streams": [{"lag_bytes": 5, "acked_offset": 7}, {"lag_bytes": 1, "acked_offset": 3}],
             "spool": {"used_bytes": 9, "cap_bytes": 100}, "last_ack_from": None}  # fmt: skip
    assert figures("agent", agent)["lag_bytes"] == 6 and figures("agent", agent)["acked_bytes"] == 10
    relay = {"oldest_scn": 3, "newest_scn": 50, "fill": 0.5, "events_per_s": 2.5, "capture": {"state": "stopped"},
             "subscribers": [{"last_scn": 40}, {"last_scn": None}, {"last_scn": 10}]}  # fmt: skip
    f = figures("relay", relay)
    assert f["max_subscriber_lag"] == 40 and f["capture"] == "stopped" and f["subscribers"] == 3
    boot = figures("bootstrap", {"applied_scn": 4, "building": {"gen": 2}, "reseeds": {"count": 5}})
    assert boot["seeding"] is True and boot["reseeds"] == 5
    parts = [
        {"name": "collector", "ok": True, "reachable": True},
        {"name": "agent", "ok": False, "reachable": True, "error": "/healthz 503: spool full"},
        {"name": "relay", "ok": False, "reachable": False, "error": "not reachable"},
    ]
    assert problems(parts) == ["relay: not reachable", "agent: /healthz 503: spool full"]
    assert insecure("127.0.0.1:7000", []) is None
    assert "reachable from other hosts" in (insecure("0.0.0.0:7000", []) or "")


def test_up_status_listen_in_use_exits_6_before_any_part_starts(tmp_path: Path) -> None:
    import socket

    port = free_port()
    cfg = write_config(
        tmp_path / "h.yaml", {"collector": {"listen": f"127.0.0.1:{free_port()}", "sink_dir": str(tmp_path / "sink")}}
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        p = subprocess.run(
            [sys.executable, "-m", "headrace", "up", "--config", str(cfg), "--status-listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert p.returncode == 6, p.stderr
    assert f"127.0.0.1:{port} (--status-listen)" in p.stderr and "in use" in p.stderr
    assert not (tmp_path / "sink").exists()  # no part was started
