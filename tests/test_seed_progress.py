"""Progress of a bootstrap seed (``/v1/status`` ``seeding``, ``seed_progress`` log lines) and of
``headrace subscribe --from-snapshot`` (``snapshot_progress`` log lines when stderr is not a terminal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bootstrap_stack import Stack, Sub
from support import wait_until


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_status_shows_seeding_progress_while_a_large_table_is_seeded(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=50_000, bootstrap={"seed_page_rows": 50})
    try:
        stack.start_relay()
        stack.start_bootstrap()
        seen: list[dict[str, Any]] = []

        def midway() -> bool:
            s = stack.status().get("seeding")
            if s is not None:
                seen.append(s)
            return s is not None and not s["done"] and 0 < s["tables"]["accounts"]["rows"] < 50_000

        wait_until(midway, 60, "/v1/status to show a seed part way through accounts", 0.05)
        mid = seen[-1]
        assert mid["tables"]["accounts"]["estimated_rows"] == 50_000
        assert mid["estimated_rows"] == 50_000 + 100  # accounts + tags
        assert mid["reason"] == "initial" and mid["gen"] is not None
        assert mid["rows_per_s"] > 0 and mid["seconds"] > 0
        stack.wait_ready()
        done = stack.status()["seeding"]
        assert done["done"] is True and done["rows"] == 50_100, done
        assert done["tables"] == {
            "accounts": {"rows": 50_000, "estimated_rows": 50_000},
            "tags": {"rows": 100, "estimated_rows": 100},
        }
        lines = [e for e in _json_lines(stack.boot.output()) if e.get("event") == "seed_progress"]
        assert lines and lines[-1]["done"] is True and lines[-1]["rows"] == 50_100
        # periodic, not one per page (1000 pages)
        assert len(lines) <= done["seconds"] / 5 + 2, lines
    finally:
        stack.kill_all()


def test_subscribe_from_snapshot_piped_logs_progress_lines(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=20_000, bootstrap={"max_snapshot_rows": 500})
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        sub = Sub(stack, "late", "--from-snapshot", "--progress-every", "0.05")
        sub.start(idle_exit=2)
        assert sub.wait(60) == 0, sub.errors()
        events = _json_lines(sub.runs[0].with_suffix(".err").read_text())
        prog = [e for e in events if e.get("event") == "snapshot_progress"]
        assert len(prog) >= 3, sub.errors()
        assert prog[0]["rows"] == 0 and prog[0]["done"] is False
        last = prog[-1]
        assert last["done"] is True and last["rows"] == 20_100, last
        assert isinstance(last["snapshot_scn"], int) and last["rows_per_s"] > 0
        rows = [p["rows"] for p in prog]
        assert rows == sorted(rows) and any(0 < r < 20_100 for r in rows), rows
        assert len([ln for ln in sub.lines() if json.loads(ln).get("op") == "r"]) == 20_100
    finally:
        stack.kill_all()
