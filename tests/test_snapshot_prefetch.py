"""A subscriber fetches the next snapshot page while it delivers the current one (issue 14): every
row exactly once and in order, with a re-seed (410 ``snapshot_restarted``) answering the page fetched
ahead, the bootstrap server killed while a page is fetched ahead, and ``stop()`` with a page fetched
ahead. Real relay and bootstrap server processes (the re-seed test serves a store this test re-seeds
through the bootstrap server's own app on a real socket); requests pass through the real HTTP
transport, which a :class:`Gate` can hold at the n-th snapshot request."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import httpx
import pytest
import uvicorn
from bootstrap_stack import Stack
from support import free_port, wait_until

from headrace.bootstrap import Store, apply_once, seed, sort_key
from headrace.bootstrap._config import BootstrapConfig
from headrace.bootstrap._serve import BootstrapState, build_app, decode_cursor
from headrace.relay import encode_key
from headrace.relay.client import (
    Checkpoint,
    Consumer,
    MemoryCheckpointStore,
    SnapshotRestarted,
    Subscriber,
    Window,
)

ROWS = 3_000  # accounts (and 100 tags): 7 pages of 500
PAGE = 500
WAIT = 60.0


class Gate(httpx.BaseTransport):
    """The real HTTP transport; the n-th ``/v1/snapshot`` request (1-based) can be held until released,
    and one request's page cut (a byte flipped in transit).

    ``arrived[n]`` is set when request n reached the gate, ``answered[n]`` when its answer (or
    failure) came back; ``status[n]`` is its HTTP status (0: the request failed)."""

    def __init__(self, hold: int | None = None, corrupt: int | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.hold = hold
        self.corrupt = corrupt  # this request's page arrives with one byte flipped (a CRC mismatch)
        self.release = threading.Event()
        self.count = 0
        self.lock = threading.Lock()
        self.arrived: dict[int, threading.Event] = {}
        self.answered: dict[int, threading.Event] = {}
        self.status: dict[int, int] = {}
        self.afters: dict[int, str | None] = {}

    def _event(self, table: dict[int, threading.Event], n: int) -> threading.Event:
        with self.lock:
            return table.setdefault(n, threading.Event())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/snapshot":
            return self.inner.handle_request(request)
        with self.lock:
            self.count += 1
            n = self.count
        self.afters[n] = request.url.params.get("after")
        self._event(self.arrived, n).set()
        if n == self.hold:
            assert self.release.wait(WAIT), "the held request was never released"
        try:
            r = self.inner.handle_request(request)
            body = r.read()
            self.status[n] = r.status_code
            if n == self.corrupt:
                bad = bytearray(body)
                bad[len(bad) // 2] ^= 0xFF
                return httpx.Response(r.status_code, headers=r.headers, content=bytes(bad), request=request)
            return r
        except httpx.HTTPError:
            self.status[n] = 0
            raise
        finally:
            self._event(self.answered, n).set()

    def wait_arrived(self, n: int) -> None:
        assert self._event(self.arrived, n).wait(WAIT), f"snapshot request {n} was not made (no page fetched ahead?)"

    def wait_answered(self, n: int) -> None:
        assert self._event(self.answered, n).wait(WAIT), f"snapshot request {n} got no answer"

    def close(self) -> None:
        self.inner.close()


class Recorder(Consumer):
    """Records rows, restarts and checkpoints in order; ``on_page(k)`` runs inside the k-th snapshot
    page's delivery (1-based, counted over the whole run), before it ends."""

    def __init__(self, on_page: dict[int, Any] | None = None) -> None:
        self.log: list[Any] = []  # ("row", table, key, name) | ("restart",) | ("cp", phase, position)
        self.pages = 0
        self.on_page = on_page or {}
        self.ended = threading.Event()
        self.last_row: tuple[str, Any] | None = None
        self.sub: Subscriber | None = None

    def on_end_window(self, window: Window) -> None:
        snapshot = bool(window.events) and window.events[0].op.value == "r"
        for e in window.events:
            after = e.after or {}
            self.log.append(("row", e.table, e.key[0], after.get("name", after.get("v")), e.op.value))
            self.last_row = (e.table, e.key[0])
        if snapshot:
            self.pages += 1
            hook = self.on_page.get(self.pages)
            if hook is not None:
                hook()

    def on_snapshot_restarted(self, restart: SnapshotRestarted) -> None:
        self.log.append(("restart", restart.reason))
        assert sum(x[0] == "restart" for x in self.log) == 1, "restarted again: a stale answer was used twice"

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.log.append(("cp", checkpoint.phase, dict(checkpoint.position)))
        if checkpoint.phase == "snapshot" and checkpoint.position.get("after"):
            # a checkpoint names the last row delivered, never one fetched ahead
            source, key, _gen = decode_cursor(checkpoint.position["after"])
            assert self.last_row is not None
            assert (source, key) == (self.last_row[0], sort_key(encode_key([self.last_row[1]]))), (
                "the checkpoint names a row that was not the last one delivered"
            )

    def on_error(self, error: BaseException, window: Window) -> None:
        raise error  # a failed check in a callback fails the test (not retried)

    def on_end_bootstrap(self, checkpoint: Checkpoint) -> None:
        self.ended.set()
        assert self.sub is not None
        self.sub.stop()

    def snapshot_rows(self) -> list[tuple[str, Any, Any]]:
        return [(x[1], x[2], x[3]) for x in self.log if x[0] == "row" and x[4] == "r"]


def _in_order(rows: dict[tuple[str, Any], dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """The source's rows as a snapshot serves them: by table, then key (``name`` of accounts, ``v`` of tags)."""
    return [(t, k, r.get("name", r.get("v"))) for (t, k), r in sorted(rows.items(), key=lambda kv: kv[0])]


def _run(sub: Subscriber, rec: Recorder) -> None:
    """``sub.run(rec)`` in a thread (bounded in time); what it raised is raised here."""
    rec.sub = sub
    raised: list[BaseException] = []

    def run() -> None:
        try:
            sub.run(rec)
        except BaseException as exc:
            raised.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(180)
    assert not t.is_alive(), "the subscriber did not finish"
    if raised:
        raise raised[0]


@contextlib.contextmanager
def _serving(store: Store, relay: str) -> Iterator[str]:
    """The bootstrap server's HTTP app over ``store`` on a real socket (no follower: the test re-seeds)."""
    port = free_port()
    app = build_app(BootstrapState(BootstrapConfig(relays=[relay]), store))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the server to start", 0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _seed(store: Store, src: str, reason: str | None = None) -> None:
    """A generation seeded from the source and promoted at once (no follower: its log is empty)."""
    done = seed(store, src, None, 1_000, reason=reason)
    store.append([], done["high_scn"], gen=store.state()["building"]["gen"])  # type: ignore[index]
    apply_once(store, 100)
    assert store.state()["building"] is None


@pytest.mark.parametrize("reseed_before_the_page_ahead", [True, False])
def test_a_restart_answering_the_page_fetched_ahead_comes_after_the_page_delivered(
    tmp_path: Path, daemons: Any, reseed_before_the_page_ahead: bool
) -> None:
    """The page ahead (request 3, made as soon as page 2 arrived) is held at the gate while page 2 is
    delivered. Re-seeded before it is let through, its answer is the 410: the restart must come after
    page 2 (delivered and checkpointed), and not one row of the old generation after it. Re-seeded
    after, it is a page of the old generation (consistent with pages 1-2: delivered before the
    restart, which then answers request 4)."""
    stack = Stack(tmp_path, daemons, rows=ROWS)
    src = f"sqlite:///{stack.db}"
    store = Store(f"sqlite:///{tmp_path / 'boot.db'}")
    try:
        stack.start_relay()
        _seed(store, src)
        gen1 = store.state()["gen"]
        with _serving(store, stack.relay_url) as boot:
            gate = Gate(hold=3)

            def during_page_2() -> None:
                gate.wait_arrived(3)  # fetched ahead: requested before page 2 was delivered
                if not reseed_before_the_page_ahead:
                    gate.release.set()
                    gate.wait_answered(3)
                with wl.connect(stack.db) as conn:  # the new generation's rows differ from the old one's
                    conn.execute("UPDATE accounts SET name = name || '-v2'")
                    conn.execute("UPDATE tags SET v = v + 1000")
                _seed(store, src, "relay_no_longer_has_log_scn")
                gate.release.set()
                gate.wait_answered(3)
                if reseed_before_the_page_ahead:
                    assert gate.status[3] == 410  # the restart arrived while page 2 was being delivered
                else:
                    assert gate.status[3] == 200

            rec = Recorder({2: during_page_2})
            sub = Subscriber(
                [stack.relay_url], bootstrap=[boot], from_snapshot=True, snapshot_rows=PAGE, transport=gate, wait_ms=500
            )
            _run(sub, rec)
            sub.close()
            gate.close()
        assert rec.ended.is_set()
        new_rows = _in_order(wl.source_rows(stack.db))
        restarts = [i for i, x in enumerate(rec.log) if x[0] == "restart"]
        assert len(restarts) == 1 and rec.log[restarts[0]][1] == "snapshot_restarted"
        before = [(x[1], x[2], x[3]) for x in rec.log[: restarts[0]] if x[0] == "row"]
        after = [(x[1], x[2], x[3]) for x in rec.log[restarts[0] :] if x[0] == "row" and x[4] == "r"]
        old_accounts = [(t, k, n.removesuffix("-v2")) for t, k, n in new_rows if t == "accounts"]
        pages_before = 2 if reseed_before_the_page_ahead else 3
        assert before == old_accounts[: pages_before * PAGE]  # the old generation, in order, whole pages
        # the last checkpoint before the restart names the end of the last page delivered
        cps = [x for x in rec.log[: restarts[0]] if x[0] == "cp"]
        assert decode_cursor(cps[-1][2]["after"])[:2] == ("accounts", sort_key(encode_key([pages_before * PAGE])))
        assert decode_cursor(cps[-1][2]["after"])[2] == gen1
        # after the restart: the new generation from its first row, every row once, in order
        assert after == new_rows
        assert rec.log[restarts[0] + 1] == ("cp", "snapshot", {})
        n410 = next(n for n, status in sorted(gate.status.items()) if status == 410)
        assert n410 == pages_before + 1 and gate.afters[n410 + 1] is None  # then the new snapshot's first page
        copy: dict[tuple[str, Any], Any] = {}
        for x in rec.log[restarts[0] :]:
            if x[0] == "row":
                copy[(x[1], x[2])] = x[3]
        assert copy == {(t, k): n for t, k, n in new_rows}
    finally:
        store.close()
        stack.kill_all()


def test_the_server_killed_while_a_page_is_fetched_ahead(tmp_path: Path, daemons: Any) -> None:
    """The page ahead fails (the server is gone): that failure counts where the request would have been
    made without fetching ahead — after page 2 — and the same page is asked again once the server is back."""
    stack = Stack(tmp_path, daemons, rows=ROWS)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        gate = Gate(hold=3)

        def during_page_2() -> None:
            gate.wait_arrived(3)
            stack.boot.kill9()
            gate.release.set()
            gate.wait_answered(3)
            assert gate.status[3] == 0  # the request ahead failed
            stack.start_bootstrap()

        rec = Recorder({2: during_page_2})
        sub = Subscriber(
            [stack.relay_url],
            bootstrap=[stack.boot_url],
            from_snapshot=True,
            snapshot_rows=PAGE,
            transport=gate,
            wait_ms=500,
        )
        _run(sub, rec)
        sub.close()
        gate.close()
        assert rec.ended.is_set()
        assert [x for x in rec.log if x[0] == "restart"] == []
        assert rec.snapshot_rows() == _in_order(wl.source_rows(stack.db))
        assert gate.afters[4] == gate.afters[3] is not None  # asked again from the same cursor
    finally:
        stack.kill_all()


def test_a_page_ahead_that_fails_to_read_is_asked_again(tmp_path: Path, daemons: Any) -> None:
    """Page 2 (fetched ahead) arrives corrupt: that counts as a failed request where it would have been
    made, page 2 is asked again, and nothing fetched for another position is delivered in its place."""
    stack = Stack(tmp_path, daemons, rows=ROWS)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        gate = Gate(corrupt=2)
        rec = Recorder()
        sub = Subscriber(
            [stack.relay_url], bootstrap=[stack.boot_url], from_snapshot=True, snapshot_rows=PAGE, transport=gate
        )
        _run(sub, rec)
        sub.close()
        assert rec.ended.is_set()
        assert rec.snapshot_rows() == _in_order(wl.source_rows(stack.db))
        c1 = gate.afters[2]
        assert c1 is not None and c1 in [gate.afters[n] for n in range(3, gate.count + 1)]  # page 2 again
    finally:
        stack.kill_all()


def test_stop_with_a_page_fetched_ahead_delivers_nothing_more_and_resumes_after_the_last_page(
    tmp_path: Path, daemons: Any
) -> None:
    stack = Stack(tmp_path, daemons, rows=ROWS)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        gate = Gate()
        checkpoints = MemoryCheckpointStore()
        sub = Subscriber(
            [stack.relay_url],
            bootstrap=[stack.boot_url],
            from_snapshot=True,
            snapshot_rows=PAGE,
            transport=gate,
            checkpoint_store=checkpoints,
        )

        def during_page_3() -> None:
            gate.wait_answered(4)  # page 4 is here, fetched ahead
            assert gate.status[4] == 200
            sub.stop()

        first = Recorder({3: during_page_3})
        _run(sub, first)
        sub.close()
        assert not first.ended.is_set()
        rows = _in_order(wl.source_rows(stack.db))
        assert first.snapshot_rows() == rows[: 3 * PAGE]  # page 4 was fetched, never delivered
        saved = checkpoints.load()
        assert saved is not None and saved.phase == "snapshot"
        assert decode_cursor(saved.position["after"])[:2] == ("accounts", sort_key(encode_key([3 * PAGE])))

        # a new subscriber on the same checkpoint goes on after page 3 (asking for page 4 again)
        gate2 = Gate()
        sub2 = Subscriber(
            [stack.relay_url],
            bootstrap=[stack.boot_url],
            snapshot_rows=PAGE,
            transport=gate2,
            checkpoint_store=checkpoints,
        )
        second = Recorder()
        _run(sub2, second)
        sub2.close()
        assert second.ended.is_set()
        assert first.snapshot_rows() + second.snapshot_rows() == rows
        assert gate2.afters[1] == saved.position["after"]

        # leaving windows() mid-page: that page comes again (its checkpoint was not saved), and the
        # page fetched ahead of it is not delivered in its place
        checkpoints3 = MemoryCheckpointStore()
        sub3 = Subscriber(
            [stack.relay_url],
            bootstrap=[stack.boot_url],
            from_snapshot=True,
            snapshot_rows=PAGE,
            checkpoint_store=checkpoints3,
        )
        got: list[tuple[str, Any]] = []
        for i, w in enumerate(sub3.windows()):
            if i == 2:
                break
            got += [(e.table, e.key[0]) for e in w.events]
        for w in sub3.windows(idle_exit=3):
            got += [(e.table, e.key[0]) for e in w.events if e.op.value == "r"]
        sub3.close()
        assert got == [(t, k) for t, k, _ in rows]
    finally:
        stack.kill_all()


def test_prefetch_off_delivers_the_same(tmp_path: Path, daemons: Any) -> None:
    """``snapshot_prefetch=False``: one request at a time, and the same rows (the A/B baseline)."""
    stack = Stack(tmp_path, daemons, rows=ROWS)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        out = []
        for prefetch in (False, True):
            gate = Gate()

            def during_page_2(gate: Gate = gate, prefetch: bool = prefetch) -> None:
                if prefetch:
                    gate.wait_arrived(3)  # requested ahead
                else:
                    time.sleep(0.3)
                    assert gate.count == 2  # not before page 2 is delivered

            rec = Recorder({2: during_page_2})
            sub = Subscriber(
                [stack.relay_url],
                bootstrap=[stack.boot_url],
                from_snapshot=True,
                snapshot_rows=PAGE,
                transport=gate,
                snapshot_prefetch=prefetch,
            )
            _run(sub, rec)
            sub.close()
            out.append(rec.snapshot_rows())
        assert out[0] == out[1] == _in_order(wl.source_rows(stack.db))
    finally:
        stack.kill_all()


class _StopAtCatchup(Consumer):
    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.rows: list[tuple[str, Any]] = []

    def on_end_window(self, window: Window) -> None:
        self.rows += [(e.table, e.key[0]) for e in window.events]

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        if checkpoint.phase != "snapshot":
            self.sub.stop()


def test_prefetched_snapshots_equal_the_servers_pages_one_at_a_time(tmp_path: Path, daemons: Any) -> None:
    """Generated page sizes and filters: the rows a prefetching subscriber delivers equal the server's
    pages fetched one at a time by the client library (the reference path), in order."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from headrace.relay import decode_key
    from headrace.relay.client import BootstrapClient

    stack = Stack(tmp_path, daemons, rows=1_500)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        client = BootstrapClient(stack.boot_url)

        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            st.integers(min_value=40, max_value=2_000),
            st.sampled_from([None, "mod:3:0", "mod:3:2", "mod:7:5"]),
            st.sampled_from([None, ["tags"], ["accounts", "tags"]]),
        )
        def check(limit: int, flt: str | None, sources: list[str] | None) -> None:
            expected: list[tuple[str, Any]] = []
            after = None
            while True:
                page = client.snapshot(sources, flt, after, limit)
                expected += [(e.source, decode_key(e.key)[0]) for e in page.events]
                after = page.cursor
                if page.done:
                    break
            sub = Subscriber(
                [stack.relay_url],
                sources,
                bootstrap=[stack.boot_url],
                filter=flt,
                from_snapshot=True,
                snapshot_rows=limit,
            )
            got = _StopAtCatchup(sub)
            sub.run(got)
            sub.close()
            assert got.rows == expected

        check()
        client.close()
    finally:
        stack.kill_all()
