"""Where each stream stands: cursors and the checkpoint file.

Resume-state contract:

* A :class:`Cursor` names a position in a stream: the file (device, inode and a fingerprint of its
  first ``fpl`` bytes), the file offset just after a record boundary, and the stream offset there.
  Every spooled chunk carries the cursor of its end (inside the spool record, see
  :mod:`headrace._spool`), so the spool itself records how far reading got, durably, in the same
  write as the data.
* ``state_dir/checkpoints.json`` holds, per stream, its path, data type and the cursor of the last
  *acked* chunk. It is replaced atomically (temp file, fsync, rename) after every ack, *before* the
  spool releases the acked chunks.
* On start, a stream resumes after the newer of (the checkpoint's acked cursor, the cursor of its
  newest chunk still in the spool). So a kill -9 at any instant loses nothing and re-sends only the
  spool's un-acked chunks, which collectors de-duplicate by ``(source, stream, seq_end)``; no chunk
  is ever cut differently the second time, because reading resumes exactly where the last spooled
  chunk ended.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .._atomic import write_atomic
from .._statefile import StateFile

__all__ = ["Checkpoints", "Cursor", "StreamCheckpoint"]


@dataclass(frozen=True, slots=True)
class Cursor:
    """A record boundary in a stream (see the module docstring). ``dev``/``ino`` are 0 for API streams."""

    seq: int
    dev: int = 0
    ino: int = 0
    fpl: int = 0
    fp: str = ""
    off: int = 0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | dict[str, Any]) -> Cursor:
        d = json.loads(raw) if isinstance(raw, bytes) else raw
        return cls(**{k: d[k] for k in ("seq", "dev", "ino", "fpl", "fp", "off") if k in d})


@dataclass(slots=True)
class StreamCheckpoint:
    path: str
    data_type: str
    acked: Cursor | None = None


class _StreamState(BaseModel):
    path: str
    data_type: str
    acked: Cursor | None = None  # validated field by field (pydantic reads the dataclass)


class CheckpointsState(BaseModel):
    """``checkpoints.json``: per stream its path, data type and last acked cursor; the sources seen."""

    streams: dict[str, _StreamState] = {}
    seen_sources: list[str] = []


#: version 1 had the same body (and no kind)
CHECKPOINTS_FILE = StateFile("agent checkpoints", CheckpointsState, 1)


@dataclass
class Checkpoints:
    """The checkpoint file: acked cursors per stream and which sources were scanned before."""

    path: Path
    streams: dict[str, StreamCheckpoint] = field(default_factory=dict)
    seen_sources: set[str] = field(default_factory=set)
    lock: threading.RLock = field(default_factory=threading.RLock)  # held to change ``streams``
    _save_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, state_dir: Path) -> Checkpoints:
        path = state_dir / "checkpoints.json"
        cp = cls(path)
        saved = CHECKPOINTS_FILE.load(path)
        if saved is not None:
            for name, s in saved.streams.items():
                cp.streams[name] = StreamCheckpoint(s.path, s.data_type, s.acked)
            cp.seen_sources = set(saved.seen_sources)
        return cp

    def advance(self, acked: dict[str, Cursor]) -> None:
        """Move streams' acked cursors forward (never back)."""
        with self.lock:
            for name, cur in acked.items():
                cp = self.streams.get(name)
                if cp is not None and (cp.acked is None or cur.seq > cp.acked.seq):
                    cp.acked = cur

    def save(self) -> None:
        """Replace the file atomically with the current state."""
        with self._save_lock:
            with self.lock:
                body = CheckpointsState(
                    streams={
                        name: _StreamState(path=s.path, data_type=s.data_type, acked=s.acked)
                        for name, s in sorted(self.streams.items())
                    },
                    seen_sources=sorted(self.seen_sources),
                )
                raw = CHECKPOINTS_FILE.encode(body)
            write_atomic(self.path, raw)
