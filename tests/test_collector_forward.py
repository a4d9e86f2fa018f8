"""Collectors in a tree: A forwards to B through its spool; B's outages and A's crash lose and duplicate nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from collector_helpers import (
    HTTP,
    assert_done_files_whole,
    assert_exactly_once,
    make_chunk,
    post,
    restart,
    start_collector,
)
from support import free_port, wait_until, write_config


def start_forwarder(daemons: Any, tmp_path: Path, upstream: str, **settings: Any) -> tuple[Any, str]:
    port = free_port()
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "sink_dir": str(tmp_path / "fwd"),
        "name": "fwd",
        "upstream": [upstream],
        "upstream_token": "up-token",
        "upstream_max_backoff": 0.5,
        **settings,
    }
    path = write_config(tmp_path / "fwd.yaml", {"collector": cfg})
    d = daemons(["collector", "--config", str(path)], "fwd").start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz")
    return d, url


def spool_empty(url: str) -> bool:
    return bool(HTTP.get(url + "/v1/status", timeout=5).json()["store"]["spool_chunks"] == 0)


def test_forwarding_survives_upstream_outage_and_forwarder_crash(daemons: Any, tmp_path: Path) -> None:
    b, b_url, b_sink = start_collector(daemons, tmp_path, name="root", tokens=["up-token"])
    a, a_url = start_forwarder(daemons, tmp_path, b_url)
    streams = ["app/one.log", "app/two.log"]
    end = dict.fromkeys(streams, 0)

    def send_round(n_batches: int) -> None:
        for _ in range(n_batches):
            for s in streams:
                chunks = [make_chunk(s, end[s] + k * 640, 20) for k in range(5)]
                assert post(a_url, chunks).json() == {"acked": 5, "duplicates": 0}
                end[s] = chunks[-1].seq_end

    send_round(5)
    wait_until(lambda: spool_empty(a_url), 30, "A to forward everything to B")
    assert HTTP.get(b_url + "/v1/status", headers={"authorization": "Bearer up-token"}).json()["chunks_in"] == 50

    b.kill9()  # upstream down: A keeps acking into its spool
    send_round(10)
    status = HTTP.get(a_url + "/v1/status").json()["store"]
    assert status["spool_chunks"] == 100
    # a re-send to A (the sender lost A's ack) is spooled again and removed by B
    post(a_url, [make_chunk("app/one.log", 0, 20)])
    a.kill9()  # and A crashes with a full spool: it is all on disk
    restart(a, a_url)
    send_round(2)
    time.sleep(1.0)  # B stays down a little longer while A retries
    restart(b, b_url)
    wait_until(lambda: spool_empty(a_url), 60, "A to drain its spool into B after B returned")
    assert a.stop() == 0
    assert b.stop() == 0
    assert_done_files_whole(b_sink)
    assert_exactly_once(b_sink, end)
    assert not list((tmp_path / "fwd").rglob("rejected/*"))


def test_full_forwarding_spool_answers_503_and_recovers(daemons: Any, tmp_path: Path) -> None:
    b, b_url, b_sink = start_collector(daemons, tmp_path, name="root")
    b.kill9()
    a, a_url = start_forwarder(daemons, tmp_path, b_url, spool_cap_bytes=100_000)
    pos = 0
    refused = None
    for _ in range(40):
        chunks = [make_chunk("app/x.log", pos, 100)]  # 3.2 KB
        r = post(a_url, chunks)
        if r.status_code != 200:
            refused = r
            break
        pos = chunks[-1].seq_end
    assert refused is not None and refused.status_code == 503
    assert refused.json()["error"] == "spool_full"
    assert refused.headers["retry-after"]
    restart(b, b_url)
    wait_until(lambda: spool_empty(a_url), 60, "A to drain its spool")
    assert post(a_url, [make_chunk("app/x.log", pos, 100)]).status_code == 200
    pos += 3200
    wait_until(lambda: spool_empty(a_url), 30, "A to forward the last batch")
    assert a.stop() == 0 and b.stop() == 0
    assert_exactly_once(b_sink, {"app/x.log": pos})
