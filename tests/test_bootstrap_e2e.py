"""End-to-end bootstrap tests: real relay, bootstrap server, writer and subscriber processes, SQLite."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import httpx
from bootstrap_stack import Stack, Sub
from support import wait_until


def _finish(stack: Stack, sub: Sub, timeout: float = 120) -> dict[tuple[str, Any], dict[str, Any]]:
    """Stop the writers, wait until the subscriber has the source's last change, let it idle-exit;
    return the source rows. (Waiting on the checkpoint, not on the idle timeout alone: a relay that
    lags under load must not make the subscriber quit before the last changes arrive.)"""
    stack.stop_writers()
    final = wl.final_scn(stack.db)
    wait_until(lambda: (sub.saved() or {}).get("scn", -1) >= final, timeout, f"the subscriber at SCN {final}", 0.2)
    rc = sub.wait(timeout)
    assert rc == 0, sub.errors()
    return wl.source_rows(stack.db)


def _assert_equal(src: dict[Any, Any], copy: dict[Any, Any]) -> None:
    missing = [k for k in src if k not in copy][:5]
    extra = [k for k in copy if k not in src][:5]
    wrong = [k for k in src if k in copy and copy[k] != src[k]][:5]
    assert not missing and not extra and not wrong, (missing, extra, [(src[k], copy[k]) for k in wrong])
    assert copy == src


def test_new_subscriber_of_100k_rows_bootstraps_then_follows_the_relay(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=100_000)
    try:
        stack.start_relay()
        stack.start_writers(1)
        stack.start_bootstrap()
        stack.wait_ready()
        sub = Sub(stack, "new", "--from-snapshot")
        sub.start()
        wait_until(lambda: (sub.saved() or {}).get("phase") == "relay", 180, "the subscriber to reach the relay", 0.3)
        time.sleep(1.0)  # live changes from the relay too
        src = _finish(stack, sub)
    finally:
        stack.kill_all()
    copy = sub.copy()
    assert len(src) > 90_000
    _assert_equal(src, copy)
    ops = {json.loads(line).get("op") for line in sub.lines()}
    assert "r" in ops and ops & {"c", "u", "d"}, ops
    # back on the relay: the relay saw this subscriber at the end of the stream
    relay_status = httpx.get(stack.relay_url + "/v1/status").json()
    assert any(s["last_scn"] >= sub.saved()["scn"] for s in relay_status["subscribers"])  # type: ignore[index]


def test_paused_subscriber_falls_off_the_relay_and_recovers_through_bootstrap(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(
        tmp_path, daemons, rows=2_000, relay={"buffer_bytes": 64 << 10}, bootstrap={"retention_seconds": 3600}
    )
    base = wl.source_rows(stack.db)  # the rows before capture began (the relay only has changes)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        sub = Sub(stack, "late")
        sub.start(idle_exit=8)  # no checkpoint and no --from-snapshot: starts on the relay
        wait_until(lambda: sub.saved() is not None, 30, "the subscriber's first checkpoint (SCN 0)", 0.1)
        stack.start_writers(1, sleep_ms=2)
        wait_until(lambda: (sub.saved() or {}).get("scn", 0) > 0, 60, "the subscriber to follow the relay", 0.2)
        assert sub.proc is not None
        sub.proc.send_signal(signal.SIGSTOP)
        # whatever the paused process may still have in flight ends at the relay's newest SCN now
        paused_at = httpx.get(stack.relay_url + "/v1/status").json()["newest_scn"]
        wait_until(
            lambda: httpx.get(stack.relay_url + "/v1/status").json()["oldest_scn"] > paused_at,
            120,
            "the relay's buffer to move past the paused subscriber",
            0.3,
        )
        sub.proc.send_signal(signal.SIGCONT)
        err = sub.runs[0].with_suffix(".err")

        def switched() -> bool:
            return "scn_too_old_switching_to_bootstrap" in err.read_text(errors="replace")

        wait_until(switched, 60, "the switch to the bootstrap server", 0.1)
        # the catch-up can be over between two looks at the checkpoint file, so wait for what follows
        # it: the relay phase at an SCN past the pause (the relay no longer had that stretch)
        wait_until(
            lambda: (cp := sub.saved() or {}).get("phase") == "relay" and cp.get("scn", 0) > paused_at,
            120,
            "the return to the relay past the paused SCN",
            0.2,
        )
        time.sleep(0.5)
        src = _finish(stack, sub)
    finally:
        stack.kill_all()
    assert switched()
    # nothing lost: the events before the pause, the catch-up and the relay again rebuild the table
    # exactly from the rows that existed before capture began
    _assert_equal(src, wl.materialise(sub.lines(), into=base))
    assert sub.saved()["phase"] == "relay"  # type: ignore[index]


def test_kill9_of_bootstrap_while_applying_and_serving_and_of_subscriber_mid_snapshot(
    tmp_path: Path, daemons: Any
) -> None:
    stack = Stack(
        tmp_path,
        daemons,
        rows=30_000,
        bootstrap={"seed_page_rows": 1_000, "max_snapshot_rows": 500, "session_timeout_seconds": 60},
    )
    try:
        stack.start_relay()
        stack.start_writers(1, sleep_ms=3)
        # kill -9 while seeding/applying
        stack.start_bootstrap()
        wait_until(lambda: (stack.status()["seed"] or {}).get("after") is not None, 60, "seeding to be under way", 0.05)
        stack.boot.kill9()
        stack.start_bootstrap()
        st = stack.status()
        assert st["seed"]["after"] is not None or st["seed"]["done"], st  # resumed, not restarted
        stack.wait_ready()
        wait_until(lambda: stack.status()["unapplied_windows"] > 0, 30, "windows waiting to be applied", 0.02)
        stack.boot.kill9()
        stack.start_bootstrap()
        stack.wait_ready()

        sub = Sub(stack, "fresh", "--from-snapshot")
        sub.start(idle_exit=8)
        # kill -9 of the subscriber mid-snapshot
        wait_until(lambda: (sub.saved() or {}).get("phase") == "snapshot", 60, "the snapshot to be under way", 0.02)
        sub.kill9()
        resumed_after = sub.saved()["position"]["after"]  # type: ignore[index]
        first_run_r = sum(1 for line in sub.lines() if '"op": "r"' in line)
        sub.start(idle_exit=8)
        # kill -9 of the bootstrap server while it serves
        wait_until(
            lambda: (sub.saved() or {}).get("position", {}).get("after") not in (None, resumed_after),
            60,
            "the resumed snapshot to go on",
            0.02,
        )
        stack.boot.kill9()
        stack.start_bootstrap()
        wait_until(lambda: (sub.saved() or {}).get("phase") == "relay", 180, "the subscriber to reach the relay", 0.3)
        src = _finish(stack, sub)
    finally:
        stack.kill_all()
    _assert_equal(src, sub.copy())
    # the restarted subscriber went on after its checkpoint instead of starting over
    second_run = [json.loads(x) for x in sub.runs[1].read_text().splitlines() if x]
    r_keys = [e["key"][0] for e in second_run if e.get("op") == "r" and e["table"] == "accounts"]
    assert first_run_r >= 500 and r_keys and min(r_keys) > 500, (first_run_r, r_keys[:3])


def test_relay_restart_loses_nothing(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=5_000)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        stack.start_writers(1, sleep_ms=2)
        wait_until(
            lambda: stack.status()["applied_scn"] > stack.status()["seed"]["high_scn"] + 500, 60, "progress", 0.2
        )
        stack.relay.kill9()
        time.sleep(1.5)  # writers go on while no relay runs
        stack.start_relay()
        time.sleep(1.5)
        stack.stop_writers()
        newest = wl.change_log_head(stack.db)
        wait_until(lambda: stack.status()["applied_scn"] >= newest, 60, "the store to apply every change", 0.2)
        # the relay pruned the source's log, but only below what the store had applied
        wait_until(lambda: wl.pruned_scn(stack.db) > 0, 30, "the relay to prune acknowledged log", 0.2)
        pruned = wl.pruned_scn(stack.db)
        assert pruned <= stack.status()["applied_scn"]
        sub = Sub(stack, "check", "--from-snapshot")
        sub.start(idle_exit=3)
        assert sub.wait(120) == 0, sub.errors()
    finally:
        stack.kill_all()
    _assert_equal(wl.source_rows(stack.db), sub.copy())
