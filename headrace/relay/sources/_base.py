"""The interface every change source implements (SQLite, PostgreSQL, MySQL/MariaDB).

A source turns its database's change log into :class:`ChangeWindow` objects: committed
transactions, in commit order, each a sequence of :class:`RowChange` with Python values. The relay
encodes each window once (``headrace.relay._codec``), puts it in the ring buffer and serves it.

Contract (what the relay relies on):

* **Order and SCN.** Window SCNs strictly increase along the database's commit order; every change
  carries an SCN ≤ its window's SCN and ≥ the previous window's SCN + 1 (PostgreSQL: all changes of a
  window carry the commit LSN; SQLite: each change its change-log row id). Relays reading the same
  database must produce the same SCNs.
* **Whole transactions.** A window never holds part of a transaction. It may hold several
  consecutive transactions where the source cannot tell them apart (SQLite, see its module).
* **Resume.** ``read(after_scn)`` delivers exactly the windows with SCN > ``after_scn`` still in the
  log; ``after_scn=None`` means from the oldest change the source still has. :meth:`start_scn` says
  which SCN that oldest position is *after* (the relay's buffer serves ``since`` ≥ it).
* **Durability.** The source may discard log only up to the SCN given to :meth:`acknowledge`
  (``None``: no durable consumer is configured, apply the source's own retention policy, if any),
  and nothing before the first call (the relay calls it before ``read`` and on every idle tick).
* **Values.** Row images are ``{column name: Python value}`` with the types of the column kinds
  (``docs/type-mapping.md``): int, float, Decimal, str, bytes, bool, date, time, datetime (naive for
  ``timestamp``, aware for ``timestamptz``), UUID, timedelta, JSON values (dict/list/… for ``json``),
  lists for arrays. ``key`` is the tuple of key-column values in ``TableMeta.key`` order.
* **Schemas.** ``RowChange.table`` is the table's metadata at the time of the change. When a table
  changes shape, the source starts passing a new :class:`TableMeta` and the relay registers a new
  schema version. :meth:`ChangeSource.tables` is called on every idle tick (so new tables and
  shapes get a schema before their first change): return cached objects, do not query.
* **Threads.** ``read`` runs in one background thread and may block, but it must yield ``None``
  (an idle tick) at least every ``idle_seconds`` so the relay can stop it and pass acknowledgements;
  ``acknowledge`` is called from that same thread between items.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._event import Op
from .._schema import TableMeta

__all__ = ["ChangeSource", "ChangeWindow", "RowChange"]


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row change of a committed transaction, values as Python objects."""

    scn: int
    table: TableMeta
    op: Op
    key: tuple[Any, ...]
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    #: the change's own commit time when the source knows it per change (None: the window's ``ts_ms``)
    ts_ms: int | None = None


@dataclass(slots=True)
class ChangeWindow:
    """A committed transaction (or several consecutive ones).

    ``changes`` may be a generator (so a huge transaction need not sit in memory); the relay iterates
    it exactly once, in order, before asking for the next window.
    """

    scn: int
    ts_ms: int
    changes: Iterable[RowChange]


class ChangeSource(ABC):
    """A database change log, read as committed windows."""

    #: URL scheme(s) this source handles, for messages.
    kind: str = "?"
    #: The longest ``read`` may go without yielding (an item or an idle tick).
    idle_seconds: float = 0.5

    @abstractmethod
    def open(self) -> None:
        """Connect, check the database's settings (clear :class:`~headrace.errors.UsageError` naming the
        setting when wrong), and install what capture needs (idempotently)."""

    @abstractmethod
    def tables(self) -> list[TableMeta]:
        """The captured tables as they are now."""

    @abstractmethod
    def start_scn(self) -> int:
        """The SCN just before the oldest change the source can still deliver."""

    @abstractmethod
    def read(self, after_scn: int | None, stop: threading.Event) -> Iterator[ChangeWindow | None]:
        """Committed windows with SCN > ``after_scn``, in order, forever; ``None`` items are idle ticks.

        Returns when ``stop`` is set. Raises :class:`~headrace.errors.TransientError` when the database
        is unreachable (the relay retries ``read`` from its last SCN with backoff).
        """

    @abstractmethod
    def acknowledge(self, durable_scn: int | None) -> None:
        """Everything ≤ ``durable_scn`` is durable downstream; the source may discard that log."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    def uninstall(self) -> None:
        """Remove everything :meth:`open` installed (``headrace relay uninstall``)."""

    def describe(self) -> dict[str, Any]:
        """Extra facts for ``/v1/status`` (position, lag, retained log …)."""
        return {}
