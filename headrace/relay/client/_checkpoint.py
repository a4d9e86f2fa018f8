"""Subscriber checkpoints and where they are kept.

Resume-state contract: a checkpoint is the SCN of the last window the consumer fully processed
(plus, for the bootstrap phase, the phase name and a position inside it). It is saved only at
window ends, atomically: a file store writes a temp file, fsyncs and renames it; a SQL store
upserts one row in one transaction. A restart resumes after the saved SCN, so a window that was
being processed when the process died is delivered again, whole.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..._atomic import write_atomic
from ..._db import create_engine
from ...errors import FatalError

__all__ = ["Checkpoint", "CheckpointStore", "FileCheckpointStore", "MemoryCheckpointStore", "SqlCheckpointStore"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a subscriber has fully processed."""

    scn: int
    phase: str = "relay"  # "relay", or a bootstrap phase ("snapshot", "catchup")
    position: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"scn": self.scn, "phase": self.phase, "position": self.position}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(int(data["scn"]), str(data.get("phase", "relay")), dict(data.get("position") or {}))


@runtime_checkable
class CheckpointStore(Protocol):
    """Loads and atomically saves one subscriber's :class:`Checkpoint`."""

    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> None: ...


class MemoryCheckpointStore:
    """A checkpoint kept in memory only (tests, throwaway subscribers)."""

    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        self.checkpoint = checkpoint

    def load(self) -> Checkpoint | None:
        return self.checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint


class FileCheckpointStore:
    """A JSON file replaced atomically (temp file, fsync, rename, fsync of the folder)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> Checkpoint | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Checkpoint.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise FatalError(f"checkpoint file {self.path} is not valid ({exc}); fix or remove it") from exc

    def save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = dict(checkpoint.to_json(), saved_ms=int(time.time() * 1000))
        write_atomic(self.path, json.dumps(body, sort_keys=True).encode())


class SqlCheckpointStore:
    """One row per subscriber ``name`` in table ``headrace_checkpoints`` of any SQLAlchemy database."""

    def __init__(self, url_or_engine: Any, name: str, table: str = "headrace_checkpoints") -> None:
        import sqlalchemy as sa

        self._sa = sa
        self.engine = create_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.name = name
        md = sa.MetaData()
        self.table = sa.Table(
            table,
            md,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("scn", sa.BigInteger, nullable=False),
            sa.Column("data", sa.Text, nullable=False),
            sa.Column("updated_ms", sa.BigInteger, nullable=False),
        )
        md.create_all(self.engine)

    def load(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._sa.select(self.table.c.data).where(self.table.c.name == self.name)).first()
        return Checkpoint.from_json(json.loads(row[0])) if row else None

    def save(self, checkpoint: Checkpoint) -> None:
        values = {
            "scn": checkpoint.scn,
            "data": json.dumps(checkpoint.to_json(), sort_keys=True),
            "updated_ms": int(time.time() * 1000),
        }
        t = self.table
        with self.engine.begin() as conn:
            n = conn.execute(t.update().where(t.c.name == self.name).values(**values)).rowcount
            if n == 0:
                conn.execute(t.insert().values(name=self.name, **values))
