"""The archive manifest: which part files make up one (data type, day), and which bytes they hold.

One ``MANIFEST.json`` per ``archive_dir/data_type=T/date=YYYY-MM-DD/``::

    {"format": 1, "data_type": "web", "date": "2026-11-26",
     "parts": [{"index": 0, "gen": 3, "name": "part-00000.g000003.avro", "chunks": 812, "bytes": 52428800}],
     "covered": [{"source": "host-a", "stream": "access.log", "ranges": [[0, 91234567]]}],
     "sinks": ["20261126T101500-0001.avro", …]}

The manifest is the commit point: a part file is part of the archive only once a manifest names it.
Writing the manifest (atomically) is the last step of a merge; files in the folder that the manifest
does not name are leftovers of a run that was killed, and the next run deletes them.
``covered`` is every byte range (per source and stream) the parts hold, so a re-sent chunk is trimmed
against it. ``sinks`` names the sink files whose chunks went in (an audit trail; correctness does not
depend on it, because re-merging a sink file is a no-op).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._merge import Coverage

__all__ = ["MANIFEST", "Manifest", "Part"]

MANIFEST = "MANIFEST.json"
FORMAT = 1


@dataclass
class Part:
    index: int
    gen: int
    chunks: int
    bytes: int

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}.g{self.gen:06d}.avro"

    @property
    def stem(self) -> str:
        """The generation-free name: demux output named after it is replaced, not doubled, as the part grows."""
        return f"part-{self.index:05d}"


@dataclass
class Manifest:
    data_type: str
    date: str
    parts: list[Part] = field(default_factory=list)
    covered: Coverage = field(default_factory=Coverage)
    sinks: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "data_type": self.data_type,
            "date": self.date,
            "parts": [
                {"index": p.index, "gen": p.gen, "name": p.name, "chunks": p.chunks, "bytes": p.bytes}
                for p in self.parts
            ],
            "covered": self.covered.to_json(),
            "sinks": self.sinks,
        }
        return json.dumps(doc, indent=1, sort_keys=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        doc: dict[str, Any] = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown archive manifest format {doc.get('format')!r}")
        return cls(
            data_type=doc["data_type"],
            date=doc["date"],
            parts=[Part(int(p["index"]), int(p["gen"]), int(p["chunks"]), int(p["bytes"])) for p in doc["parts"]],
            covered=Coverage.from_json(doc["covered"]),
            sinks=list(doc.get("sinks", [])),
        )
