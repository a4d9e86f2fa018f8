"""The relay's HTTP API against real relay processes: too old, bad requests, auth, buffer bound,
partition and range filters, schema changes mid-stream, uninstall."""

from __future__ import annotations

import collections
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import relay_workload as wl
from relay_support import collect, relay_config, start_relay, status, write_workload
from support import free_port, wait_until

from headrace.errors import ScnTooOld
from headrace.relay.client import ChangeEvent, Consumer, MemoryCheckpointStore, Subscriber, Window

TOKEN = "s3cret-token"


def _events(seed: int, n: int) -> int:
    return sum(len(t) for t in wl.expected_events(seed, n))


def test_small_buffer_bound_too_old_bad_requests_and_auth(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    cap = 1 << 20
    _relay, url = start_relay(daemons, tmp_path, db, buffer_bytes=cap, tokens=[TOKEN])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    n_txn = 1500
    total = _events(3, n_txn)
    assert write_workload(db, 3, 0, n_txn).wait(120) == 0
    wait_until(
        lambda: httpx.get(url + "/v1/status", headers=auth).json()["newest_scn"] == total, 60, "relay to catch up"
    )

    # the buffer held more than its bound in total, and stays within it (accounted and measured)
    st = httpx.get(url + "/v1/status", params={"measure": 1}, headers=auth).json()
    assert st["evicted_windows"] > 0 and st["oldest_scn"] > 0
    # (the lower bound leaves room for large windows: under load SQLite windows group transactions)
    assert cap // 2 <= st["bytes"] <= cap
    assert st["measured_bytes"] <= 1.1 * cap

    # too old: 410 with the machine-readable reason and the oldest SCN, and ScnTooOld in the client
    r = httpx.get(url + "/v1/stream", params={"since": 0}, headers=auth)
    assert r.status_code == 410
    assert r.json()["error"] == "scn_too_old" and r.json()["oldest_scn"] == st["oldest_scn"]
    with pytest.raises(ScnTooOld) as exc_info:
        next(Subscriber([url], token=TOKEN, start_scn=0).windows())
    assert exc_info.value.oldest_scn == st["oldest_scn"]

    # from the oldest SCN held, every later change arrives (SQLite SCNs are consecutive row ids)
    sub = Subscriber([url], token=TOKEN, start_scn=st["oldest_scn"], wait_ms=300)
    got = [e.scn for w in collect(sub, total - st["oldest_scn"], timeout=60) for e in w.events]
    assert got == list(range(st["oldest_scn"] + 1, total + 1))

    # auth
    assert httpx.get(url + "/v1/stream").status_code == 401
    r = httpx.get(url + "/v1/status", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert httpx.get(url + "/healthz").status_code == 200

    # bad requests: 400 with the reason, nothing served
    bad = [
        ({"since": "abc"}, "bad_since"),
        ({"since": "-1"}, "bad_since"),
        ({"max_bytes": "0"}, "bad_max_bytes"),
        ({"wait_ms": "99999999"}, "bad_wait_ms"),
        ({"filter": "mod:4:4"}, "bad_filter"),
        ({"filter": "mod:x:1"}, "bad_filter"),
        ({"filter": "hash:3"}, "bad_filter"),
        ({"filter": "range:5"}, "bad_filter"),
        ({"sources": "orders,nope"}, "unknown_source"),
        ({"colour": "blue"}, "unknown_parameter"),
    ]
    for params, reason in bad:
        r = httpx.get(url + "/v1/stream", params=params, headers=auth)
        assert r.status_code == 400, params
        assert r.json()["error"] == reason and r.json()["detail"], params
    r = httpx.get(url + "/v1/schemas/xyz", headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "bad_fingerprint"
    r = httpx.get(url + "/v1/schemas/0123456789abcdef", headers=auth)
    assert r.status_code == 404 and r.json()["error"] == "unknown_schema"
    r = httpx.post(url + "/v1/ack", content=b"{not json", headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "bad_body"
    r = httpx.post(url + "/v1/ack", json={"consumer": "who", "scn": 5}, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "unknown_consumer"
    assert httpx.get(url + "/metrics").status_code == 401  # with tokens set, metrics need a read token too
    metrics = httpx.get(url + "/metrics", headers=auth).text
    assert 'headrace_relay_rejects_total{reason="bad_since"} 2.0' in metrics


def test_mod_partitions_are_disjoint_and_complete_and_filters_select(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    _relay, url = start_relay(daemons, tmp_path, db)
    n_txn = 400
    total = _events(5, n_txn)
    assert write_workload(db, 5, 0, n_txn).wait(60) == 0
    wait_until(lambda: status(url)["newest_scn"] == total, 60, "relay to catch up")

    # failover: the first relay in the list is down
    dead = f"http://127.0.0.1:{free_port()}"
    everything = [e.scn for w in collect(Subscriber([dead, url], wait_ms=300), total, 60) for e in w.events]
    assert len(everything) == total

    # a consumer that raises gets the same window again, whole; the checkpoint waits for success
    class Flaky(Consumer):
        def __init__(self) -> None:
            self.attempts: list[list[int]] = []
            self.errors = 0

        def on_start_window(self, window: Window) -> None:
            self.attempts.append([])

        def on_event(self, event: ChangeEvent) -> None:
            self.attempts[-1].append(event.scn)
            if len(self.attempts) == 2 and len(self.attempts[-1]) == 1:
                raise RuntimeError("consumer bug")

        def on_error(self, error: BaseException, window: Window) -> None:
            self.errors += 1

    store = MemoryCheckpointStore()
    flaky = Flaky()
    Subscriber([url], checkpoint_store=store, wait_ms=300, max_bytes=2000).run(flaky, idle_exit=1.0)
    assert flaky.errors == 1
    first, broken, retried = flaky.attempts[0], flaky.attempts[1], flaky.attempts[2]
    assert broken == retried[:1] and retried[0] == first[-1] + 1
    assert sorted({s for a in flaky.attempts for s in a}) == everything
    assert store.checkpoint is not None and store.checkpoint.scn == total
    parts = []
    for i in range(4):
        sub = Subscriber([url], filter=f"mod:4:{i}", wait_ms=300, start_scn=0)
        scns = [e.scn for w in sub.windows(idle_exit=1.5) for e in w.events]
        assert scns == sorted(scns) and scns
        parts.append(scns)
    counts = collections.Counter(s for p in parts for s in p)
    assert sorted(counts) == everything and set(counts.values()) == {1}, "partitions overlap or miss events"

    # a partitioned subscriber's checkpoint still reaches the newest SCN (scan position)
    sub = Subscriber([url], filter="mod:4:0", wait_ms=300, start_scn=0)
    list(sub.windows(idle_exit=1.0))
    assert sub.checkpoint is not None and sub.checkpoint.scn == total

    # sources + key range
    sub = Subscriber([url], sources=["orders"], filter="range:100:200", wait_ms=300, start_scn=0)
    got = [e for w in sub.windows(idle_exit=1.5) for e in w.events]
    want = [
        (t, op, k)
        for txn in wl.expected_events(5, n_txn)
        for t, op, k, _b, _a in txn
        if t == "orders" and 100 <= k[0] < 200
    ]
    assert [(e.table, e.op.value, e.key) for e in got] == want and want


def test_table_altered_mid_stream_keeps_decoding_and_uninstall(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    relay, url = start_relay(daemons, tmp_path, db)
    assert write_workload(db, 9, 0, 50).wait(60) == 0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ALTER TABLE customers ADD COLUMN level INTEGER")
    conn.execute("ALTER TABLE customers ADD COLUMN since_ts TIMESTAMP")
    wait_until(
        lambda: len(httpx.get(url + "/v1/sources").json()["sources"][0]["versions"]) == 2, 20, "a new schema version"
    )
    for i in range(20):
        conn.execute(
            "INSERT INTO customers (id, name, level, since_ts) VALUES (?, ?, ?, ?)",
            (100_000 + i, f"new{i}", i, f"2024-05-0{1 + i % 9} 10:00:00"),
        )
    total = _events(9, 50) + 20
    windows = collect(Subscriber([url], wait_ms=300, start_scn=0), total, 60)
    cust = [e for w in windows for e in w.events if e.table == "customers"]
    old, new = [e for e in cust if e.key[0] < 100_000], [e for e in cust if e.key[0] >= 100_000]
    assert old and len(new) == 20
    assert {e.schema_version for e in old} == {1} and {e.schema_version for e in new} == {2}
    # the schema change is visible: exactly the first customers event in the new schema says so
    assert [e.schema_changed for e in cust] == [False] * len(old) + [True] + [False] * 19
    assert all("level" not in (e.after or e.before or {}) for e in old)
    assert [e.after["level"] for e in new if e.after] == list(range(20))
    assert new[0].after is not None and new[0].after["since_ts"].isoformat() == "2024-05-01T10:00:00"

    # old events resolved to the application's (newer) reader schema: added fields take their defaults
    v2 = httpx.get(url + "/v1/schemas/" + new[0].fingerprint).json()["schema"]
    sub = Subscriber([url], wait_ms=300, start_scn=0, reader_schemas={"customers": v2})
    resolved = [e for w in collect(sub, total, 60) for e in w.events if e.table == "customers"]
    assert all((e.after or e.before or {}).get("level", "missing") is None for e in resolved[: len(old)])

    # uninstall removes triggers and change log, and leaves the application's tables alone
    assert relay.stop() == 0  # SIGTERM: graceful, exit 0
    cfg = relay_config(tmp_path, db, 0)
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "relay", "uninstall", "--config", str(cfg)], capture_output=True
    )
    assert r.returncode == 0, r.stderr
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert not {n for n in names if n.startswith("headrace_")}
    assert {"orders", "customers", "items"} <= names
    assert conn.execute("SELECT count(*) FROM customers WHERE level IS NOT NULL").fetchone()[0] == 20


def test_change_log_is_pruned_only_below_what_durable_consumers_acknowledged(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    extra = {
        "durable_consumers": ["bootstrap"],
        "sqlite": {"poll_ms": 10, "retention_seconds": 0, "prune_interval_seconds": 0.2},
    }
    relay, url = start_relay(daemons, tmp_path, db, **extra)
    total = _events(13, 200)
    assert write_workload(db, 13, 0, 200).wait(60) == 0
    windows = collect(Subscriber([url], wait_ms=300, start_scn=0), total, 60)
    conn = sqlite3.connect(db)

    def pruned() -> int:
        rows = conn.execute("SELECT v FROM headrace_state WHERE k = 'pruned_scn'").fetchall()
        return int(rows[0][0]) if rows else 0

    time.sleep(1.0)  # several prune rounds: without an acknowledgement nothing goes
    assert pruned() == 0 and conn.execute("SELECT min(scn) FROM headrace_changes").fetchall()[0][0] == 1
    ack = windows[len(windows) // 2].scn
    r = httpx.post(url + "/v1/ack", json={"consumer": "bootstrap", "scn": ack})
    assert r.status_code == 200 and r.json()["scn"] == ack
    wait_until(lambda: pruned() == ack, 20, "pruning up to the acknowledged window end")
    assert conn.execute("SELECT min(scn) FROM headrace_changes").fetchall()[0][0] == ack + 1
    # the acknowledgement survives a restart, and a restarted relay serves from the pruned SCN on
    assert relay.stop() == 0  # SIGTERM: graceful, exit 0
    relay.start()
    relay.wait_http(url + "/healthz")
    assert status(url)["durable_consumers"] == {"bootstrap": ack}
    wait_until(lambda: status(url)["newest_scn"] == total, 30, "the restarted relay to refill its buffer")
    assert httpx.get(url + "/v1/stream", params={"since": ack - 1}).status_code == 410
    got = [e.scn for w in collect(Subscriber([url], wait_ms=300, start_scn=ack), total - ack, 60) for e in w.events]
    assert got == list(range(ack + 1, total + 1))
