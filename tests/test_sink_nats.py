"""``headrace sink`` with the ``nats`` target against a private ``nats-server -js``: a SQLite source under
writers, the sink killed with SIGKILL at random moments (the first inside the initial snapshot); the
stream must hold every change once, in SCN order per subject, and materialise to the source tables."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import pytest
from bootstrap_stack import Stack
from nats_support import nats_url_fixture  # noqa: F401 - the nats_url fixture
from sink_support import CounterWriter, add_counters, sink_config, source_table
from support import wait_until

TABLES = {"accounts": "id", "tags": "k", "counters": "id"}


async def _read_stream(url: str, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await js.get_msg(stream, seq=seq)
            out.append((m.subject, dict(m.headers or {}), m.data or b""))
        return out
    finally:
        await nc.close()


async def _kv(url: str, name: str) -> dict[str, Any] | None:
    import nats

    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value("headrace_sink")
        return dict(json.loads((await kv.get(name)).value))
    except Exception:
        return None
    finally:
        await nc.close()


def _last_scn(url: str) -> int:
    kv = asyncio.run(_kv(url, "sink"))
    return int(kv["checkpoint"]["scn"]) if kv else -1


def test_nats_stream_holds_every_change_once_across_kill9(tmp_path: Path, daemons: Any, nats_url: str) -> None:
    # a bootstrap log kept for a while: under load a sink whose log is compacted right away restarts its
    # snapshot after every kill and may never stream changes before the writers stop
    stack = Stack(tmp_path, daemons, rows=2000, bootstrap={"retention_seconds": 3600})
    add_counters(stack.db)
    stack.start_relay()
    stack.start_bootstrap()
    stack.wait_ready()
    rng = random.Random(3)
    counters = CounterWriter(stack.db)
    try:
        target = {"type": "nats", "servers": [nats_url], "stream": "HR", "subject_prefix": "hr"}
        cfg = sink_config(tmp_path / "sink.yaml", stack.relay_url, stack.boot_url, target, snapshot_rows=200)
        counters.start()
        stack.start_writers(1, sleep_ms=3)
        sink = daemons(["sink", "--config", str(cfg)], "sink")
        last = -1
        for i in range(4):
            sink.start()
            if i == 0:
                wait_until(lambda: asyncio.run(_kv(nats_url, "sink")) is not None, 60, "a first commit", 0.01)
            else:
                wait_until(lambda last=last: _last_scn(nats_url) > last, 60, "the checkpoint to move")
                time.sleep(rng.uniform(0.05, 1.0))  # a random kill moment (not a synchronisation)
            assert sink.alive(), sink.output()
            sink.kill9()
            last = _last_scn(nats_url)
        stack.stop_writers()
        increments = counters.finish()
        final = wl.change_log_head(stack.db)
        sink.args = ["sink", "--config", str(cfg), "--idle-exit", "3"]
        sink.start()
        assert sink.proc is not None
        assert sink.proc.wait(120) == 0, sink.output()
    finally:
        counters.finish()
        stack.kill_all()

    msgs = asyncio.run(_read_stream(nats_url, "HR"))
    ids = [h["Nats-Msg-Id"] for _, h, _ in msgs if "Nats-Msg-Id" in h]
    assert len(ids) == len(set(ids))
    changes = [(s, h, json.loads(b)) for s, h, b in msgs if h.get("Headrace-Op") in ("c", "u", "d")]
    seen = {(e["scn"], e["table"], json.dumps(e["key"]), e["op"]) for _, _, e in changes}
    assert len(seen) == len(changes), "a change was stored twice"
    per_subject: dict[str, list[int]] = defaultdict(list)
    for s, h, _ in changes:
        per_subject[s].append(int(h["Headrace-Scn"]))
    assert set(per_subject) >= {"hr.accounts", "hr.counters"}
    for s, scns in per_subject.items():
        assert scns == sorted(scns), f"{s}: changes out of SCN order"

    # materialised in stream order, the messages are the source tables
    copy: dict[tuple[str, Any], dict[str, Any]] = {}
    for _, _h, body in msgs:
        e = json.loads(body)
        if e.get("control") == "snapshot_restarted":
            copy.clear()
        elif e["op"] == "d":
            copy.pop((e["table"], e["key"][0]), None)
        else:
            copy[(e["table"], e["key"][0])] = e["after"]
    for table, key in TABLES.items():
        src = source_table(stack.db, table, key)
        mine = {k: v for (t, k), v in copy.items() if t == table}
        assert mine == src, table
    # every increment after the (last restarted) snapshot arrived once, in order: each counter's updates
    # count up by one
    restarts = [i for i, (_, h, _) in enumerate(msgs) if h.get("Headrace-Control")]
    by_counter: dict[int, list[int]] = defaultdict(list)
    for _, _h, body in msgs[restarts[-1] + 1 if restarts else 0 :]:
        e = json.loads(body)
        if e["table"] == "counters" and e["op"] == "u":
            by_counter[e["key"][0]].append(e["after"]["n"])
    assert by_counter
    for cid, ns in by_counter.items():
        assert ns == list(range(ns[0], ns[0] + len(ns))), (cid, ns[:20])
    assert sum(r["n"] for r in source_table(stack.db, "counters", "id").values()) == increments
    kv = asyncio.run(_kv(nats_url, "sink"))
    assert kv is not None and kv["checkpoint"]["scn"] == final


def test_nats_target_resumes_from_the_last_message_and_dedupes_a_replay(nats_url: str) -> None:
    """A crash after the publish acks but before the KV write: the last message's checkpoint wins, and the
    replayed commit is dropped by JetStream as duplicates."""
    from headrace.relay._event import Op
    from headrace.relay.client import ChangeEvent, Checkpoint, Window
    from headrace.sinks._config import NatsTarget
    from headrace.sinks._nats import NatsSinkTarget

    def w(scn: int) -> Window:
        evs = [
            ChangeEvent(scn, "s.t", Op.INSERT, [scn * 10 + i], None, {"id": scn * 10 + i}, 0, False, "0" * 16, 1)
            for i in range(3)
        ]
        return Window(scn, evs)

    cfg = NatsTarget(type="nats", servers=[nats_url], stream="T", subject_prefix="t")
    t = NatsSinkTarget(cfg, "one")
    try:
        assert t.load() is None
        assert t.commit([w(1), w(2)], Checkpoint(2)) == 6
        assert t.load() == Checkpoint(2)

        async def no_kv(*a: Any, **k: Any) -> None:
            raise RuntimeError("killed before the KV write")

        real_put, t._kv.put = t._kv.put, no_kv
        with pytest.raises(RuntimeError):
            t.commit([w(3)], Checkpoint(3))
        t._kv.put = real_put
    finally:
        t.close()
    t2 = NatsSinkTarget(cfg, "one")
    try:
        assert t2.load() == Checkpoint(3)  # from the last message's headers, newer than the KV's
        t2.commit([w(3)], Checkpoint(3))  # a replay of the same window (e.g. after a crash mid-commit)
        assert t2.duplicates == 3
    finally:
        t2.close()
    msgs = asyncio.run(_read_stream(nats_url, "T"))
    assert [h["Nats-Msg-Id"] for _, h, _ in msgs] == [f"{s}-{i}" for s in (1, 2, 3) for i in range(3)]
    assert len(msgs) == 9 and [m[0] for m in msgs] == ["t.s_t"] * 9
    assert [h.get("Headrace-Window-End") for _, h, _ in msgs][:3] == [None, None, "1"]


async def _read_windows(
    url: str, stream: str, after_seq: int, n: int, crash_after: int | None = None
) -> tuple[list[list[int]], int]:
    """The docs/sinks.md consumer recipe: an ordered consumer on every subject from the stream sequence
    after the consumer's own checkpoint (the sequence of the last window end it applied, kept with
    what it applied); a window is applied whole at its window-end message. ``crash_after``: leave
    after that many messages in all (as a killed consumer would). Returns the windows applied and the
    new checkpoint."""
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(url)
    windows: list[list[int]] = []
    try:
        js = nc.jetstream()
        sub = await js.subscribe(
            "t.>",
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1),
        )
        current: list[int] = []
        read = 0
        while len(windows) < n:
            m = await sub.next_msg(timeout=10)
            current.append(json.loads(m.data)["key"][0])
            read += 1
            if read == crash_after:
                return windows, after_seq
            if (m.headers or {}).get("Headrace-Window-End") == "1":
                windows.append(current)  # apply the window and save m.metadata.sequence.stream with it
                after_seq = m.metadata.sequence.stream
                current = []
        return windows, after_seq
    finally:
        await nc.close()


def test_a_consumer_resumes_by_stream_sequence_with_whole_windows(nats_url: str) -> None:
    from headrace.relay._event import Op
    from headrace.relay.client import ChangeEvent, Checkpoint, Window
    from headrace.sinks._config import NatsTarget
    from headrace.sinks._nats import NatsSinkTarget

    def w(scn: int) -> Window:
        evs = [
            ChangeEvent(scn, "s.t", Op.INSERT, [scn * 10 + i], None, {"id": scn * 10 + i}, 0, False, "0" * 16, 1)
            for i in range(3)
        ]
        return Window(scn, evs)

    t = NatsSinkTarget(NatsTarget(type="nats", servers=[nats_url], stream="W", subject_prefix="t"), "w")
    try:
        t.commit([w(1), w(2), w(3)], Checkpoint(3))
    finally:
        t.close()
    first, cp = asyncio.run(_read_windows(nats_url, "W", 0, 3, crash_after=5))
    assert first == [[10, 11, 12]] and cp == 3  # died inside window 2: its checkpoint stays at window 1's end
    rest, cp = asyncio.run(_read_windows(nats_url, "W", cp, 2))
    assert rest == [[20, 21, 22], [30, 31, 32]] and cp == 9  # window 2 again, whole, then window 3


def _reads(scn: int, keys: str, row_scn: int = 3) -> Any:
    """A snapshot page: ``r`` events of keys ``keys`` (one letter each), rows last changed at ``row_scn``."""
    from headrace.relay._event import Op
    from headrace.relay.client import ChangeEvent, Window

    evs = [ChangeEvent(row_scn, "s.t", Op.READ, [k], None, {"id": k}, 0, False, "0" * 16, 1) for k in keys]
    return Window(scn, evs)


def _page(s0: int, after: str = "x") -> Any:
    from headrace.relay.client import Checkpoint

    return Checkpoint(s0, "snapshot", {"snapshot_scn": s0, "after": after})


def _after_last_restart(url: str, stream: str) -> list[str]:
    """The keys of the ``r`` messages after the stream's last snapshot_restarted control: a consumer's copy."""
    msgs = asyncio.run(_read_stream(url, stream))
    last = max((i for i, (_, h, _) in enumerate(msgs) if h.get("Headrace-Control")), default=-1)
    return [json.loads(b)["key"][0] for _, h, b in msgs[last + 1 :] if h.get("Headrace-Op") == "r"]


def _cut_after(t: Any, publishes: int) -> None:
    """Make ``t``'s commit die after ``publishes`` event publishes were stored (a kill amid a commit)."""
    real = t._js.publish_async
    done: list[Any] = []

    async def cut(*a: Any, **k: Any) -> Any:
        if len(done) == publishes:
            await asyncio.gather(*done)  # what was published before the kill is stored
            raise RuntimeError("killed amid the commit")
        fut = await real(*a, **k)
        done.append(fut)
        return fut

    t._js.publish_async = cut


def test_a_restarted_snapshot_within_the_duplicate_window_is_stored_again(nats_url: str) -> None:
    """Unchanged rows (same row SCN and key) of a restarted snapshot are not dropped as duplicates of the
    earlier snapshot's, while a replay of the same page after a crash is."""
    from headrace.relay.client import Checkpoint, SnapshotRestarted
    from headrace.sinks._config import NatsTarget
    from headrace.sinks._nats import NatsSinkTarget

    cfg = NatsTarget(type="nats", servers=[nats_url], stream="R", subject_prefix="t")
    t = NatsSinkTarget(cfg, "one")
    try:
        assert t.load() is None
        t.commit_marked([_reads(5, "abc")], [(1, _page(5))], _page(5))
        # the bootstrap server restarted the snapshot, even at the same SCN (a re-seed of an idle source)
        restart = Checkpoint(0, "snapshot", {})
        done = Checkpoint(5, "catchup", {"snapshot_scn": 5})
        t.commit_marked([SnapshotRestarted(0, []), _reads(5, "abc")], [(1, restart), (2, done)], done)
        assert t.duplicates == 0
        assert _after_last_restart(nats_url, "R") == ["a", "b", "c"]

        async def no_kv(*a: Any, **k: Any) -> None:
            raise RuntimeError("killed before the KV write")

        real_put, t._kv.put = t._kv.put, no_kv
        with pytest.raises(RuntimeError):  # a next snapshot page, stored, but the KV write is lost
            t.commit_marked([_reads(7, "de")], [(1, _page(7))], _page(7))
        t._kv.put = real_put
    finally:
        t.close()
    t2 = NatsSinkTarget(cfg, "one")
    try:
        assert t2.load() == _page(7)  # from the last message
        t2.commit_marked([_reads(7, "de")], [(1, _page(7))], _page(7))  # replayed: the same ids
        assert t2.duplicates == 2
    finally:
        t2.close()
    assert _after_last_restart(nats_url, "R") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("case", ["restart_replayed", "another_snapshot"])
def test_a_commit_cut_short_amid_snapshot_reads_is_replaced_on_replay(nats_url: str, case: str) -> None:
    """A kill amid a commit that stored some ``r`` messages: on replay the consumer's copy (after the last
    control message) is exactly the replayed snapshot's rows, whether the replay repeats the restart
    (the same snapshot read again: its rows are not dropped as duplicates of the cut-short ones) or
    reads another snapshot than the one the cut-short commit left rows of (a row deleted meanwhile
    does not stay in the copy)."""
    from headrace.relay.client import Checkpoint, SnapshotRestarted
    from headrace.sinks._config import NatsTarget
    from headrace.sinks._nats import NatsSinkTarget

    cfg = NatsTarget(type="nats", servers=[nats_url], stream="C", subject_prefix="t")
    restart = Checkpoint(0, "snapshot", {})
    t = NatsSinkTarget(cfg, "one")
    try:
        t.load()
        t.commit_marked([_reads(5, "abc")], [(1, _page(5))], _page(5))
        if case == "restart_replayed":
            items: list[Any] = [SnapshotRestarted(0, []), _reads(8, "abc")]
            marks = [(1, restart), (2, _page(8))]
        else:
            t.commit_marked([SnapshotRestarted(0, [])], [(1, restart)], restart)  # the log ends at the restart
            items, marks = [_reads(8, "abc")], [(1, _page(8))]
        _cut_after(t, 1)  # "a" stored, then the kill
        with pytest.raises(RuntimeError):
            t.commit_marked(items, marks, marks[-1][1])
    finally:
        t.close()
    assert _after_last_restart(nats_url, "C") == ["a"]
    t2 = NatsSinkTarget(cfg, "one")
    try:
        if case == "restart_replayed":  # the replay restarts again and reads the same rows
            assert t2.load() == _page(5)
            t2.commit_marked(items, marks, marks[-1][1])
            assert _after_last_restart(nats_url, "C") == ["a", "b", "c"]
        else:  # the replay reads a new snapshot: "a" was deleted meanwhile
            assert t2.load() == restart
            t2.commit_marked([_reads(9, "bc")], [(1, _page(9))], _page(9))
            assert _after_last_restart(nats_url, "C") == ["b", "c"]
    finally:
        t2.close()
