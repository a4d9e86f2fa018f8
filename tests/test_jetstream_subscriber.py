"""``JetStreamSubscriber``: a headrace subscriber reading the stream the ``nats`` sink fills instead of a
relay — whole windows in order, resumed by stream sequence or by SCN, a window stored twice delivered
once — against a private ``nats-server -js``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from nats_support import nats_url_fixture  # noqa: F401 - the nats_url fixture

from headrace.relay._event import Op
from headrace.relay.client import (
    ChangeEvent,
    Checkpoint,
    FileCheckpointStore,
    JetStreamSubscriber,
    SnapshotRestarted,
    Window,
)
from headrace.sinks._config import NatsTarget
from headrace.sinks._nats import NatsSinkTarget


def _w(scn: int, n: int = 3, op: Op = Op.INSERT) -> Window:
    tables = ["s.a", "s.b"]
    evs = [
        ChangeEvent(
            scn, tables[i % 2], op, [scn * 10 + i], None, {"id": scn * 10 + i, "v": f"x{scn}"}, 0, False, "f" * 16, 1
        )
        for i in range(n)
    ]
    return Window(scn, evs)


def _publish(url: str, items: list[Any], cp: int) -> None:
    t = NatsSinkTarget(NatsTarget(type="nats", servers=[url], stream="J", subject_prefix="j"), "sink")
    try:
        t.commit(items, Checkpoint(cp))
    finally:
        t.close()


def _sub(url: str, store: Any = None, **kw: Any) -> JetStreamSubscriber:
    return JetStreamSubscriber([url], stream="J", subject_prefix="j", store=store, timeout=5, **kw)


def _keys(item: Window | SnapshotRestarted) -> Any:
    return "restart" if isinstance(item, SnapshotRestarted) else (item.scn, [e.key[0] for e in item.events])


def test_windows_resume_by_sequence_after_a_crash_and_in_order(nats_url: str, tmp_path: Path) -> None:
    def snapshot(scn: int) -> Window:
        return Window(
            scn, [ChangeEvent(scn, "s.a", Op.READ, [i], None, {"id": i}, 0, False, "f" * 16, 1) for i in (1, 2)]
        )

    restart = SnapshotRestarted(0, [], "snapshot_restarted", "test")
    published = [snapshot(5), _w(6), _w(7, 1), restart, snapshot(7), _w(8), _w(9, 5), _w(10)]
    _publish(nats_url, published, 10)
    expect = [_keys(x) for x in published]

    store = FileCheckpointStore(str(tmp_path / "cp.json"))
    got: list[Any] = []
    sub = _sub(nats_url, store)
    try:
        for item in sub.windows(idle_exit=2):
            got.append(_keys(item))
            if len(got) == 5:
                break  # dies while handling the 5th: its checkpoint stays at the 4th
    finally:
        sub.close()
    assert got == expect[:5]
    cp = store.load()
    assert cp is not None and cp.phase == "jetstream" and cp.scn == 7
    sub = _sub(nats_url, store)
    try:
        again = [_keys(item) for item in sub.windows(idle_exit=1.5)]
    finally:
        sub.close()
    assert again == expect[4:]  # the 5th again, whole, then the rest, nothing twice
    final = store.load()
    assert final is not None and final.scn == 10
    # the events of a window carry the message's values and headers
    sub = _sub(nats_url, sources=["s.b"])
    try:
        first = next(w for w in sub.windows(idle_exit=1.5) if isinstance(w, Window) and w.scn == 6)
    finally:
        sub.close()
    assert [(e.table, e.op, e.key, e.after, e.fingerprint, e.window_end) for e in first.events] == [
        ("s.b", Op.INSERT, [61], {"id": 61, "v": "x6"}, "f" * 16, False)
    ]


def test_resume_by_scn_and_a_window_stored_twice_is_delivered_once(nats_url: str) -> None:
    _publish(nats_url, [_w(s) for s in range(1, 41)], 40)

    async def replay_after_the_dedupe_window() -> None:  # window 40 again, with ids JetStream no longer knows
        import nats

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            w = _w(40)
            for i, e in enumerate(w.events):
                h = {"Nats-Msg-Id": f"late-{i}", "Headrace-Scn": "40", "Headrace-Op": "c", "Headrace-Table": e.table}
                if i == len(w.events) - 1:
                    h["Headrace-Window-End"] = "1"
                body = {"scn": 40, "table": e.table, "op": "c", "key": e.key, "before": None, "after": e.after}
                await js.publish(f"j.{e.table.replace('.', '_')}", json.dumps(body).encode(), headers=h, stream="J")
        finally:
            await nc.close()

    asyncio.run(replay_after_the_dedupe_window())
    _publish(nats_url, [_w(41)], 41)
    sub = _sub(nats_url, start_scn=27)
    try:
        start = asyncio.run_coroutine_threadsafe(_seq(sub, 27), sub._loop).result(10)
        assert start == 27 * 3 + 1  # after the 27th window's end: a binary search, not a scan
        got = [w.scn for w in sub.windows(idle_exit=1.5) if isinstance(w, Window)]
    finally:
        sub.close()
    assert got == list(range(28, 42))  # 40 once, though the stream holds it twice


async def _seq(sub: JetStreamSubscriber, scn: int) -> int:
    await sub._connect()
    return await sub.seq_after_scn(scn)


def test_headrace_subscribe_from_jetstream_prints_lines_and_resumes(nats_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    _publish(nats_url, [_w(s) for s in range(1, 6)], 5)
    cmd = [sys.executable, "-m", "headrace", "subscribe", "--from-jetstream", nats_url, "--stream", "J"]
    cmd += ["--subject-prefix", "j", "--checkpoint", str(tmp_path / "cp.json"), "--idle-exit", "1.5"]

    def run(*extra: str) -> list[dict[str, Any]]:
        r = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()]

    first = run()
    assert [(e["scn"], e["key"][0], e["op"]) for e in first] == [
        (s, s * 10 + i, "c") for s in range(1, 6) for i in range(3)
    ]
    assert first[2]["window_end"] and first[0]["after"] == {"id": 10, "v": "x1"}
    _publish(nats_url, [_w(6)], 6)
    assert [e["scn"] for e in run()] == [6, 6, 6]  # from the checkpoint: only what is new
    only_b = run("--sources", "s.b", "--checkpoint", str(tmp_path / "b.json"))  # a new reader: from the start
    assert [e["key"][0] for e in only_b] == [s * 10 + 1 for s in range(1, 7)]
    bad = subprocess.run([*cmd, "--relay", "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--from-jetstream reads no relay" in bad.stderr
