"""Capture that meets a change it cannot take in stops once and says exactly where (healthz, status,
stream headers, log, metrics; `headrace subscribe --idle-exit` exits 4), or with
`on_unrepresentable: null_with_marker` delivers the row with the column null and marked and goes on;
`POST /v1/ack` refuses SCNs the relay has not served (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from db_servers import PgServer
from relay_poison_source import sitecustomize_dir
from relay_support import relay_config, start_relay
from sources_harness import collect as collect_from
from sources_harness import start_relay as start_source_relay
from support import free_port, wait_until

from headrace.relay.client import MemoryCheckpointStore, Subscriber, Window
from headrace.relay.client._relay_client import RelayClient
from headrace.relay.sources._pgoutput import parse_lsn

UNREPRESENTABLE = "_headrace_unrepresentable"


def _write(db: Path, *statements: str) -> None:
    """One transaction of the application's."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for s in statements:
            conn.execute(s)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if got == labels:
                return float(m.group(3))
    return None


def _windows_until(
    url: str, until_scn: int | None = None, since: int = 0, events: int | None = None, timeout: float = 30
) -> list[Window]:
    """Windows after ``since`` until one ends at ``until_scn`` or later, or ``events`` events arrived."""
    sub = Subscriber([url], checkpoint_store=MemoryCheckpointStore(), start_scn=since, wait_ms=300, backoff_max=0.5)
    out: list[Window] = []
    n = 0
    try:
        for w in sub.windows(idle_exit=timeout):
            out.append(w)
            n += len(w.events)
            if (until_scn is not None and w.scn >= until_scn) or (events is not None and n >= events):
                break
    finally:
        sub.close()
    assert out, f"nothing arrived after SCN {since}"
    if until_scn is not None:
        assert out[-1].scn >= until_scn, f"windows up to {until_scn} did not arrive: {[w.scn for w in out]}"
    if events is not None:
        assert n >= events, f"only {n} of {events} events arrived"
    return out


def _capture_stops(relay_log: str) -> list[dict[str, Any]]:
    out = []
    for line in relay_log.splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event") == "capture_stopped":
                out.append(rec)
    return out


def test_unrepresentable_value_stops_capture_loudly_then_null_with_marker_delivers_everything(
    daemons: Any, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    _write(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)")
    port = free_port()
    env = sitecustomize_dir(tmp_path)
    cfg = relay_config(tmp_path, db, port)
    relay = daemons(["relay", "--config", str(cfg)], "relay-stop", env).start()
    url = f"http://127.0.0.1:{port}"
    relay.wait_http(url + "/healthz")

    _write(db, *(f"INSERT INTO t VALUES ({i}, {i}, 'ok')" for i in (1, 2, 3)))  # SCNs 1-3
    wait_until(lambda: httpx.get(url + "/v1/status").json()["newest_scn"] == 3, 20, "the first window")
    _write(db, "INSERT INTO t VALUES (4, 'poison-4', 'bad')")  # SCN 4: n cannot be encoded as a long
    _write(db, "INSERT INTO t VALUES (5, 5, 'after')")  # SCN 5

    # /healthz: 503 naming table, column and SCN
    r = wait_until(lambda: (r := httpx.get(url + "/healthz")).status_code == 503 and r, 20, "healthz to turn red")
    h = r.json()
    assert h["ok"] is False and h["reason"] == "capture_stopped" and "poison-4" in h["capture_error"]
    assert {k: h["capture"][k] for k in ("state", "reason", "table", "column", "scn")} == {
        "state": "stopped",
        "reason": "unrepresentable_value",
        "table": "t",
        "column": "n",
        "scn": 4,
    }
    # /v1/status: the capture object; the relay goes on serving what it holds
    st = httpx.get(url + "/v1/status").json()
    cap = st["capture"]
    assert cap["state"] == "stopped" and cap["policy"] == "stop"
    assert (cap["table"], cap["column"], cap["scn"]) == ("t", "n", 4) and cap["since"] and "poison-4" in cap["error"]
    assert st["newest_scn"] == 3
    # metrics
    metrics = httpx.get(url + "/metrics").text
    assert _metric(metrics, "headrace_relay_capture_stopped") == 1.0
    assert _metric(metrics, "headrace_relay_unrepresentable_values_total", column="n", table="t") == 1.0
    # stream responses say so, and the client library exposes it
    r = httpx.get(url + "/v1/stream", params={"since": 0, "wait_ms": 0})
    assert r.status_code == 200 and r.headers["x-headrace-capture"] == "stopped"
    info = json.loads(r.headers["x-headrace-capture-error"])
    assert (info["reason"], info["table"], info["column"], info["scn"]) == ("unrepresentable_value", "t", "n", 4)
    client = RelayClient(url)
    batch = client.stream(0, wait_ms=0)
    client.close()
    assert [e.scn for w in batch.windows for e in w] == [1, 2, 3]
    assert batch.capture_stopped is not None and batch.capture_stopped.column == "n"
    assert batch.capture_stopped.scn == 4

    # `headrace subscribe --idle-exit`: prints what it got, then the reason on stderr, exit code 4
    sub = subprocess.run(
        [sys.executable, "-m", "headrace", "subscribe", "--relay", url, "--idle-exit", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sub.returncode == 4, sub.stderr
    assert [json.loads(line)["scn"] for line in sub.stdout.splitlines()] == [1, 2, 3]
    assert "capture is stopped" in sub.stderr and "table=t column=n scn=4" in sub.stderr, sub.stderr

    # one log line, not a loop: still exactly one after the subscriber's seconds of polling
    stops = _capture_stops(relay.output())
    assert len(stops) == 1, stops
    assert (stops[0]["table"], stops[0]["column"], stops[0]["scn"], stops[0]["level"]) == ("t", "n", 4, "error")

    # the way out (docs/relay.md): switch the policy and restart; nothing else is lost
    assert relay.stop() == 0
    _write(db, "INSERT INTO t VALUES (6, 6, 'while down')")  # SCN 6 (then 7-8, 9, 10, 11 below)
    cfg2 = relay_config(tmp_path, db, port, on_unrepresentable="null_with_marker")
    relay2 = daemons(["relay", "--config", str(cfg2)], "relay-marker", env).start()
    relay2.wait_http(url + "/healthz")
    # later windows, with more poison: in an insert, and in both images of an update
    _write(db, "INSERT INTO t VALUES (7, 'poison-7', 'bad again')", "INSERT INTO t VALUES (8, 8, 'same txn')")
    _write(db, "UPDATE t SET s = 'updated' WHERE id = 4")
    _write(db, "UPDATE t SET n = 40 WHERE id = 4")
    _write(db, "INSERT INTO t VALUES (9, 9, 'last')")
    last = sqlite3.connect(db).execute("SELECT max(scn) FROM headrace_changes").fetchall()[0][0]
    windows = _windows_until(url, last)
    events = [e for w in windows for e in w.events]
    assert [e.scn for e in events] == list(range(1, last + 1)), "every change arrives, in order"
    by_scn = {e.scn: e for e in events}
    marked = {e.scn for e in events if e.unrepresentable}
    assert marked == {4, 7, 9, 10}
    assert by_scn[4].after == {"id": 4, "n": None, "s": "bad"} and by_scn[4].unrepresentable == ("n",)
    assert by_scn[7].after == {"id": 7, "n": None, "s": "bad again"} and by_scn[7].unrepresentable == ("n",)
    assert by_scn[9].before == {"id": 4, "n": None, "s": "bad"}
    assert by_scn[9].after == {"id": 4, "n": None, "s": "updated"} and by_scn[9].unrepresentable == ("n",)
    assert by_scn[10].after == {"id": 4, "n": 40, "s": "updated"}
    assert by_scn[10].unrepresentable == ("n",), "the before image of the update still lacks its value"
    # rows that encode keep the table's own schema: no marker column, nothing nulled
    for scn in (1, 5, 6, 8, 11):
        assert not by_scn[scn].unrepresentable and UNREPRESENTABLE not in (by_scn[scn].after or {})
    assert by_scn[8].after == {"id": 8, "n": 8, "s": "same txn"}

    assert httpx.get(url + "/healthz").status_code == 200
    r = httpx.get(url + "/v1/stream", params={"since": last, "wait_ms": 0})
    assert r.headers["x-headrace-capture"] == "running" and "x-headrace-capture-error" not in r.headers
    cap = httpx.get(url + "/v1/status").json()["capture"]
    assert cap["state"] == "running" and cap["policy"] == "null_with_marker" and cap["error"] is None
    # nulled values: SCN 4 (insert), 7 (insert), 9 (before and after), 10 (before)
    assert cap["unrepresentable_nulled"] == [{"table": "t", "column": "n", "count": 5, "last_scn": 10}]
    metrics = httpx.get(url + "/metrics").text
    assert _metric(metrics, "headrace_relay_unrepresentable_values_total", column="n", table="t") == 5.0
    assert _metric(metrics, "headrace_relay_capture_stopped") == 0.0
    assert not _capture_stops(relay2.output())
    nulled_logs = [ln for ln in relay2.output().splitlines() if "unrepresentable_value_nulled" in ln]
    assert len(nulled_logs) == 1 and '"column": "n"' in nulled_logs[0]  # once per column, then counted


def test_ack_refuses_what_the_relay_has_not_served_sqlite(daemons: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    _write(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    _relay, url = start_relay(daemons, tmp_path, db, durable_consumers=["bs"])
    _write(db, *(f"INSERT INTO t VALUES ({i}, 'x')" for i in range(1, 6)))
    wait_until(lambda: httpx.get(url + "/v1/status").json()["newest_scn"] == 5, 20, "the relay to take SCN 5 in")
    bad: list[tuple[Any, str]] = [
        ({"consumer": "bs", "scn": 6}, "scn_not_served"),
        ({"consumer": "bs", "scn": 1 << 40}, "scn_not_served"),
        ({"consumer": "bs", "scn": -1}, "bad_scn"),
        ({"consumer": "bs", "scn": "3"}, "bad_scn"),
        ({"consumer": "bs", "scn": 3.0}, "bad_scn"),
        ({"consumer": "bs", "scn": True}, "bad_scn"),
        ({"consumer": "bs", "scn": None}, "bad_scn"),
        ({"consumer": "bs", "scn": 1 << 64}, "bad_scn"),
        ({"consumer": "bs"}, "bad_body"),
        ([3], "bad_body"),
        ({"consumer": "nobody", "scn": 3}, "unknown_consumer"),
    ]
    for body, reason in bad:
        r = httpx.post(url + "/v1/ack", json=body)
        assert r.status_code == 400 and r.json()["error"] == reason and r.json()["detail"], (body, r.text)
    r = httpx.post(url + "/v1/ack", json={"consumer": "bs", "scn": 9})
    assert r.json()["newest_scn"] == 5
    assert httpx.get(url + "/v1/status").json()["durable_consumers"] == {}, "a refused ack changes nothing"
    assert not (tmp_path / "relay-state" / "acks.json").exists()
    r = httpx.post(url + "/v1/ack", json={"consumer": "bs", "scn": 5})
    assert r.status_code == 200 and r.json()["scn"] == 5
    r = httpx.post(url + "/v1/ack", json={"consumer": "bs", "scn": 2})  # never moves back
    assert r.status_code == 200 and r.json()["scn"] == 5
    assert httpx.get(url + "/v1/status").json()["durable_consumers"] == {"bs": 5}
    metrics = httpx.get(url + "/metrics").text
    assert _metric(metrics, "headrace_relay_rejects_total", reason="scn_not_served") == 3.0


def _confirmed_flush(pg: PgServer, slot: str) -> str:
    [(lsn,)] = pg.execute(f"SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'")
    return str(lsn)


def test_ack_of_a_future_scn_is_refused_and_later_changes_still_arrive_postgres(
    pg_server: PgServer, tmp_path: Path, daemons: Any
) -> None:
    db = pg_server.create_database("pgackfuture")
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", db)
    relay_opts: dict[str, Any] = {
        "durable_consumers": ["bootstrap"],
        "postgres": {"slot": "future", "publication": "future", "status_interval": 1},
    }
    relay, url = start_source_relay(daemons, tmp_path, pg_server.url(db), **relay_opts)
    pg_server.execute("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 10) g", db)
    first = collect_from(url, ["t"], 10, timeout=30)
    newest = first[-1].scn
    flush_before = _confirmed_flush(pg_server, "future")

    # an SCN 200 MB past anything the relay has taken in (past the end of WAL): refused, nothing changed
    future = newest + 200 * (1 << 20)
    r = httpx.post(url + "/v1/ack", json={"consumer": "bootstrap", "scn": future})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "scn_not_served" and r.json()["newest_scn"] == newest
    assert httpx.get(url + "/v1/status").json()["durable_consumers"] == {}
    assert relay.stop() == 0
    # the slot may cross WAL without changes (keepalive feedback), but never the unacknowledged
    # transaction, let alone the refused SCN
    flush_after = parse_lsn(_confirmed_flush(pg_server, "future"))
    assert parse_lsn(flush_before) <= flush_after < newest

    # changes committed while the relay is down are delivered after its restart
    pg_server.execute("INSERT INTO t SELECT g, 'while down' FROM generate_series(11, 20) g", db)
    relay.start()
    relay.wait_http(url + "/healthz", timeout=30)
    pg_server.execute("INSERT INTO t SELECT g, 'after restart' FROM generate_series(21, 25) g", db)
    later = _windows_until(url, since=newest, events=15)
    got = [(e.after or {})["id"] for w in later for e in w.events]
    assert got == list(range(11, 26))
