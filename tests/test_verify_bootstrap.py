"""``headrace verify`` against a bootstrap server's snapshot: a SQLite source with a relay and a
bootstrap server; equal once the store caught up; with the relay down, rows changed in the source are
reported as exactly the keys the snapshot is behind on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bootstrap_workload as wl
from bootstrap_stack import Stack
from support import wait_until

from headrace.verify import verify


def test_verify_against_the_bootstrap_snapshot(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=1500)
    source = f"sqlite:///{stack.db}"
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        stack.start_writers(1, sleep_ms=2)
        wait_until(lambda: wl.change_log_head(stack.db) > 200, 60, "some changes")
        stack.stop_writers()
        head = wl.change_log_head(stack.db)
        wait_until(lambda: stack.status()["applied_scn"] >= head, 60, "the store to apply every change")
        for table in ("accounts", "tags"):
            report = verify(source, stack.boot_url, table)
            assert report.equal, report.to_json()
            assert report.replica_checkpoints[0]["snapshot_scn"] >= head

        stack.relay.kill9()  # the store no longer hears of changes
        conn = wl.connect(stack.db)
        ids = [r[0] for r in conn.execute("SELECT id FROM accounts ORDER BY id LIMIT 4")]
        conn.execute("UPDATE accounts SET name = name || ' ✎' WHERE id IN (?, ?)", ids[:2])
        conn.execute("DELETE FROM accounts WHERE id = ?", (ids[2],))
        conn.execute("INSERT INTO accounts (id, name, balance) VALUES (99999991, 'new', 1)")
        conn.commit()
        conn.close()
        report = verify(source, stack.boot_url, "accounts")
        assert not report.equal
        assert [k["id"] for k in report.missing] == [99999991]  # in the source, not in the copy
        assert [k["id"] for k in report.extra] == [ids[2]]
        assert sorted(k["id"] for k in report.different) == sorted(ids[:2])
    finally:
        stack.kill_all()
        for d in (stack.relay, stack.boot):
            if d.alive():
                d.stop()
