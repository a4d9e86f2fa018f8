"""Persisted state files: typed, versioned, written atomically.

Every JSON state file headrace keeps (the agent's ``checkpoints.json`` and ``sources.json``, the
relay's ``acks.json``, demux's per-day state) is one :class:`StateFile`: a pydantic model for its
body, a ``kind`` and a ``version`` stored beside the body (``{"kind": …, "version": N, …body}``), and
the migrations that bring an older version's body up to date. Reading checks all of it:

* a file of another kind, or one a newer headrace wrote (a higher version), is a
  :class:`~headrace.errors.FatalError` that says so and what to do (a downgrade is not silent);
* an older version is migrated in memory and written back in the current version on the next save;
* a body that does not match the model is a FatalError naming the file and the field.

Files written before versions existed (no ``version`` key) are version 0; a state file whose
version-0 body already has the current shape needs no migration function.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ._atomic import write_atomic
from .errors import FatalError

__all__ = ["StateFile"]

M = TypeVar("M", bound=BaseModel)
Migration = Callable[[dict[str, Any]], dict[str, Any]]


class StateFile(Generic[M]):
    """One kind of state file: ``model`` for the body at ``version``, with ``migrations[v]`` turning
    a version-``v`` body into a version-``v+1`` one."""

    def __init__(
        self, kind: str, model: type[M], version: int, migrations: Mapping[int, Migration] | None = None
    ) -> None:
        self.kind = kind
        self.model = model
        self.version = version
        self.migrations = dict(migrations or {})

    def decode(self, raw: bytes | str, where: str) -> M:
        """The body of ``raw`` (the file ``where``), migrated to the current version and validated."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise FatalError(f"{where}: not a JSON {self.kind} file ({exc}); restore it from a backup") from exc
        if not isinstance(data, dict):
            raise FatalError(f"{where}: not a {self.kind} file (a JSON object was expected)")
        kind = data.pop("kind", self.kind)
        version = data.pop("version", 0)
        if kind != self.kind:
            raise FatalError(f"{where}: a {kind!r} state file where a {self.kind!r} one belongs")
        if not isinstance(version, int) or version < 0:
            raise FatalError(f"{where}: bad state version {version!r}")
        if version > self.version:
            raise FatalError(
                f"{where} was written by a newer headrace ({self.kind} version {version}; this one reads up to "
                f"{self.version}): run that version again, or restore this file from a backup of this version"
            )
        while version < self.version:
            migrate = self.migrations.get(version)
            if migrate is not None:
                data = migrate(data)
            version += 1
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise FatalError(f"{where}: {self.kind} state field {field}: {first['msg']}") from exc

    def encode(self, body: M) -> bytes:
        """``body`` as the file's bytes, with kind and version."""
        return json.dumps(
            {"kind": self.kind, "version": self.version, **body.model_dump(mode="json")}, indent=1, sort_keys=True
        ).encode()

    def load(self, path: str | os.PathLike[str]) -> M | None:
        """The state in ``path``; None when there is no such file."""
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        return self.decode(raw, str(path))

    def save(self, path: str | os.PathLike[str], body: M) -> None:
        """Write ``body`` to ``path`` atomically (temp file, fsync, rename)."""
        write_atomic(path, self.encode(body))
