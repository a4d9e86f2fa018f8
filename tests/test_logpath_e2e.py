"""The log path end to end: real agent and collector processes, real files, sockets and sink files.

Every test writes lines into tailed files (with rotations), and checks the collectors' sink files
(Avro, read with fastavro): each stream's chunks tile its offsets without gap or overlap, and the
bytes equal exactly the lines written to that path, in order.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import httpx
from support import Daemon, free_port, wait_until, write_config

from headrace._chunk import SINK_SCHEMA

SINK_FIELDS = {f["name"] for f in SINK_SCHEMA["fields"]}


def gen(tag: str, start: int, stop: int) -> bytes:
    return b"".join(b"%s %09d abcdefghijklmnopqrstuvwxyz\n" % (tag.encode(), i) for i in range(start, stop))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


class Collector:
    def __init__(self, daemons: Callable[..., Daemon], tmp: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sink = tmp / f"{name}-sink"
        cfg = {"listen": f"127.0.0.1:{self.port}", "sink_dir": str(self.sink), "name": name, "roll_bytes": 8 << 20}
        path = write_config(tmp / f"{name}.yaml", {"collector": cfg})
        self.d = daemons(["collector", "--config", str(path)], name)

    def start(self) -> Collector:
        self.d.start()
        self.d.wait_http(self.url + "/healthz")
        return self


class Agent:
    def __init__(self, daemons: Callable[..., Daemon], tmp: Path, collectors: list[str], **extra: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        cfg = {
            "name": "host-a",
            "collectors": collectors,
            "state_dir": str(tmp / "agent-state"),
            "listen": f"127.0.0.1:{self.port}",
            "sources": [{"path": str(self.logs / "*.log"), "data_type": "app"}],
            "rotate_wait_seconds": 0.2,
            "max_backoff_seconds": 0.5,
            **extra,
        }
        path = write_config(tmp / "agent.yaml", {"agent": cfg})
        self.d = daemons(["agent", "--config", str(path)], "agent")

    def start(self) -> Agent:
        self.d.start()
        self.d.wait_http(self.url + "/healthz")
        return self

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/v1/status", timeout=10).json()  # type: ignore[no-any-return]

    def stream(self, path: Path) -> dict[str, Any]:
        return next((s for s in self.status()["streams"] if s["path"] == str(path)), {})

    def all_acked(self, n_streams: int) -> bool:
        st = self.status()
        streams = st["streams"]
        return (
            len(streams) == n_streams
            and st["spool"]["chunks"] == 0
            and all(s["lag_bytes"] == 0 and s["acked_offset"] == s["read_offset"] for s in streams)
        )


def sink_records(sinks: list[Path]) -> list[dict[str, Any]]:
    """Every record in the sink files (done/ and still-open files) of these collectors."""
    out: list[dict[str, Any]] = []
    for sink in sinks:
        for path in sorted([*sink.glob("done/*.avro"), *sink.glob("open/*.avro")]):
            with open(path, "rb") as f:
                out.extend(fastavro.reader(f))  # type: ignore[arg-type]
    return out


def check_streams(sinks: list[Path], expected: dict[Path, bytes], *, across_collectors: bool = False) -> dict[str, int]:
    """Assert every stream's bytes arrived exactly once, in order. Returns counts for the report.

    With ``across_collectors`` a chunk may be in two collectors' sinks (sent to one that died after
    writing it, before its ack got out, then re-sent to another); such copies have the same identity
    and bytes, and the archive builder removes them. Within one collector nothing may repeat.
    """
    records = sink_records(sinks)
    assert records and set(records[0]) >= SINK_FIELDS
    by_stream: dict[str, dict[int, dict[str, Any]]] = {}
    copies = 0
    for r in records:
        assert r["source"] == "host-a" and r["data_type"] == "app"
        pieces = by_stream.setdefault(r["stream"], {})
        prior = pieces.get(r["seq_end"])
        if prior is not None:
            assert across_collectors, f"{r['stream']} chunk ending at {r['seq_end']} written twice"
            assert (prior["seq_start"], prior["data"]) == (r["seq_start"], r["data"])
            copies += 1
            continue
        pieces[r["seq_end"]] = r
    assert sorted(by_stream) == sorted(str(p).lstrip("/") for p in expected)
    for path, want in expected.items():
        pieces = sorted(by_stream[str(path).lstrip("/")].values(), key=lambda r: r["seq_start"])
        pos = 0
        for r in pieces:
            assert r["seq_start"] == pos, f"{path.name}: gap or overlap at {pos} (next {r['seq_start']})"
            pos = r["seq_end"]
        got = b"".join(r["data"] for r in pieces)
        if got != want:
            i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
            raise AssertionError(
                f"{path.name}: differs at byte {i}: got {got[i : i + 60]!r}, want {want[i : i + 60]!r}"
            )
    return {"records": len(records), "copies": copies}


def test_million_lines_over_20_files_with_rotation_and_copytruncate(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    col = Collector(daemons, tmp_path, "c1").start()
    agent = Agent(daemons, tmp_path, [col.url]).start()
    files = [agent.logs / f"app{i:02d}.log" for i in range(20)]
    expected = {f: b"" for f in files}
    per_file, step = 50_000, 5_000
    for k in range(0, per_file, step):
        for i, f in enumerate(files):
            data = gen(f"f{i:02d}", k, k + step)
            append(f, data)
            expected[f] += data
        if k == 20_000:  # rename rotation of files 0-4 in the middle of the write
            for f in files[:5]:
                os.rename(f, f.with_suffix(".log.1"))
        if k == 30_000:  # copytruncate of files 5-9 (each once the agent has read it; see docs/agent.md)
            for f in files[5:10]:
                wait_until(lambda f=f: agent.stream(f).get("lag_bytes") == 0, 60, f"{f.name} read before copy")
                shutil.copy(f, f.with_suffix(".log.copy"))
                with open(f, "r+b") as fh:
                    fh.truncate(0)
                wait_until(lambda f=f: agent.stream(f).get("truncations") == 1, 30, f"{f.name} truncation seen")
    assert sum(x.count(b"\n") for x in expected.values()) == 1_000_000
    wait_until(lambda: agent.all_acked(20), 150, "every line acked")
    assert all(agent.stream(f)["new_files"] == 1 for f in files[:5])
    assert col.d.stop() == 0
    check_streams([col.sink], expected)


def _writer(files: list[Path], expected: dict[Path, bytes], stop: threading.Event, rng: random.Random) -> None:
    n = 0
    rotated = 0
    while not stop.is_set():
        f = rng.choice(files)
        data = gen(f.stem, n, n + 300)
        n += 300
        append(f, data)
        expected[f] += data
        if rng.random() < 0.01 and rotated < 6:
            rotated += 1
            os.rename(f, f.with_suffix(f".log.{rotated}"))
        time.sleep(0.002)


def test_kill9_of_agent_and_of_collector_at_random_moments(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    rng = random.Random(int(os.environ.get("HEADRACE_TEST_SEED", "11")))
    col = Collector(daemons, tmp_path, "c1").start()
    agent = Agent(daemons, tmp_path, [col.url], read_block_bytes=256 * 1024).start()
    files = [agent.logs / f"k{i}.log" for i in range(5)]
    expected = {f: b"" for f in files}
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(files, expected, stop, rng))
    writer.start()
    try:
        for victim in ["agent", "collector", "agent", "collector"]:
            time.sleep(rng.uniform(0.5, 2.0))
            d = agent if victim == "agent" else col
            d.d.kill9()
            time.sleep(rng.uniform(0.0, 1.0))
            d.start()
    finally:
        stop.set()
        writer.join()
    wait_until(lambda: agent.all_acked(len(files)), 90, "every line acked after the kills")
    assert col.d.stop() == 0
    counts = check_streams([col.sink], expected)
    assert counts["records"] > 0


def test_only_collector_down_30s_agent_spools_under_cap_then_delivers(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    cap, segment = 1 << 20, 128 * 1024
    col = Collector(daemons, tmp_path, "c1").start()
    agent = Agent(
        daemons, tmp_path, [col.url], spool_cap_bytes=cap, spool_segment_bytes=segment, read_block_bytes=64 * 1024
    ).start()
    files = [agent.logs / f"d{i}.log" for i in range(3)]
    expected = {f: b"" for f in files}
    for i, f in enumerate(files):
        expected[f] = gen(f"d{i}", 0, 1000)
        append(f, expected[f])
    wait_until(lambda: agent.all_acked(3), 30, "first lines acked")
    col.d.kill9()
    down_until = time.monotonic() + 30
    peak = 0
    k = 1000
    while time.monotonic() < down_until:
        for i, f in enumerate(files):  # ~150 kB/s in all: the cap is reached within seconds
            data = gen(f"d{i}", k, k + 500)
            append(f, data)
            expected[f] += data
        k += 500
        if k == 1000 + 500 * 10:
            os.rename(files[0], files[0].with_suffix(".log.1"))  # a rotation during the outage too
        st = agent.status()
        peak = max(peak, st["spool"]["used_bytes"])
        assert st["spool"]["used_bytes"] <= cap
        time.sleep(0.5)
    spool_files = sum(p.stat().st_size for p in (tmp_path / "agent-state" / "spool").glob("*.*"))
    assert peak > cap // 2 and spool_files <= cap + segment
    assert any(s["blocked"] for s in agent.status()["streams"])  # reading stopped at the cap
    col.start()
    wait_until(lambda: agent.all_acked(3), 120, "everything delivered after the collector returned")
    assert col.d.stop() == 0
    check_streams([col.sink], expected)


def test_two_collectors_one_killed_everything_arrives_through_the_other(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    c1 = Collector(daemons, tmp_path, "c1").start()
    c2 = Collector(daemons, tmp_path, "c2").start()
    agent = Agent(daemons, tmp_path, [c1.url, c2.url], read_block_bytes=256 * 1024).start()
    files = [agent.logs / f"t{i}.log" for i in range(4)]
    expected = {f: b"" for f in files}
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(files, expected, stop, random.Random(5)))
    writer.start()
    try:
        wait_until(lambda: agent.status()["last_ack_from"] is not None, 30, "first ack")
        time.sleep(1.0)
        first = agent.status()["last_ack_from"]
        victim = c1 if first == c1.url else c2
        other = c2 if victim is c1 else c1
        victim.d.kill9()
        time.sleep(2.0)
    finally:
        stop.set()
        writer.join()
    wait_until(lambda: agent.all_acked(len(files)), 60, "everything acked by the survivor")
    assert agent.status()["last_ack_from"] == other.url
    assert other.d.stop() == 0
    check_streams([c1.sink, c2.sink], expected, across_collectors=True)
