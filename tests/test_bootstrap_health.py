"""A bootstrap server that keeps re-seeding because its relay's buffer does not reach back to where a
seed starts answers /healthz 503 saying so (it used to re-seed over and over with ok: true)."""

from __future__ import annotations

from typing import Any

import httpx
from bootstrap_stack import Stack
from support import wait_until


def test_a_reseed_storm_turns_health_red_with_what_to_change(tmp_path: Any, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=20_000, relay={"buffer_bytes": 32 << 10}, bootstrap={"seed_page_rows": 500})
    try:
        stack.start_relay()
        stack.start_writers(2, sleep_ms=1)
        stack.start_bootstrap()

        def red() -> dict[str, Any] | None:
            r = httpx.get(stack.boot_url + "/healthz", timeout=5)
            return r.json() if r.status_code == 503 and "re-seeded" in r.json().get("reason", "") else None

        body = wait_until(red, 120, "the bootstrap server to report its re-seeding")
        assert "raise relay.buffer_bytes" in body["reason"] and body["reseeds"]["count"] >= 3, body
        assert stack.status()["health"]["ok"] is False
    finally:
        stack.kill_all()
