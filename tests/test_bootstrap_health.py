"""A bootstrap server that keeps re-seeding because its relay's buffer does not reach back to where a
seed starts answers /healthz 503 saying so (it used to re-seed over and over with ok: true)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from typing import Any

import httpx
import pytest
from bootstrap_stack import Stack
from support import wait_until


def _red(stack: Stack) -> dict[str, Any] | None:
    r = httpx.get(stack.boot_url + "/healthz", timeout=5)
    return r.json() if r.status_code == 503 and "re-seeded" in r.json().get("reason", "") else None


def test_reseeds_within_a_minute_turn_health_red_with_what_to_change(tmp_path: Any, daemons: Any) -> None:
    # the store's record of re-seeds is what the rule reads: three in the last minute, written into a
    # real store the server created, then the server restarted on it (a storm, deterministically)
    stack = Stack(tmp_path, daemons, rows=200)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        assert httpx.get(stack.boot_url + "/healthz", timeout=5).status_code == 200
        stack.boot.stop()
        now = int(time.time() * 1000)
        info = {"count": 3, "last_reason": "relay_no_longer_has_log_scn", "last_time_ms": now, "last_gen": 4,
                "recent_ms": [now - 20_000, now - 10_000, now]}  # fmt: skip
        with contextlib.closing(sqlite3.connect(tmp_path / "boot.db")) as c:
            c.execute("INSERT OR REPLACE INTO headrace_boot_state (k, v) VALUES ('reseeds', ?)", (json.dumps(info),))
            c.commit()
        stack.boot.start()
        body = wait_until(lambda: _red(stack), 30, "the bootstrap server to report its re-seeding")
        assert "re-seeded 3 times in the last minute" in body["reason"], body
        assert "raise relay.buffer_bytes" in body["reason"] and body["reseeds"]["count"] == 3, body
        assert stack.status()["health"]["ok"] is False
    finally:
        stack.kill_all()


@pytest.mark.slow  # a real storm needs a seed slower than the relay's buffer turns over: timing-dependent
def test_a_real_reseed_storm_turns_health_red(tmp_path: Any, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=20_000, relay={"buffer_bytes": 32 << 10}, bootstrap={"seed_page_rows": 500})
    try:
        stack.start_relay()
        stack.start_writers(2, sleep_ms=1)
        stack.start_bootstrap()
        body = wait_until(lambda: _red(stack), 120, "the bootstrap server to report its re-seeding")
        assert "raise relay.buffer_bytes" in body["reason"] and body["reseeds"]["count"] >= 3, body
    finally:
        stack.kill_all()
