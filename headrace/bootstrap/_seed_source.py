"""Seeding a new store generation from any source's snapshot API (PostgreSQL, MariaDB/MySQL).

Theory of operation: :meth:`~headrace.relay.sources.ChangeSource.snapshot` gives a consistent, paged
read of the tables aligned with the relay's stream at ``start_scn`` (the contract is in
:mod:`headrace.relay.sources._base`). A new store generation starts at ``start_scn``; the follower
follows the relay from there *while* the tables are read, page by page, each page one store
transaction. The rows are the stream's own :class:`~headrace.relay.sources.RowChange` objects (same
table metadata, same value conversion), encoded with the relay's one encode step, so a seeded ``r``
row has the relay's fingerprint and the very Avro bytes of the stream's events for the same row.
``start_scn = high_scn``: the generation is ready as soon as the seed is done. Where each source's
position comes from is in :mod:`._seed_pg` (PostgreSQL) and :mod:`._seed_mysql` (MariaDB/MySQL).

Resume-state contract: the generation's ``seed`` state row ``{method, start_scn, high_scn, tables,
table, rows, done}`` (plus the source's own facts) is saved with each page, for status. These
snapshots are not resumable: a restart finds ``done = false`` and seeds a new generation from scratch
(reason ``seed_interrupted``) while a generation already served stays served. Pages for a generation
that was replaced meanwhile are refused by the store and the seed stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._logging import get_logger
from ..errors import TransientError, UsageError
from ..relay import ChangeSource, Codecs, SchemaRegistry, encode_key
from ..relay.sources._base import RowChange, SourceSnapshot
from ._apply import RowOp, read_frames, sort_key
from ._seed import StopFlag
from ._seed_progress import SeedProgress
from ._store import Store

__all__ = ["seed_from_source"]

log = get_logger("bootstrap.seed")


def seed_from_source(
    store: Store,
    source: ChangeSource,
    tables: list[str] | None,
    page_rows: int,
    stop: StopFlag | None = None,
    *,
    positions: threading.Event | None = None,
    reason: str = "initial",
    progress: SeedProgress | None = None,
    method: str,
    describe: Callable[[int], dict[str, Any]] = lambda _start: {},
    estimate: Callable[[list[str]], dict[str, int | None]] | None = None,
) -> dict[str, Any]:
    """Seed a new store generation from ``source``'s snapshot (see the module docstring); closes ``source``.

    ``positions`` is set once the new generation exists (the follower follows it from its start);
    ``describe(start_scn)`` adds the source's own facts to the seed state; ``estimate(tables)`` gives
    the database's row estimate of each table for ``progress`` (None where it has none).
    """
    state: dict[str, Any] = {}
    try:
        if reason == "seed_interrupted":
            log.warning(
                "seed_restarting",
                previous=store.state()["building"],
                why="a source snapshot does not survive a crash",
            )
        try:
            snap = source.snapshot(tables, stop=stop)
        except TransientError:
            if stop is not None and stop.is_set():
                return state
            raise
        with snap:
            for m in snap.tables:
                if not m.key:
                    raise UsageError(
                        f"table {m.name!r} has no key (no primary key or replica identity) to seed it by: "
                        "give it a primary key, or leave it out of bootstrap.sources"
                    )
            registry = SchemaRegistry()
            codecs = Codecs(registry)
            for m in snap.tables:
                registry.register(m)
            store.put_schemas(v for t in registry.tables() for v in registry.versions(t))
            start = snap.start_scn
            state = {
                "method": method,
                "start_scn": start,
                "high_scn": start,
                **describe(start),
                "tables": sorted(m.name for m in snap.tables),
                "table": None,
                "rows": 0,
                "done": False,
            }
            gen = store.begin_generation(start, state, reason)
            if positions is not None:
                positions.set()
            if progress is not None:
                progress.begin(gen, reason, _estimates(estimate, state["tables"]))
            log.info(
                "seed_started",
                gen=gen,
                reason=reason,
                start_scn=start,
                tables=state["tables"],
            )
            for name in sorted(m.name for m in snap.tables):
                state = _read_table(store, gen, snap, name, codecs, state, page_rows, stop, progress)
                if (stop is not None and stop.is_set()) or state.get("abandoned"):
                    return state
        state = {**state, "done": True, "table": None, "tables": []}
        if store.set_seed(state, gen=gen):
            if progress is not None:
                progress.end(True)
            log.info("seed_done", gen=gen, start_scn=state["start_scn"], rows=state["rows"])
        return state
    finally:
        if progress is not None and not state.get("done"):
            progress.end(False)
        if positions is not None:
            positions.set()
        source.close()


def _estimates(
    estimate: Callable[[list[str]], dict[str, int | None]] | None, tables: list[str]
) -> dict[str, int | None]:
    """Each table's row estimate (None each when there is no estimator or it failed: progress is optional)."""
    out: dict[str, int | None] = dict.fromkeys(tables)
    if estimate is None:
        return out
    try:
        out.update({t: v for t, v in estimate(tables).items() if t in out})
    except Exception as exc:  # an estimate is a nicety: never fail a seed for it
        log.info("seed_estimate_unavailable", error=f"{type(exc).__name__}: {exc}")
    return out


def read_ops(codecs: Codecs, table: str, scn: int, rows: list[RowChange]) -> list[RowOp]:
    """The store operations of one snapshot page: each row's ``r`` frame, keyed by its sort key.

    Each row goes through the relay's one encode step (:meth:`Codecs.encode_change`: the same
    conversion and Avro bytes as the stream's events); the frames are built a page at a time
    (:func:`~._apply.read_frames`). A key seen twice keeps its last row (as :func:`~._apply.merge`)."""
    if not rows:
        return []
    encode = codecs.encode_change
    fps: list[str] = []
    afters: list[bytes | None] = []
    for change in rows:
        version, _before, after = encode(change)  # the relay's one encode step
        fps.append(version.fingerprint)
        afters.append(after)
    keys = [encode_key(change.key) for change in rows]
    frames = read_frames(scn, table, fps, keys, afters)
    out: dict[bytes, RowOp] = {}
    for key, frame in zip(keys, frames, strict=True):
        sk = sort_key(key)
        out[sk] = RowOp(table, sk, scn, frame)
    return list(out.values())


def _read_table(
    store: Store,
    gen: int,
    snap: SourceSnapshot,
    table: str,
    codecs: Codecs,
    state: dict[str, Any],
    page_rows: int,
    stop: StopFlag | None,
    progress: SeedProgress | None = None,
) -> dict[str, Any]:
    state = {**state, "table": table}
    from ._seed_pgfast import page_ops  # PostgreSQL: a column at a time; others: read_ops below

    for scn, count, ops in page_ops(snap, table, codecs, page_rows):
        if stop is not None and stop.is_set():
            return state
        state = {**state, "rows": state["rows"] + count}
        if ops and not store.apply(ops, scn, seed=state, gen=gen):
            log.warning("seed_abandoned", gen=gen, detail="a newer generation replaced this one")
            return {**state, "abandoned": True}
        if progress is not None:
            progress.add(table, count)
    tables_left = [t for t in state["tables"] if t != table]
    state = {**state, "tables": tables_left, "table": None}
    if not store.set_seed(state, gen=gen):
        return {**state, "abandoned": True}
    return state
