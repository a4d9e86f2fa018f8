"""Helpers for the archive/demux/load tests: write sink files the way the collector does, read archives back."""

from __future__ import annotations

import io
import itertools
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import fastavro

from headrace._chunk import SINK_SCHEMA, Chunk, chunk_to_record

DAY1_MS = 1_795_000_000_000  # 2026-11-18 (UTC)
DAY_MS = 86_400_000


def cut_chunks(
    source: str, stream: str, data_type: str, lines: list[bytes], rng: random.Random, max_lines: int = 20
) -> list[Chunk]:
    """Cut one stream's lines into record-aligned chunks with contiguous offsets."""
    chunks = []
    pos = 0
    i = 0
    while i < len(lines):
        n = rng.randint(1, max_lines)
        data = b"".join(lines[i : i + n])
        chunks.append(Chunk(source, stream, data_type, pos, pos + len(data), data, {"host": source}))
        pos += len(data)
        i += n
    return chunks


def resends(chunks: list[Chunk], rng: random.Random, share: float = 0.3) -> list[Chunk]:
    """Duplicates and overlapping re-cuts (two neighbours re-sent as one chunk) of some chunks."""
    out: list[Chunk] = []
    for a, b in itertools.pairwise(chunks):
        roll = rng.random()
        if roll < share / 2:
            out.append(a)  # exact duplicate
        elif roll < share:
            out.append(Chunk(a.source, a.stream, a.data_type, a.seq_start, b.seq_end, a.data + b.data, a.tags))
    return out


def write_sink(path: Path, records: list[dict[str, Any]]) -> None:
    """A closed sink file, written like the collector does (Avro object container of SINK_SCHEMA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(SINK_SCHEMA), records)
    tmp.rename(path)


def write_sinks(done: Path, chunks: list[Chunk], per_file: int, received_ms: int, rng: random.Random) -> int:
    """Spread ``chunks`` (shuffled) over sink files in ``done``; returns the number of files."""
    chunks = list(chunks)
    rng.shuffle(chunks)
    n = 0
    for i in range(0, len(chunks), per_file):
        recs = [chunk_to_record(c, received_ms + j) for j, c in enumerate(chunks[i : i + per_file])]
        write_sink(done / f"sink-{received_ms}-{n:05d}.avro", recs)
        n += 1
    return n


def read_archives(archive_dir: Path) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Every archived chunk, by (data_type, date, part file), from the parts the manifests name."""
    import json

    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for man in sorted(archive_dir.glob("data_type=*/date=*/MANIFEST.json")):
        doc = json.loads(man.read_text())
        for p in doc["parts"]:
            with open(man.parent / p["name"], "rb") as f:
                out[(doc["data_type"], doc["date"], p["name"])] = list(fastavro.reader(io.BytesIO(f.read())))
    return out


def streams_from_archives(archive_dir: Path) -> dict[tuple[str, str], bytes]:
    """Reassemble each stream from the archives, asserting that no byte is there twice or missing."""
    pieces: dict[tuple[str, str], list[tuple[int, int, bytes]]] = defaultdict(list)
    for recs in read_archives(archive_dir).values():
        for r in recs:
            pieces[(r["source"], r["stream"])].append((r["seq_start"], r["seq_end"], r["data"]))
    out = {}
    for key, ps in pieces.items():
        ps.sort()
        pos = 0
        for s, e, d in ps:
            assert s == pos, f"{key}: piece at {s}, expected {pos} (a {'gap' if s > pos else 'duplicate byte range'})"
            assert len(d) == e - s
            pos = e
        out[key] = b"".join(d for _, _, d in ps)
    return out


# --- a corpus of log lines of every built-in processor, with the values a parser must find ---------

DEMUX_TYPES = {
    "web": {"processor": "combined"},
    "app": {"processor": "json"},
    "sys": {"processor": "syslog"},
    "pay": {
        "processor": "regex",
        "pattern": r"(?P<ts>\S+) (?P<level>\w+) (?P<amount>\d+) (?P<msg>.*)",
        "types": {"ts": "timestamp", "amount": "int"},
    },
}


def corpus(n: int, seed: int = 3, extra_json_field: bool = False) -> dict[str, dict[str, Any]]:
    """Per data type: ``lines`` (bytes, newline-terminated), ``good``/``bad`` counts, ``bad_lines``,
    ``check`` (SQL aggregate over the loaded table → the value the written lines imply)."""
    rng = random.Random(seed)
    web, app, sys_, pay, misc = [], [], [], [], []
    sizes = status_sum = amount_sum = n_sum = pri_sum = misc_chars = 0
    levels: dict[str, int] = defaultdict(int)
    for i in range(n):
        size = rng.randrange(100000)
        status = rng.choice([200, 301, 404, 500])
        sizes += size
        status_sum += status
        web.append(
            f"10.0.0.{i % 250} - user{i % 7} [18/Nov/2026:{i % 24:02d}:{i % 60:02d}:00 +0000] "
            f'"GET /p/{i}?q=1 HTTP/1.1" {status} {size} "http://ref/{i % 5}" "agent {i % 3}"\n'.encode()
        )
        doc: dict[str, Any] = {"n": i, "msg": f"event {i}", "ok": i % 2 == 0}
        if extra_json_field:
            doc["new_field"] = f"v{i}"
        n_sum += i
        app.append((json.dumps(doc) + "\n").encode())
        pri_sum += i % 192
        misc_chars += len(f"free text {i} ünïcode")
        if i % 2:
            sys_.append(f"<{i % 192}>Nov 18 10:{i % 60:02d}:00 host{i % 4} app{i % 3}[{i}]: msg {i}\n".encode())
        else:
            sys_.append(
                f"<{i % 192}>1 2026-11-18T10:00:{i % 60:02d}Z host{i % 4} app{i % 3} {i} ID{i} - msg {i}\n".encode()
            )
        amount = rng.randrange(1000)
        amount_sum += amount
        level = rng.choice(["INFO", "WARN", "ERROR"])
        levels[level] += 1
        pay.append(f"2026-11-18T10:00:{i % 60:02d}Z {level} {amount} paid {i}\n".encode())
        misc.append(f"free text {i} ünïcode\n".encode())
    bad = {
        "web": [b"garbage web line\n"],
        "app": [b"{not json\n"],
        "sys": [b"not syslog\n"],
        "pay": [b"2026-11-18T10:00:00Z INFO notanumber x\n"],
    }
    out: dict[str, dict[str, Any]] = {
        "web": {"lines": web, "check": {"sum(size)": sizes, "sum(status)": status_sum, "count(time)": n}},
        "app": {"lines": app, "check": {"sum(n)": n_sum}},
        "sys": {"lines": sys_, "check": {"sum(priority)": pri_sum, "count(timestamp)": n}},
        "pay": {"lines": pay, "check": {"sum(amount)": amount_sum, "count(ts)": n}},
        "misc": {"lines": misc, "check": {"sum(length(line))": misc_chars}},
    }
    for t, v in out.items():
        v["good"] = len(v["lines"])
        v["bad"] = len(bad.get(t, []))
        v["bad_lines"] = bad.get(t, [])
        for j, line in enumerate(bad.get(t, [])):
            v["lines"].insert(1 + j * 7, line)
    return out


def corpus_sinks(
    done: Path,
    data: dict[str, dict[str, Any]],
    rng: random.Random,
    received_ms: int = DAY1_MS,
    stream_prefix: str = "",
    start: dict[str, int] | None = None,
) -> None:
    """Write the corpus as sink files (with duplicate and overlapping re-sends), one stream per type."""
    chunks: list[Chunk] = []
    for t, v in data.items():
        cs = cut_chunks("host-a", f"{stream_prefix}{t}.log", t, v["lines"], rng)
        if start and t in start:
            cs = [
                Chunk(c.source, c.stream, c.data_type, c.seq_start + start[t], c.seq_end + start[t], c.data, c.tags)
                for c in cs
            ]
        chunks += cs + resends(cs, rng)
    write_sinks(done, chunks, 30, received_ms, rng)
