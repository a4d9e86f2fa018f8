"""Helpers for the archive/demux/load tests: write sink files the way the collector does, read archives back."""

from __future__ import annotations

import io
import itertools
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
