"""The database-neutral items the PostgreSQL and MySQL decoders produce, before they become relay events.

A decoder turns its database's log into a sequence ``TxnBegin, RowChange…, TxnEnd`` per committed
transaction, with a :class:`TableSpec` describing each table's columns (name, Avro type, nullability,
key). The source shell turns these into the relay's events and windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ColumnSpec", "RowChange", "TableSpec", "TxnBegin", "TxnEnd"]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: its name, Avro type (without the null branch), nullability, and the database's type name."""

    name: str
    avro: Any
    nullable: bool
    db_type: str


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table's shape at some point of the log; a new instance means a new schema version."""

    table: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]

    def avro_fields(self) -> list[dict[str, Any]]:
        """Avro record fields for a row of this table (nullable columns are ``["null", T]`` unions)."""
        out: list[dict[str, Any]] = []
        for c in self.columns:
            if c.nullable:
                out.append({"name": c.name, "type": ["null", c.avro], "default": None})
            else:
                out.append({"name": c.name, "type": c.avro})
        return out


@dataclass(frozen=True, slots=True)
class TxnBegin:
    """A transaction starts. ``scn`` is its commit SCN when the log knows it up front (PostgreSQL), else -1."""

    scn: int
    ts_ms: int
    xid: int


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row change. ``unchanged`` names columns whose value the log did not carry (PostgreSQL TOAST)."""

    table: TableSpec
    op: Literal["c", "u", "d"]
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    unchanged: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnEnd:
    """A transaction committed: its SCN, commit time (Unix ms), the log position after it, and its row count."""

    scn: int
    ts_ms: int
    end_position: int
    rows: int
