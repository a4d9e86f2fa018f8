"""The bootstrap server's HTTP API over a real relay and bootstrap server: auth, bad input, filters,
key order and resumption of snapshots, 410 from a compacted log, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import httpx
from bootstrap_stack import Stack
from support import wait_until

from headrace.errors import ScnTooOld
from headrace.relay import decode_key
from headrace.relay.client import BootstrapClient, Checkpoint, Consumer, Subscriber, Window

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_bootstrap_api_auth_bad_input_filters_and_paging(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(
        tmp_path,
        daemons,
        rows=3_000,
        bootstrap={"tokens": [TOKEN], "session_timeout_seconds": 1, "retention_seconds": 0, "max_snapshot_rows": 700},
    )
    try:
        stack.start_relay()
        stack.start_bootstrap()
        wait_until(
            lambda: httpx.get(stack.boot_url + "/v1/status", headers=AUTH).json()["snapshot_ready"], 60, "ready", 0.2
        )
        stack.start_writers(1, sleep_ms=5)
        b = stack.boot_url
        for path in ("/v1/snapshot", "/v1/catchup?since=0", "/v1/status", "/v1/sources"):
            r = httpx.get(b + path)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
            assert httpx.get(b + path, headers={"Authorization": "Bearer nope"}).status_code == 401
        bad = {
            "/v1/snapshot?bogus=1": (400, "unknown_parameter"),
            "/v1/snapshot?filter=mod:4:9": (400, "bad_filter"),
            "/v1/snapshot?sources=nope": (400, "unknown_source"),
            "/v1/snapshot?after=!!notacursor": (400, "bad_after"),
            "/v1/snapshot?limit=0": (400, "bad_limit"),
            "/v1/catchup": (400, "bad_since"),
            "/v1/catchup?since=-1": (400, "bad_since"),
            "/v1/catchup?since=1&max_bytes=x": (400, "bad_max_bytes"),
            "/v1/catchup?since=1&filter=range:1": (400, "bad_filter"),
            "/v1/schemas/xyz": (400, "bad_fingerprint"),
            "/v1/schemas/0000000000000000": (404, "unknown_schema"),
        }
        for path, (status, reason) in bad.items():
            r = httpx.get(b + path, headers=AUTH)
            assert (r.status_code, r.json()["error"]) == (status, reason), (path, r.text)
            assert r.json()["detail"]
        metrics = httpx.get(b + "/metrics", headers=AUTH).text
        assert 'headrace_bootstrap_rejects_total{reason="bad_filter"} 2.0' in metrics
        assert 'headrace_bootstrap_rejects_total{reason="unauthorized"}' in metrics

        # four mod:4:i snapshots are disjoint and together every row; each in key order, paged by cursor
        client = BootstrapClient(b, token=TOKEN)
        parts: list[list[tuple[str, int]]] = []
        for i in range(4):
            rows: list[tuple[str, int]] = []
            after = None
            while True:
                page = client.snapshot(["accounts"], f"mod:4:{i}", after, 700)
                rows += [(e.source, decode_key(e.key)[0]) for e in page.events]
                after = page.cursor
                if page.done:
                    break
            assert [k for _, k in rows] == sorted(k for _, k in rows)
            parts.append(rows)
        every = [k for p in parts for k in p]
        assert len(every) == len(set(every))
        assert len(every) >= 2_900  # every account row at some SCN while writers ran
        schema = httpx.get(b + "/v1/sources", headers=AUTH).json()["sources"]
        assert [s["name"] for s in schema] == ["accounts", "tags"]
        fp = schema[0]["fingerprint"]
        assert httpx.get(f"{b}/v1/schemas/{fp}", headers=AUTH).json()["table"] == "accounts"

        # once the log is compacted past an SCN, catch-up from it is 410 scn_too_old with the floor
        wait_until(lambda: (stack.status_auth(AUTH)["log_floor"] or 0) > 10, 60, "compaction", 0.2)
        r = httpx.get(b + "/v1/catchup?since=1", headers=AUTH)
        assert r.status_code == 410 and r.json()["error"] == "scn_too_old" and r.json()["oldest_scn"] > 10
        try:
            client.catchup(1, None, None, 1 << 20, None)
            raise AssertionError("expected ScnTooOld")
        except ScnTooOld as exc:
            assert exc.oldest_scn is not None and exc.oldest_scn > 10
        stack.stop_writers()  # so the floor settles (compaction would race a catch-up from it)
        wait_until(
            lambda: (s := stack.status_auth(AUTH))["log_floor"] == s["applied_scn"] == s["log_scn"],
            60,
            "the log to settle",
            0.2,
        )
        floor = stack.status_auth(AUTH)["log_floor"]
        batch = client.catchup(floor, ["accounts"], None, 1 << 20, None)
        assert batch.windows == [] and batch.scanned_scn == floor
        client.close()

        # the iterator style bootstraps too: the copy equals the source when it is back on the relay
        sub = Subscriber([stack.relay_url], bootstrap=[b], from_snapshot=True, token=TOKEN, snapshot_rows=400)
        copy: dict[tuple[str, Any], Any] = {}
        phases = set()
        for w in sub.windows(idle_exit=3):  # ends 3 s after the last window
            for e in w.events:
                if e.op.value == "d":
                    copy.pop((e.table, e.key[0]), None)
                else:
                    copy[(e.table, e.key[0])] = e.after
            phases.add(sub.checkpoint.phase if sub.checkpoint else None)
        sub.close()
        assert sub.checkpoint is not None and sub.checkpoint.phase == "relay"
        assert {None, "snapshot"} <= phases
        assert wl.source_rows(stack.db) == copy

        # the callback style: on_start_bootstrap / on_end_bootstrap bracket the snapshot and catch-up
        class Recorder(Consumer):
            def __init__(self) -> None:
                self.calls: list[str] = []
                self.rows = 0

            def on_start_bootstrap(self, checkpoint: Checkpoint) -> None:
                self.calls.append(f"start:{checkpoint.phase}")

            def on_end_window(self, window: Window) -> None:
                self.rows += sum(e.op.value == "r" for e in window.events)

            def on_end_bootstrap(self, checkpoint: Checkpoint) -> None:
                self.calls.append(f"end:{checkpoint.phase}")
                sub2.stop()

        rec = Recorder()
        sub2 = Subscriber([stack.relay_url], bootstrap=[b], from_snapshot=True, token=TOKEN)
        sub2.run(rec)
        sub2.close()
        assert rec.calls == ["start:snapshot", "end:relay"]
        assert rec.rows == len(copy)
    finally:
        stack.kill_all()
