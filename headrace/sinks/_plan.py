"""The net effect of a batch of windows, as the statements that apply it (sans-io).

A batch is one or more consecutive windows applied in one target transaction. Within it only the last
image of a key matters: a row inserted, updated three times and deleted is one delete; a key's
``c``/``u``/``r`` events end as one upsert of the last ``after`` image. A ``t`` (truncate) event
empties its table *at that point*: changes of the table before it in the batch are dropped and the
table is emptied before the changes after it are applied. A restarted snapshot (``clear``) empties every
table the sink manages, and drops what the batch held before it.

Rows are grouped for ``executemany`` by table and by their set of columns: an image written under an
older schema (fewer columns) only sets the columns it has. So does an update that left TOASTed values
alone (PostgreSQL, :attr:`ChangeEvent.unchanged`): those columns keep the replica's value (or take an
earlier image's from the same batch). A key-changing update of such a row arrives as a delete of the
old key and an upsert of the new one, which then lacks those values: a known limit (docs/sinks.md).

Keys: every row's identity is its event key, the canonical JSON text of the key-column values
(:func:`key_text`), the same bytes the relay routes and filters by. The SQL target keeps it in the
column :data:`KEY_COLUMN`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..relay import Op
from ..relay.client import ChangeEvent

__all__ = ["KEY_COLUMN", "BatchPlan", "ClearAll", "Delete", "Step", "Truncate", "Upsert", "key_text"]

#: the replica column holding a row's event key (its primary key)
KEY_COLUMN = "_headrace_key"

_KEY_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def key_text(key: list[Any]) -> str:
    """The canonical key text of decoded key values (the relay's key bytes, as text)."""
    if len(key) == 1 and type(key[0]) is int:
        return f"[{key[0]}]"
    return _KEY_JSON.encode(key)


@dataclass(frozen=True, slots=True)
class ClearAll:
    """Empty every table this sink manages (a snapshot starts over)."""


@dataclass(frozen=True, slots=True)
class Truncate:
    table: str


@dataclass(frozen=True, slots=True)
class Delete:
    table: str
    keys: list[str]


@dataclass(frozen=True, slots=True)
class Upsert:
    """Insert or replace ``rows`` (dicts of ``columns`` plus :data:`KEY_COLUMN`)."""

    table: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]


Step = ClearAll | Truncate | Delete | Upsert


@dataclass
class _Table:
    truncated: bool = False
    #: key text → the last after image, or None for a delete (insertion order = first touch)
    last: dict[str, dict[str, Any] | None] = field(default_factory=dict)


class BatchPlan:
    """Collects the events of a batch of windows; :meth:`steps` gives the statements of its net effect."""

    def __init__(self) -> None:
        self.clear_all = False
        self.tables: dict[str, _Table] = {}
        self.windows = 0
        self.events = 0

    def __bool__(self) -> bool:
        return self.clear_all or bool(self.tables)

    def clear(self) -> None:
        """The snapshot starts over: everything staged so far is void, every table is emptied first."""
        self.clear_all = True
        self.tables = {}

    def add_window(self, events: Iterable[ChangeEvent]) -> None:
        """Stage one window's events, in order."""
        for e in events:
            self.add(e)
        self.windows += 1

    def add(self, e: ChangeEvent) -> None:
        """Stage one event."""
        self.events += 1
        t = self.tables.get(e.table)
        if t is None:
            t = self.tables[e.table] = _Table()
        if e.op is Op.TRUNCATE:
            t.truncated = True
            t.last.clear()
            return
        k = key_text(e.key)
        if e.op is Op.DELETE:
            t.last[k] = None
        else:
            if e.after is None:
                raise ValueError(f"{e.op.value} event of {e.table} at SCN {e.scn} has no after image")
            prev = t.last.pop(k, None)  # re-insert: the key's place follows its last change (stable plans)
            after = e.after
            if e.unchanged:  # TOASTed values the update left alone: keep the copy's (an earlier image's)
                after = dict(after)
                for col in e.unchanged:
                    if prev is not None and col in prev:
                        after[col] = prev[col]
                    else:
                        del after[col]  # not set: the target row keeps its value
            t.last[k] = after

    def steps(self) -> list[Step]:
        """The statements, per table: truncate, then deletes, then upserts grouped by column set."""
        out: list[Step] = [ClearAll()] if self.clear_all else []
        for name, t in self.tables.items():
            if t.truncated:
                out.append(Truncate(name))
            deletes = [k for k, row in t.last.items() if row is None]
            if deletes and not t.truncated and not self.clear_all:  # an emptied table has none of them
                out.append(Delete(name, deletes))
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for k, row in t.last.items():
                if row is None:
                    continue
                cols = tuple(row)
                groups.setdefault(cols, []).append({**row, KEY_COLUMN: k})
            for cols, rows in groups.items():
                out.append(Upsert(name, cols, rows))
        return out
