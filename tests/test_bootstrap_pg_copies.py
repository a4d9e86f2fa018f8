"""The bootstrap server serves right copies of PostgreSQL tables (issue 10, item 6), end to end on a
private PostgreSQL with real relay and bootstrap processes:

* snapshot rows never carry an "unchanged TOAST" placeholder: updates that leave a large
  (out-of-line, incompressible) text/bytea value alone are merged with the stored value;
* after a kill -9 that puts the bootstrap's position off the relay's buffer (a buffer that covers
  less time than a seed), with writers running, it re-seeds once — following the relay while it
  reads — serves the previous snapshot meanwhile, reports the re-seed, and a new subscriber's copy
  equals the table, TOASTed values in every snapshot row;
* a subscriber whose snapshot is restarted by that re-seed is told so (the client library's
  ``SnapshotRestarted`` and ``headrace subscribe``'s ``{"control": "snapshot_restarted"}`` line) and
  ends with a copy equal to the table.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from db_servers import PgServer
from support import free_port, wait_until, write_config

from headrace.relay.client import BootstrapClient, MemoryCheckpointStore, RelayClient, SnapshotRestarted, Subscriber

UNCHANGED = "unchanged"  # what the relay says a row lacks (ChangeEvent.unchanged, the JSON line's key)
BIG = 3_200  # hex characters: > 2 kB and incompressible, so stored out of line (TOAST)


def _schema(rows: int) -> str:
    return f"""
CREATE TABLE docs (id bigint PRIMARY KEY, n int NOT NULL, big text, blob bytea, note text);
INSERT INTO docs
SELECT g, 0,
       CASE WHEN g % 4 = 0 THEN (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 100) s)
       END,
       CASE WHEN g % 5 = 0 THEN (SELECT decode(string_agg(md5(random()::text || s || g), ''), 'hex')
                                 FROM generate_series(1, 100) s) END,
       'note ' || g
FROM generate_series(1, {rows}) g;
"""


def _big(rng: random.Random) -> str:
    return "".join(f"{rng.getrandbits(128):032x}" for _ in range(BIG // 32))


class Writers:
    """A thread committing small transactions: mostly updates that leave the TOASTed values alone."""

    def __init__(self, pg: PgServer, db: str, rows: int, sleep: float) -> None:
        self.conn = pg.connect(db, autocommit=False)
        self.rows = rows
        self.sleep = sleep
        self.stop_event = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def one(self, cur: Any, rng: random.Random) -> None:
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            i = rng.randint(1, self.rows + 500)
            if r < 0.7:  # TOASTed columns unchanged: they arrive as placeholders
                cur.execute("UPDATE docs SET n = n + 1, note = %s WHERE id = %s", (f"u{rng.random()}", i))
            elif r < 0.8:
                cur.execute("UPDATE docs SET big = %s, n = n + 1 WHERE id = %s", (_big(rng), i))
            elif r < 0.9:
                cur.execute(
                    "INSERT INTO docs VALUES (%s, 0, %s, %s, 'new') ON CONFLICT (id) DO UPDATE SET n = 0",
                    (i, _big(rng), os.urandom(BIG // 2)),
                )
            else:
                cur.execute("DELETE FROM docs WHERE id = %s", (i,))

    def _run(self) -> None:
        rng = random.Random(10)
        try:
            with self.conn.cursor() as cur:
                while not self.stop_event.is_set():
                    self.one(cur, rng)
                    self.conn.commit()
                    self.commits += 1
                    time.sleep(self.sleep)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Writers:
        self.thread.start()
        return self

    def stop(self) -> int:
        if not self.stop_event.is_set():
            self.stop_event.set()
            self.thread.join(30)
            self.conn.close()
        assert self.error is None, self.error
        return self.commits


class PgStack:
    """A PostgreSQL database with a relay and a bootstrap server seeding from it."""

    def __init__(
        self, pg: PgServer, tmp: Path, daemons: Any, db: str, rows: int, buffer_bytes: int, page_rows: int
    ) -> None:
        self.pg, self.db = pg, pg.create_database(db)
        pg.execute(_schema(rows), self.db)
        self.relay_url = f"http://127.0.0.1:{free_port()}"
        self.boot_url = f"http://127.0.0.1:{free_port()}"
        slot = f"{db}_relay"
        self.config = write_config(
            tmp / "headrace.yaml",
            {
                "relay": {
                    "listen": self.relay_url.removeprefix("http://"),
                    "source": pg.url(self.db),
                    "tables": ["docs"],
                    "state_dir": str(tmp / "relay"),
                    "durable_consumers": ["bootstrap"],
                    "buffer_bytes": buffer_bytes,
                    "postgres": {"slot": slot, "publication": f"{db}_pub", "status_interval": 1},
                },
                "bootstrap": {
                    "listen": self.boot_url.removeprefix("http://"),
                    "relays": [self.relay_url],
                    "store": f"sqlite:///{tmp / 'boot.db'}",
                    "seed": pg.url(self.db),
                    "seed_slot": slot,
                    "seed_publication": f"{db}_pub",
                    "seed_page_rows": page_rows,
                    "compact_interval_seconds": 0.5,
                    "retention_seconds": 0,
                    "session_timeout_seconds": 5,
                },
            },
        )
        self.relay = daemons(["relay", "--config", str(self.config)], "relay")
        self.boot = daemons(["bootstrap", "--config", str(self.config)], "bootstrap")

    def start(self) -> None:
        self.relay.start()
        self.relay.wait_http(self.relay_url + "/healthz", timeout=30)
        self.start_bootstrap()

    def start_bootstrap(self) -> None:
        self.boot.start()
        self.boot.wait_http(self.boot_url + "/healthz", timeout=30)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.boot_url + "/v1/status", timeout=10).json()
        return body

    def relay_status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.relay_url + "/v1/status", timeout=10).json()
        return body

    def wait_ready(self, timeout: float = 90) -> None:
        wait_until(lambda: self.status()["snapshot_ready"], timeout, "the bootstrap snapshot to be ready", 0.2)

    def table(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        with contextlib.closing(self.pg.connect(self.db)) as conn, conn.cursor() as cur:
            cur.execute("SELECT id, n, big, blob, note FROM docs")
            for i, n, big, blob, note in cur.fetchall():
                out[i] = {"id": i, "n": n, "big": big, "blob": bytes(blob) if blob is not None else None, "note": note}
        return out

    def commit_marker(self) -> int:
        """Commit one more change and return an LSN its commit SCN is at or above."""
        with contextlib.closing(self.pg.connect(self.db, autocommit=False)) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_insert_lsn()::text")
            hi, lo = cur.fetchone()[0].split("/")
            cur.execute("UPDATE docs SET n = n + 1 WHERE id = (SELECT min(id) FROM docs)")
            conn.commit()
        return (int(hi, 16) << 32) | int(lo, 16)


class Copy:
    """A consumer's copy: upserts by key, deletes, "keep what you have" for unchanged-TOAST columns,
    and a restart of the snapshot empties it (the documented contract)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, Any]] = {}
        self.snapshot_rows: list[dict[str, Any]] = []
        self.restarts: list[SnapshotRestarted] = []
        self.phases: list[str] = []

    def apply(
        self, table: str, op: str, key: list[Any], after: dict[str, Any] | None, unchanged: Sequence[str] = ()
    ) -> None:
        assert table == "docs"
        k = int(key[0])
        if op == "d" or after is None:
            self.rows.pop(k, None)
            return
        row = dict(after)
        if op == "r":
            self.snapshot_rows.append({**row, UNCHANGED: list(unchanged) or None})
        for col in unchanged:
            row[col] = self.rows.get(k, {}).get(col)
        self.rows[k] = row

    def follow(self, sub: Subscriber, idle_exit: float) -> None:
        for w in sub.windows(idle_exit=idle_exit):
            if isinstance(w, SnapshotRestarted):
                self.restarts.append(w)
                self.rows.clear()
                continue
            for e in w.events:
                self.apply(e.table, e.op.value, e.key, e.after, e.unchanged)
            self._phase(sub)
        self._phase(sub)

    def _phase(self, sub: Subscriber) -> None:
        phase = sub.checkpoint.phase if sub.checkpoint else None
        if phase is not None and (not self.phases or self.phases[-1] != phase):
            self.phases.append(phase)


def _subscriber(stack: PgStack, name: str, snapshot_rows: int = 5_000) -> Subscriber:
    return Subscriber(
        [stack.relay_url],
        ["docs"],
        MemoryCheckpointStore(),
        bootstrap=[stack.boot_url],
        from_snapshot=True,
        wait_ms=500,
        subscriber_id=name,
        snapshot_rows=snapshot_rows,
    )


def _assert_copy(table: dict[int, dict[str, Any]], copy: Copy) -> None:
    missing = sorted(set(table) - set(copy.rows))[:5]
    extra = sorted(set(copy.rows) - set(table))[:5]
    wrong = [(k, {c: (table[k][c], copy.rows[k].get(c)) for c in table[k] if table[k][c] != copy.rows[k].get(c)})
             for k in table if k in copy.rows and copy.rows[k] != table[k]][:3]  # fmt: skip
    assert not missing and not extra and not wrong, (missing, extra, wrong)


def _assert_snapshot_rows_whole(copy: Copy) -> None:
    """No snapshot row lists an unchanged-TOAST placeholder, and the TOASTed values are there."""
    assert copy.snapshot_rows, "the subscriber received no snapshot rows"
    marked = [r for r in copy.snapshot_rows if r.get(UNCHANGED)]
    assert not marked, (
        f"{len(marked)} snapshot rows carry placeholders: {[(r['id'], r[UNCHANGED]) for r in marked[:5]]}"
    )
    with_big = [r for r in copy.snapshot_rows if r.get("big") is not None]
    assert len(with_big) > len(copy.snapshot_rows) // 8, (len(with_big), len(copy.snapshot_rows))


def test_snapshot_rows_carry_toasted_values_that_updates_left_unchanged(
    pg_server: PgServer, tmp_path: Path, daemons: Any
) -> None:
    rows = 1_200
    stack = PgStack(pg_server, tmp_path, daemons, "boottoast", rows, 64 << 20, 1_000)
    stack.relay.start()
    stack.relay.wait_http(stack.relay_url + "/healthz", timeout=30)
    # rows the relay streams (inserts) and the seed reads too, never changed afterwards
    pg_server.execute(
        "INSERT INTO docs SELECT g, g, repeat(md5(g::text), 100), decode(repeat(md5(g::text), 50), 'hex'), NULL "
        "FROM generate_series(5000, 5019) g",
        stack.db,
    )
    stack.start_bootstrap()
    stack.wait_ready()
    # changes after the seed: most leave `big` and `blob` as they were (placeholders on the wire)
    writers = Writers(pg_server, stack.db, rows, 0.0).start()
    wait_until(lambda: writers.commits >= 1_500 or writers.error, 60, "the writers to commit 1,500 transactions")
    writers.stop()
    marker = stack.commit_marker()
    wait_until(lambda: (stack.status()["applied_scn"] or 0) >= marker, 60, "the bootstrap to apply every change", 0.1)

    seen_marked: list[dict[str, Any]] = []
    copy = Copy()
    sub = _subscriber(stack, "toast")
    try:
        for w in sub.windows(idle_exit=2.0):
            assert not isinstance(w, SnapshotRestarted)
            for e in w.events:
                if e.op.value == "r" and e.after is not None and e.unchanged:
                    seen_marked.append({**e.after, UNCHANGED: e.unchanged})
                copy.apply(e.table, e.op.value, e.key, e.after, e.unchanged)
    finally:
        sub.close()
    table = stack.table()
    assert not seen_marked, (
        f"{len(seen_marked)} snapshot rows carry placeholders: {[(r['id'], r[UNCHANGED]) for r in seen_marked[:5]]}"
    )
    assert len(copy.snapshot_rows) == len(table)
    toasted = sum(1 for r in table.values() if r["big"] is not None)
    served = sum(1 for r in copy.snapshot_rows if r["big"] is not None)
    assert served == toasted > rows // 8, (served, toasted)
    _assert_copy(table, copy)
    # the same rows seeded (snapshot) and streamed (the relay's inserts): identical events
    streamed = {
        e.key: (e.fingerprint, e.after)
        for w in RelayClient(stack.relay_url)
        .stream(stack.relay_status()["oldest_scn"], ["docs"], None, 8 << 20, 0)
        .windows
        for e in w
        if e.op.value == "c" and 5000 <= json.loads(e.key)[0] < 5020
    }
    bs = BootstrapClient(stack.boot_url)
    seeded: dict[bytes, tuple[str, bytes | None]] = {}
    page_after = None
    while True:
        page = bs.snapshot(["docs"], None, page_after, 5_000)
        seeded.update((e.key, (e.fingerprint, e.after)) for e in page.events if 5000 <= json.loads(e.key)[0] < 5020)
        page_after = page.cursor
        if page.done:
            break
    bs.close()
    assert len(streamed) == 20 and seeded == streamed
    # the relay really sent placeholders for these updates (so the store had to fill them in)
    metrics = httpx.get(stack.boot_url + "/metrics", timeout=10).text
    filled = [ln for ln in metrics.splitlines() if ln.startswith("headrace_bootstrap_toast_filled_total")]
    assert filled and float(filled[0].split()[-1]) > 100, filled


def _cli_subscriber(stack: PgStack, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp / "cli.out"
    with open(out, "wb") as o, open(tmp / "cli.err", "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headrace", "subscribe", "--relay", stack.relay_url, "--bootstrap", stack.boot_url,
             "--from-snapshot", "--checkpoint", str(tmp / "cli.cp.json"), "--idle-exit", "4", "--sources", "docs"],
            stdout=o, stderr=e, env={**os.environ},
        )  # fmt: skip
    return proc, out


def _materialise_cli(lines: list[str]) -> tuple[Copy, int]:
    copy = Copy()
    restarts = 0
    for line in lines:
        d = json.loads(line)
        if d.get("control") == "snapshot_restarted":
            restarts += 1
            copy.rows.clear()
            continue
        after = d["after"]
        if after is not None and after.get("blob") is not None:
            after = {**after, "blob": base64.b64decode(after["blob"])}
        copy.apply(d["table"], d["op"], d["key"], after, d.get("unchanged", ()))
    return copy, restarts


def test_kill9_off_the_relay_buffer_reseeds_once_serves_meanwhile_and_restarts_subscribers(
    pg_server: PgServer, tmp_path: Path, daemons: Any
) -> None:
    rows = 16_000
    # a relay buffer of ~1-2 s of writes, a seed of several seconds
    stack = PgStack(pg_server, tmp_path, daemons, "bootreseed", rows, 256 << 10, 100)
    writers = Writers(pg_server, stack.db, rows, 0.003).start()
    try:
        stack.start()
        stack.wait_ready()
        assert stack.status()["reseeds"]["count"] == 0
        first_gen_scn = stack.status()["seed"]["start_scn"]
        head = stack.status()["log_scn"]
        stack.boot.kill9()
        wait_until(lambda: stack.relay_status()["oldest_scn"] > head, 60, "the relay buffer to pass the bootstrap")
        stack.start_bootstrap()
        # the re-seed runs in a new generation; the previous snapshot is still served meanwhile
        st = wait_until(lambda: (s := stack.status())["building"] and s, 30, "a re-seed to start", 0.05)
        assert st["generation"] == 1 and st["building"]["gen"] == 2, st
        r = httpx.get(stack.boot_url + "/v1/snapshot", params={"limit": 10}, timeout=10)
        assert r.status_code == 200 and r.headers["x-headrace-rows"] == "10", r.text
        # subscribers that start on the previous snapshot: it can never reach the relay, so they are
        # restarted on the new one, and told so
        copy = Copy()
        sub = _subscriber(stack, "lib", snapshot_rows=500)
        t = threading.Thread(target=copy.follow, args=(sub, 6.0), daemon=True)
        t.start()
        cli, cli_out = _cli_subscriber(stack, tmp_path)
        wait_until(lambda: stack.status()["generation"] == 2, 90, "the new generation to be served", 0.2)
        # the seed took longer than the relay's buffer covers: its start position is gone from the relay
        # (so a seed that did not follow the relay while reading could never land)
        assert stack.relay_status()["oldest_scn"] > stack.status()["seed"]["start_scn"]
        health = httpx.get(stack.boot_url + "/healthz", timeout=10).json()
        time.sleep(2.0)  # writers go on a little with everyone on the new generation
        writers.stop()
        stack.commit_marker()
        t.join(120)
        assert not t.is_alive()
        sub.close()
        assert cli.wait(120) == 0, (tmp_path / "cli.err").read_text()[-3000:]
    finally:
        writers.stop()
    status = stack.status()
    table = stack.table()
    # exactly one re-seed, reported in /healthz, /v1/status and the log
    assert status["reseeds"]["count"] == 1 and status["reseeds"]["last_reason"] == "relay_no_longer_has_log_scn", status
    assert health["reseeds"]["count"] == 1, health
    log_lines = [json.loads(ln) for ln in stack.boot.output().splitlines() if ln.startswith("{")]
    assert sum(1 for d in log_lines if d.get("event") == "reseeding") == 1
    assert sum(1 for d in log_lines if d.get("event") == "seed_started") == 1
    # the library subscriber: told to replace its copy, and its copy equals the table
    assert copy.restarts and copy.phases[-1] == "relay", (copy.restarts, copy.phases)
    _assert_snapshot_rows_whole(copy)
    _assert_copy(table, copy)
    # `headrace subscribe`: the control line, then a copy equal to the table
    lines = [ln for ln in cli_out.read_text().splitlines() if ln.strip()]
    cli_copy, restarts = _materialise_cli(lines)
    # it starts on the previous snapshot and is restarted, or, when the re-seed (under a second with
    # the seed's fast path) was served before the process got going, reads the new one from the start
    first_scn = json.loads(lines[0])["scn"]
    assert first_scn in (first_gen_scn, status["seed"]["start_scn"]), (first_scn, first_gen_scn, status["seed"])
    if first_scn == first_gen_scn:
        assert restarts >= 1, lines[:3]
    else:
        assert restarts == 0, lines[:3]
    _assert_snapshot_rows_whole(cli_copy)
    _assert_copy(table, cli_copy)
