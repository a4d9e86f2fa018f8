"""The archive builder: de-duplication, overlaps, day grouping, manifests, locking, kill -9 + re-run."""

from __future__ import annotations

import fcntl
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from archive_support import (
    DAY1_MS,
    DAY_MS,
    cut_chunks,
    read_archives,
    resends,
    streams_from_archives,
    write_sink,
    write_sinks,
)
from support import wait_until, write_config

from headrace._chunk import Chunk, chunk_to_record
from headrace.batch._archive import ArchiveBusy, run_archive, utc_day
from headrace.batch._config import ArchiveConfig
from headrace.batch._merge import Coverage, trim_new


def _lines(tag: str, n: int) -> list[bytes]:
    return [f"{tag} line {i} {'x' * (i % 17)}\n".encode() for i in range(n)]


def test_trim_keeps_each_byte_once() -> None:
    cov = Coverage()
    a = chunk_to_record(Chunk("h", "s", "t", 0, 6, b"ab\ncd\n"), 1)
    b = chunk_to_record(Chunk("h", "s", "t", 3, 9, b"cd\nef\n"), 1)  # overlaps a by one record
    c = chunk_to_record(Chunk("h", "s", "t", 0, 6, b"ab\ncd\n"), 2)  # duplicate of a
    out = trim_new([b, c, a], cov)
    assert [(r["seq_start"], r["seq_end"], r["data"]) for r in out] == [(0, 6, b"ab\ncd\n"), (6, 9, b"ef\n")]
    assert out[1]["crc"] == zlib.crc32(b"ef\n")
    # a later chunk spanning a gap between covered ranges keeps only the gap
    cov2 = Coverage()
    cov2.add(("h", "s"), 0, 3)
    cov2.add(("h", "s"), 6, 9)
    d = chunk_to_record(Chunk("h", "s", "t", 0, 12, b"ab\ncd\nef\ngh\n"), 3)
    assert [(r["seq_start"], r["data"]) for r in trim_new([d], cov2)] == [(3, b"cd\n"), (9, b"gh\n")]
    assert Coverage.from_json(cov2.to_json()).gaps(("h", "s"), 0, 20) == [(12, 20)]


def test_archive_dedupes_sorts_groups_and_is_idempotent(tmp_path: Path) -> None:
    rng = random.Random(7)
    originals: dict[tuple[str, str], bytes] = {}
    chunks_day1: list[Chunk] = []
    chunks_day2: list[Chunk] = []
    for src in ("host-a", "host-b"):
        for stream, dtype in (("app.log", "app"), ("access.log", "web")):
            lines = _lines(f"{src}/{stream}", 400)
            originals[(src, stream)] = b"".join(lines)
            cs = cut_chunks(src, stream, dtype, lines, rng)
            half = len(cs) // 2
            chunks_day1 += cs[:half] + resends(cs[:half], rng)
            chunks_day2 += cs[half:] + resends(cs[half - 3 :], rng, share=1.0)  # re-sends after midnight too
    done = tmp_path / "sink" / "done"
    n1 = write_sinks(done, chunks_day1, 25, DAY1_MS, rng)
    n2 = write_sinks(done, chunks_day2, 25, DAY1_MS + DAY_MS, rng)
    cfg = ArchiveConfig(sink_dir=str(tmp_path / "sink"), archive_dir=str(tmp_path / "archive"), part_bytes=4_000)
    summary = run_archive(cfg)
    assert summary.ok and summary.files == n1 + n2
    assert summary.records == sum(v.count(b"\n") for v in originals.values())
    assert not list(done.glob("*.avro")), "sink files are removed once archived"
    assert streams_from_archives(tmp_path / "archive") == originals

    parts = read_archives(tmp_path / "archive")
    days = {(dt, d) for dt, d, _ in parts}
    assert days == {(t, utc_day(ms)) for t in ("app", "web") for ms in (DAY1_MS, DAY1_MS + DAY_MS)}
    for (dtype, _, _), recs in parts.items():
        assert {r["data_type"] for r in recs} == {dtype}
        keys = [(r["source"], r["stream"], r["seq_start"]) for r in recs]
        assert keys == sorted(keys), "each archive part is sorted by (source, stream, seq_start)"
    assert max(len(recs) for recs in parts.values()) > 0 and len(parts) > 4, "part_bytes rolls parts"

    # the same sink files again (a collector re-delivering them): nothing changes
    before = {k: [r["seq_start"] for r in v] for k, v in parts.items()}
    write_sinks(done, chunks_day1[:50], 25, DAY1_MS + 5, rng)
    again = run_archive(cfg)
    assert again.ok and again.chunks == 0
    assert {k: [r["seq_start"] for r in v] for k, v in read_archives(tmp_path / "archive").items()} == before
    man = (tmp_path / "archive" / "data_type=app" / f"date={utc_day(DAY1_MS)}" / "MANIFEST.json").read_text()
    assert "sink-" in man, "the manifest names the sink files it covers"


def test_unreadable_sink_is_reported_and_kept(tmp_path: Path) -> None:
    done = tmp_path / "sink" / "done"
    write_sink(done / "good.avro", [chunk_to_record(Chunk("h", "s", "t", 0, 3, b"ab\n"), DAY1_MS)])
    (done / "torn.avro").write_bytes(b"Obj\x01garbage")
    cfg = ArchiveConfig(sink_dir=str(tmp_path / "sink"), archive_dir=str(tmp_path / "archive"))
    summary = run_archive(cfg)
    assert not summary.ok and "torn.avro" in summary.failures[0]
    assert (done / "torn.avro").exists() and not (done / "good.avro").exists()
    assert streams_from_archives(tmp_path / "archive") == {("h", "s"): b"ab\n"}


def test_second_run_is_refused_while_one_holds_the_lock(tmp_path: Path) -> None:
    (tmp_path / "sink" / "done").mkdir(parents=True)
    cfg = ArchiveConfig(sink_dir=str(tmp_path / "sink"), archive_dir=str(tmp_path / "archive"))
    fd = os.open(tmp_path / "sink" / ".archive.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ArchiveBusy, match="another headrace archive run"):
            run_archive(cfg)
        # and the command says so and exits non-zero
        cfgfile = write_config(tmp_path / "c.yaml", {"archive": cfg.model_dump()})
        p = subprocess.run(
            [sys.executable, "-m", "headrace", "archive", "--config", str(cfgfile)], capture_output=True, text=True
        )
        assert p.returncode == 1 and "another headrace archive run" in p.stderr
    finally:
        os.close(fd)
    assert run_archive(cfg).ok


def test_kill9_at_random_moments_then_rerun_keeps_every_chunk_once(tmp_path: Path) -> None:
    rng = random.Random(1234)
    originals: dict[tuple[str, str], bytes] = {}
    chunks: list[Chunk] = []
    for s in range(6):
        lines = _lines(f"s{s}", 12000)
        originals[("host", f"s{s}.log")] = b"".join(lines)
        cs = cut_chunks("host", f"s{s}.log", "app" if s % 2 else "web", lines, rng, max_lines=40)
        chunks += cs + resends(cs, rng)
    done = tmp_path / "sink" / "done"
    write_sinks(done, chunks[: len(chunks) // 2], 20, DAY1_MS, rng)
    write_sinks(done, chunks[len(chunks) // 2 :], 20, DAY1_MS + DAY_MS - 1000, rng)
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "archive": {
                "sink_dir": str(tmp_path / "sink"),
                "archive_dir": str(tmp_path / "archive"),
                "part_bytes": 60_000,
                "run_bytes": 40_000,
            }
        },
    )
    cmd = [sys.executable, "-m", "headrace", "archive", "--config", str(cfg), "--log-format", "json"]

    def snapshot() -> tuple[int, list[str]]:
        return len(list(done.glob("*.avro"))), sorted(p.name for p in (tmp_path / "archive").rglob("*"))

    kills = 0
    killed_mid_work = 0
    for _ in range(8):
        before = snapshot()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until this run has started changing things (start-up time varies with the machine's
        # load), then kill it a random moment later: before, during or after a commit
        wait_until(lambda b=before, p=proc: snapshot() != b or p.poll() is not None, 60, "the run to start working")
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None:
            proc.kill()
            kills += 1
            killed_mid_work += any(done.glob("*.avro"))
        proc.wait()
        if not list(done.glob("*.avro")):
            break
    assert killed_mid_work >= 3, f"only {killed_mid_work} of {kills} kills hit a run in the middle of its work"
    final = subprocess.run(cmd, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert "headrace archive: ok" in final.stdout
    assert not list(done.glob("*.avro"))
    assert streams_from_archives(tmp_path / "archive") == originals
    # no leftovers: every file in an archive folder is named by its manifest
    for folder in (tmp_path / "archive").glob("data_type=*/date=*"):
        import json

        named = {p["name"] for p in json.loads((folder / "MANIFEST.json").read_text())["parts"]}
        assert {f.name for f in folder.iterdir()} <= named | {"MANIFEST.json"}


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard"])
def test_block_reader_matches_fastavro(codec: str) -> None:
    import io

    import fastavro

    from headrace._container import decode_block, iter_blocks
    from headrace.batch._archive import encode_part

    recs = [
        chunk_to_record(Chunk("h", f"s{i % 3}", "t", i * 100, i * 100 + 99, b"x" * 98 + b"\n", {"k": str(i)}), i)
        for i in range(20_000)
    ]
    raw = encode_part(recs, codec)
    blocks = list(iter_blocks(raw))
    assert len(blocks) > 1
    assert [r for b in blocks for r in decode_block(b)] == list(fastavro.reader(io.BytesIO(raw))) == recs
    with pytest.raises(ValueError, match="truncated"):
        list(iter_blocks(raw[:-5]))
