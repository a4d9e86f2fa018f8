"""What the supervised loop needs of a target (the ``sql`` and ``nats`` modules implement it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..relay.client import Checkpoint, SnapshotRestarted, Window

__all__ = ["MarkedTarget", "SchemaOf", "Target"]

#: (fingerprint, table) → the Avro row schema the relay serves for it
SchemaOf = Callable[[str, str], dict[str, Any]]


class Target(Protocol):
    """A place windows are delivered to, holding its own checkpoint.

    ``commit`` must make the effect of ``items`` and ``checkpoint`` durable together (or, for a log
    target, make a replay of ``items`` a no-op and save ``checkpoint`` only after they are durable).
    """

    def load(self) -> Checkpoint | None:
        """The checkpoint the target holds (None: nothing delivered yet)."""
        ...

    def prepare(self, window: Window, schema_of: SchemaOf) -> None:
        """Get ready for ``window`` (DDL for new tables and columns); idempotent, outside the data commit."""
        ...

    def commit(self, items: Sequence[Window | SnapshotRestarted], checkpoint: Checkpoint) -> int:
        """Deliver ``items`` in order and save ``checkpoint`` with them; returns rows (or messages) written."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class MarkedTarget(Protocol):
    """A target that wants the checkpoint after each staged window, not only the last (the ``lake``
    target skips, per table, the windows a table already holds when a commit is replayed)."""

    def commit_marked(
        self,
        items: Sequence[Window | SnapshotRestarted],
        marks: Sequence[tuple[int, Checkpoint]],
        checkpoint: Checkpoint,
    ) -> int:
        """As :meth:`Target.commit`; ``marks``: (items before it, the checkpoint saved after them), in order."""
        ...
