"""Seeding the snapshot store from PostgreSQL, through the relay source's snapshot API.

Theory of operation. :meth:`~headrace.relay.sources.postgres.PostgresSource.snapshot` of a source
configured like the relay (``bootstrap.seed_slot`` = ``relay.postgres.slot``,
``bootstrap.seed_publication`` = ``relay.postgres.publication``) waits until the relay has created
its slot and publication, then exports a consistent snapshot from a temporary slot
``<seed_slot>_seed`` (dropped as soon as the reading transaction holds the snapshot) whose position
is aligned with the relay's stream: it shows exactly the windows with SCN ≤ ``start_scn = C - 1``
(see :mod:`headrace.relay.sources._pgsnapshot`). A new store generation starts at ``start_scn`` and
the follower follows the relay from there *while* the tables are read; every published table kept by
the bootstrap server is read in pages of ``seed_page_rows`` rows, each page one store transaction.
The rows are the stream's own :class:`~headrace.relay.sources.RowChange` objects (same table
metadata, same value parsing), encoded with the relay's codec: a seeded ``r`` row has the relay's
fingerprint and the very Avro bytes of the stream's events for the same row. ``start_scn = high_scn``,
so the generation is ready as soon as the seed is done.

Why the relay still has every change after ``C``: the relay's slot existed before the snapshot was
taken (the snapshot waits for it), and the relay confirms its slot only up to the SCN the bootstrap
server acknowledged (``relay.durable_consumers``), which is ≤ ``C - 1`` until this seed's log is
applied; the relay's in-memory buffer need only hold ``C - 1`` until the follower's first request.

Resume-state contract. The generation's ``seed`` state row ``{method, start_scn, high_scn,
snapshot_lsn, tables, table, rows, done}`` is saved with each page, for status. A PostgreSQL snapshot
is not resumable (an exported snapshot dies with the session that read it), and pages from another
snapshot taken later would show rows newer than ``C - 1`` that the log would have to catch up past
before the snapshot could be served (with no writes, it never would). So a restart finds ``done =
false`` and **seeds a new generation from scratch** (:mod:`._seeder`, reason ``seed_interrupted``):
the next snapshot drops the temporary slot a crash left (ending its session if still open), a new
generation starts at the new ``C' - 1`` (a generation already served stays served until this one is
ready) and the follower follows it from there. The daemon holds the follower back until the new
generation exists. Correctness first: the cost of a crash is one more full read of the tables. Pages
for a generation that was replaced meanwhile are refused by the store and the seed stops.
"""

from __future__ import annotations

import threading
from typing import Any

from ..relay import PostgresSourceConfig, RelayConfig
from ..relay.sources._pgsnapshot import snapshot_slot_name
from ._seed import StopFlag
from ._seed_progress import SeedProgress
from ._seed_source import seed_from_source
from ._store import Store

__all__ = ["seed_postgres", "seeding_slot_name"]


def seeding_slot_name(relay_slot: str) -> str:
    """The temporary seeding slot's name: the relay's slot name + ``_seed`` (≤ 63 characters)."""
    return snapshot_slot_name(relay_slot)


def seed_postgres(
    store: Store,
    url: str,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    *,
    relay_slot: str = "headrace",
    publication: str = "headrace",
    positions: threading.Event | None = None,
    reason: str = "initial",
    progress: SeedProgress | None = None,
) -> dict[str, Any]:
    """Seed a new store generation from the PostgreSQL database at ``url`` (see the module docstring).

    ``positions`` is set once the new generation exists (the follower follows it from its start).
    """
    from ..relay.sources.postgres import PostgresSource, format_lsn

    source = PostgresSource(
        RelayConfig(source=url, postgres=PostgresSourceConfig(slot=relay_slot, publication=publication))
    )
    return seed_from_source(
        store,
        source,
        tables,
        page_rows,
        stop,
        positions=positions,
        reason=reason,
        progress=progress,
        method="postgresql_exported_snapshot",
        describe=lambda start: {"snapshot_lsn": format_lsn(start + 1)},
        estimate=lambda names: estimate_rows(url, names),
    )


def estimate_rows(url: str, tables: list[str]) -> dict[str, int | None]:
    """PostgreSQL's own row estimate of each table (``pg_class.reltuples``; None for a table never
    vacuumed or analyzed, which PostgreSQL marks with -1)."""
    from ..relay.sources._pgstream import split_table_name
    from ..relay.sources.postgres import connect, libpq_dsn

    conn = connect(libpq_dsn(url))
    try:
        out: dict[str, int | None] = {}
        with conn.cursor() as cur:
            for t in tables:
                schema, name = split_table_name(t)
                cur.execute(
                    "SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relname = %s AND n.nspname = COALESCE(%s, current_schema())",
                    (name, schema),
                )
                row = cur.fetchone()
                out[t] = int(row[0]) if row is not None and row[0] is not None and row[0] >= 0 else None
        return out
    finally:
        conn.close()
