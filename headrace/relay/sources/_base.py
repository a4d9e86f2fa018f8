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

Snapshot contract (:meth:`ChangeSource.snapshot`, what the bootstrap server's seeding relies on): a
:class:`SourceSnapshot` reads the current rows of chosen tables, in pages, *aligned with the stream*:

* **Position.** ``start_scn``: the stream's ``read(start_scn)`` delivers every change the snapshot
  does not reflect. Each :class:`SnapshotPage` shows its table's rows exactly as of the page's
  ``scn`` ≥ ``start_scn`` — every change with SCN ≤ ``scn``, none after. So the rows of every page
  plus the stream after ``start_scn``, replayed in order past the highest page ``scn`` (re-applying a
  change a page already shows rewrites the same final image), equal the source. (PostgreSQL: one
  snapshot, every page at ``start_scn``.)
* **Values.** A page's rows are :class:`RowChange` objects with op ``r``, ``before`` None, built
  exactly as the stream builds the same row: the same :class:`TableMeta` (so the same schema and
  fingerprint) and the same value conversion, so the Avro payload of a row read by the snapshot is
  byte for byte the one of the stream's insert of that row.
* **Paging.** :meth:`SourceSnapshot.pages` yields pages of at most ``page_rows`` rows; the last page
  of a table has ``done`` set. Reading holds no lock that blocks the application's writes.
* **Resume.** Where ``resumable`` is true, the snapshot may be re-opened after a crash
  (``ChangeSource.snapshot(…, resume=True)``) and a table continued after a page's ``last_key``.
  Where it is false (PostgreSQL: an exported snapshot dies with its session), a consumer cut short
  starts over with a new snapshot — a new ``start_scn`` — and must discard what it read from the
  old one or keep it apart until the new one is complete.
* **Cleanup.** :meth:`SourceSnapshot.close` releases what the snapshot holds in the database; what a
  crashed snapshot left behind is cleaned up by the next :meth:`ChangeSource.snapshot`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import UsageError
from .._event import Op
from .._schema import TableMeta

__all__ = ["ChangeSource", "ChangeWindow", "RowChange", "SnapshotPage", "SourceSnapshot", "StopFlag"]


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


class StopFlag(Protocol):
    """Something to stop on (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """Rows of one table read by a :class:`SourceSnapshot` (see the module's snapshot contract)."""

    table: TableMeta
    #: the page shows every change with SCN ≤ this and none after
    scn: int
    #: op ``r`` changes (``after`` = the row, ``before`` None, ``key`` in ``table.key`` order)
    rows: list[RowChange]
    #: the key of the last row (continue after it where the snapshot is resumable); None: no rows
    last_key: tuple[Any, ...] | None
    #: no rows of this table follow
    done: bool


class SourceSnapshot(ABC):
    """A consistent, paged read of chosen tables aligned with the stream (see the module docstring)."""

    #: follow the stream from here: ``read(start_scn)`` delivers every change the snapshot does not show
    start_scn: int
    #: the tables read, as the stream describes them (same :class:`TableMeta`, same schema)
    tables: list[TableMeta]
    #: a table can be continued after a page's ``last_key`` in a snapshot re-opened after a crash
    resumable: bool = False

    @abstractmethod
    def pages(self, table: str, page_rows: int, after: Sequence[Any] | None = None) -> Iterator[SnapshotPage]:
        """The rows of ``table`` in pages of at most ``page_rows``; the last one has ``done`` set.

        ``after``: continue after this key (a page's ``last_key``) — only where :attr:`resumable`.
        """

    @abstractmethod
    def close(self) -> None:
        """Release what the snapshot holds in the database."""

    def __enter__(self) -> SourceSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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

    def preflight(self) -> None:  # noqa: B027 - sources check what they can
        """Check the database is reachable and has the settings capture needs, installing and
        changing nothing (``headrace check --connect``); a problem is a clear
        :class:`~headrace.errors.UsageError` or :class:`~headrace.errors.TransientError`."""

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

    def snapshot(
        self,
        tables: Sequence[str] | None = None,
        *,
        stop: StopFlag | None = None,
        resume: bool = False,
    ) -> SourceSnapshot:
        """A consistent snapshot of ``tables`` (default: every captured table) aligned with the stream.

        Waits (until ``stop``) for what the source needs first, e.g. the relay's replication slot.
        ``resume``: re-open the snapshot a crash interrupted, where :attr:`SourceSnapshot.resumable`.
        See the module's snapshot contract.
        """
        raise UsageError(f"the {self.kind} source cannot take a snapshot")
