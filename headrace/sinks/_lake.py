"""The ``lake`` target: Delta Lake tables on a local disk or S3 (the ``deltalake`` package, delta-rs).

Per captured table two Delta tables below the target's ``uri``:

``current/<name>``
    the current state, kept by one ``MERGE`` per commit on the event key
    (:data:`~headrace.sinks._plan.KEY_COLUMN`): the net effect of the commit's windows — upserts of the
    last image, deletes — as :class:`~headrace.sinks._plan.BatchPlan` computes it; a truncate (or a
    restarted snapshot) makes the commit an overwrite with the rows after it.
``changes/<name>``
    append-only, every event once: ``_headrace_commit`` (the sink's commit number: the order of
    commits), ``_headrace_op`` (``c u d r t``; a restarted snapshot is a ``t`` with SCN 0), ``_headrace_scn``,
    ``_headrace_index`` (the event's place in its window), ``_headrace_ts`` (the source commit time),
    ``_headrace_key``, then the row's columns (the ``after`` image; the ``before`` image for a delete).

and the sink's own log ``_headrace_sink/<sink name>``: a row per commit (commit number, checkpoint,
tables written), which also lists the tables the sink manages.

Resume contract: every Delta commit the sink makes carries, in its commit metadata (``commitInfo``,
``CommitProperties.custom_metadata``), ``headrace.sink`` (the sink's name), ``headrace.commit`` (the
sink's commit number n) and ``headrace.checkpoint`` (the checkpoint after the windows it covers). A
Delta commit is atomic, so each table's data and its checkpoint move together. A sink commit n writes
each touched table (changes, then current), then the log last; the log's newest commit is where the
subscriber resumes. A kill between the tables' commits and the log's leaves some tables *ahead* of
the log (the replay then takes a new commit number, so the change table's ``_headrace_commit`` orders
a cut-short commit's rows before the replay's): on start (and when a table is first touched) the sink
reads each table's newest sink commit from its history; a table is ahead when that commit is newer
than the log's (a higher number, or the same number with another checkpoint) or when the log's commit
names it as still ahead. The windows a table already holds are then skipped *for that table* on
replay: up to the window whose checkpoint equals the table's (in the relay and catch-up phases: every
window up to the table's SCN; inside a snapshot, the pages ending at or before the table's). A replay
that reads another snapshot than the one a table holds (a new ``snapshot_scn``) makes that table start
over there instead, as at a restarted snapshot (:func:`covered_until`). A table that stays ahead
through a whole commit is recorded as ahead in that log commit, so a second crash keeps the skip.
Hence every table applies each window once, independently of the others.

Schema growth: new columns are added by ``merge_schema=True`` / ``schema_mode="merge"`` (Delta schema
evolution). Delta allows one writer per table: one sink per ``uri``; on S3 set
``AWS_S3_ALLOW_UNSAFE_RENAME`` (safe with one writer) or a locking provider. Compaction and vacuum
(:func:`compact_lake`) commit as other writers; delta-rs retries a conflicting commit, and compaction
only rewrites files, so the sink's MERGEs and compaction do not lose each other's work.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .._logging import get_logger
from ..errors import ConfigError, InvalidInput, UsageError
from ..relay import Op
from ..relay._protocol import decode_cursor
from ..relay.client import ChangeEvent, Checkpoint, SnapshotRestarted, Window
from ._config import LakeTarget
from ._laketypes import Convert, lake_columns
from ._plan import KEY_COLUMN, BatchPlan, key_text
from ._target import SchemaOf

__all__ = ["LakeSinkTarget", "lake_name", "read_sink_checkpoint"]

log = get_logger("sink.lake")

META_SINK = "headrace.sink"
META_COMMIT = "headrace.commit"
META_CHECKPOINT = "headrace.checkpoint"
META_AHEAD = "headrace.ahead"
DELETED = "_headrace_deleted"
CHANGE_COLUMNS = ("_headrace_commit", "_headrace_op", "_headrace_scn", "_headrace_index", "_headrace_ts", KEY_COLUMN)
_PHASES_BY_SCN = ("catchup", "relay")


def lake_name(source: str, cfg: LakeTarget) -> str:
    """The lake name of ``source``: ``cfg.tables[source]``, else the prefix plus the name with dots as ``_``."""
    return cfg.tables.get(source) or cfg.table_prefix + source.replace(".", "_")


@dataclass(frozen=True, slots=True)
class SinkCommit:
    """What a Delta commit of this sink carries in its commit metadata."""

    number: int
    checkpoint: Checkpoint
    ahead: dict[str, Checkpoint] = field(default_factory=dict)


def read_sink_checkpoint(dt_: Any, sink: str) -> SinkCommit | None:
    """The newest commit of ``sink`` in a Delta table's history (None: the sink never committed to it)."""
    limit: int | None = 32
    while True:
        hist = dt_.history(limit)
        for h in hist:  # newest first
            if h.get(META_SINK) != sink:
                continue
            ahead = {k: Checkpoint.from_json(v) for k, v in json.loads(h.get(META_AHEAD) or "{}").items()}
            return SinkCommit(int(h[META_COMMIT]), Checkpoint.from_json(json.loads(h[META_CHECKPOINT])), ahead)
        if limit is None or len(hist) < limit:
            return None
        limit = None  # not among the newest: read the whole history once


def _snapshot_of(cp: Checkpoint) -> int | None:
    """The ``snapshot_scn`` of the snapshot a checkpoint is inside (or just finished), else None."""
    s0 = cp.position.get("snapshot_scn")
    return None if s0 is None else int(s0)


def _other_snapshot(held: Checkpoint, snapshot_scn: int) -> bool:
    """Whether a page of snapshot ``snapshot_scn`` is of another snapshot than the one ``held`` is in (or past)."""
    mine = _snapshot_of(held)
    if mine is not None:
        return snapshot_scn != mine
    if held.phase in _PHASES_BY_SCN:  # past its snapshot: one at or below its SCN is caught up past by the table
        return snapshot_scn > held.scn
    return True  # the start of a snapshot (a restart's checkpoint): the table holds no page yet


def _cursor_key(cp: Checkpoint) -> tuple[str, bytes] | None:
    """(source, sort key) of the last row of the page a snapshot checkpoint follows, from the bootstrap
    server's ``after`` cursor; None when it is not one."""
    after = cp.position.get("after")
    if not isinstance(after, str):
        return None
    try:
        source, key, _gen = decode_cursor(after)
    except InvalidInput:
        return None
    return source, key


def _page_at_or_before(cp: Checkpoint, held: Checkpoint) -> bool:
    """Whether the snapshot page ``cp`` ends at or before the page ``held`` ends (pages go in key order);
    False when either cursor cannot be read (the page is applied again: at worst ``r`` rows twice)."""
    a, b = _cursor_key(cp), _cursor_key(held)
    return a is not None and b is not None and a <= b


@dataclass(frozen=True, slots=True)
class Cover:
    """What a table ahead of the log does with a commit's items (see :func:`covered_until`)."""

    #: how many leading items the table already holds (skipped for it)
    skip: int
    #: the table holds more than this commit reaches: it stays ahead
    stays: bool = False
    #: the table holds a *different* snapshot than the one replayed from ``items[skip]``: it starts
    #: over there (its copy is replaced, as at a restarted snapshot)
    replace: bool = False


def covered_until(
    held: Checkpoint, items: Sequence[Window | SnapshotRestarted], marks: Sequence[tuple[int, Checkpoint]]
) -> Cover:
    """What a table holding ``held`` (ahead of the log) has already applied of ``items``.

    Marks are walked in order: every mark up to the one equal to ``held`` is covered; in the relay
    and catch-up phases a mark at or below ``held``'s SCN is covered and one above it is not (nor is
    anything after). A snapshot page is covered only while it is of the snapshot the table holds:
    the same ``snapshot_scn`` when ``held`` names one; when ``held`` is past its snapshot (a plain
    catch-up or relay checkpoint), a snapshot at or below ``held``'s SCN (its catch-up is skipped up
    to that SCN, so the table misses nothing). A page of another snapshot — the replay started a new
    snapshot from the log's checkpoint (the start of a snapshot) and the bootstrap server read it at
    a new SCN — is **not** covered: the table starts over at that snapshot's first item
    (``replace``), since its own rows are of the old snapshot and the new one's catch-up begins past
    them (skipping it lost the changes in between: issue 15). Inside the table's own snapshot a page
    is covered when it ends (its ``after`` cursor: pages go in key order) at or before the table's
    page; the first page past it, or a catch-up or relay mark, ends the skip (when the store changed
    between the crash and the replay, pages end at other keys: the page that straddles the table's
    is applied whole, its held rows are ``r`` rows twice in the change table). A restarted snapshot
    ends the skip before it: the new snapshot replaces what the table held.
    """
    restart = next((i for i, item in enumerate(items) if isinstance(item, SnapshotRestarted)), len(items))
    upto = 0
    for n, cp in marks:
        if n > restart:  # a new snapshot replaces the table's content: nothing from here on is held
            return Cover(upto)
        if cp == held:
            return Cover(n)
        snap = _snapshot_of(cp)
        if snap is not None and _other_snapshot(held, snap):
            return Cover(upto, replace=True)  # another snapshot than the table's, from its first page on
        if held.phase in _PHASES_BY_SCN:
            if cp.phase in _PHASES_BY_SCN and cp.scn > held.scn:
                return Cover(upto)
        # held inside a snapshot: the replay is past the snapshot, or at a page past the table's
        elif cp.phase in _PHASES_BY_SCN or not _page_at_or_before(cp, held):
            return Cover(upto)
        upto = n
    return Cover(upto, stays=True)


class _Table:
    """One Delta table of the sink: where it is and what it holds."""

    def __init__(self, uri: str, source: str) -> None:
        self.uri = uri
        self.source = source
        self.exists = False
        #: the checkpoint this table holds beyond the log's (its windows are skipped on replay)
        self.ahead: Checkpoint | None = None


class LakeSinkTarget:
    """Applies each commit's windows to the current and change tables, then writes the sink's log."""

    def __init__(self, cfg: LakeTarget, sink_name: str) -> None:
        try:
            import deltalake
        except ImportError as exc:  # pragma: no cover - the extra is not installed
            raise ConfigError(
                ["sink.target: type lake needs the deltalake package (pip install 'headrace[lake]')"]
            ) from exc
        self._dl = deltalake
        self.cfg = cfg
        self.name = sink_name
        self.root = cfg.uri.rstrip("/")
        self.opts: dict[str, str] | None = dict(cfg.storage_options) or None
        self.log_uri = f"{self.root}/_headrace_sink/{sink_name}"
        self.commit_no = 0
        self.last: Checkpoint | None = None
        #: source table → column → (arrow type, converter), every column any schema version had
        self.columns: dict[str, dict[str, tuple[pa.DataType, Convert | None]]] = {}
        self._fingerprints: set[str] = set()
        self._tables: dict[str, _Table] = {}
        self._log_ahead: dict[str, Checkpoint] = {}
        #: the highest sink commit number seen in any table (a cut-short commit's number is not reused)
        self._highest = 0
        #: every source table the sink manages (from the log, plus the ones seen since)
        self.sources: set[str] = set()

    def close(self) -> None:
        pass

    # -- checkpoint ----------------------------------------------------------------------------

    def _delta(self, uri: str) -> Any:
        return self._dl.DeltaTable(uri, storage_options=self.opts)

    def _is_delta(self, uri: str) -> bool:
        return bool(self._dl.DeltaTable.is_deltatable(uri, storage_options=self.opts))

    def load(self) -> Checkpoint | None:
        """The checkpoint of the log's newest commit; marks the tables that are ahead of it."""
        self._tables.clear()
        self.sources.clear()
        self._highest = 0
        if not self._is_delta(self.log_uri):
            self.commit_no, self.last, self._log_ahead = 0, None, {}
            return None
        logt = self._delta(self.log_uri)
        head = read_sink_checkpoint(logt, self.name)
        if head is None:
            if logt.to_pyarrow_table(columns=["commit"]).num_rows:
                raise UsageError(
                    f"the lake log {self.log_uri} has commits but none with sink {self.name!r}'s checkpoint "
                    "(another sink name, or the Delta log's retention removed it): refusing to start over "
                    "on top of the existing tables; remove the lake's tables to start from a snapshot"
                )
            self.commit_no, self.last, self._log_ahead = 0, None, {}
            return None
        self.commit_no, self.last, self._log_ahead = head.number, head.checkpoint, dict(head.ahead)
        for lst in logt.to_pyarrow_table(columns=["tables"]).column("tables").to_pylist():
            self.sources.update(json.loads(lst))
        for source in sorted(self.sources):
            for kind in ("current", "changes"):
                self._table(kind, source)
        return self.last

    def _table(self, kind: str, source: str) -> _Table:
        """The Delta table ``kind`` (current, changes) of ``source``; read whether it is ahead on first use."""
        uri = f"{self.root}/{kind}/{lake_name(source, self.cfg)}"
        t = self._tables.get(uri)
        if t is not None:
            return t
        t = self._tables[uri] = _Table(uri, source)
        t.exists = self._is_delta(uri)
        if t.exists:
            mine = read_sink_checkpoint(self._delta(uri), self.name)
            if mine is not None:
                self._highest = max(self._highest, mine.number)
            if mine is not None and (
                mine.number > self.commit_no or (mine.number == self.commit_no and mine.checkpoint != self.last)
            ):
                t.ahead = mine.checkpoint
            elif uri in self._log_ahead:
                t.ahead = self._log_ahead[uri]
            if t.ahead is not None:
                log.info("lake_table_ahead", table=uri, checkpoint=t.ahead.to_json(), log_commit=self.commit_no)
        return t

    def _props(self, n: int, cp: Checkpoint, ahead: dict[str, Checkpoint] | None = None) -> Any:
        meta = {META_SINK: self.name, META_COMMIT: str(n), META_CHECKPOINT: json.dumps(cp.to_json(), sort_keys=True)}
        if ahead:
            meta[META_AHEAD] = json.dumps({k: v.to_json() for k, v in ahead.items()}, sort_keys=True)
        return self._dl.CommitProperties(custom_metadata=meta)

    # -- the Target protocol ---------------------------------------------------------------------

    def prepare(self, window: Window, schema_of: SchemaOf) -> None:
        """Learn the columns of the schemas ``window`` uses (tables are created and grown by the commits)."""
        for e in window.events:
            if e.fingerprint in self._fingerprints or e.op is Op.TRUNCATE:
                continue
            cols = self.columns.setdefault(e.table, {})
            for c in lake_columns(schema_of(e.fingerprint, e.table)):
                if c.name not in cols or cols[c.name][0] != c.type:
                    cols[c.name] = (c.type, c.convert)
            self._fingerprints.add(e.fingerprint)

    def commit(self, items: Sequence[Window | SnapshotRestarted], checkpoint: Checkpoint) -> int:
        """As :meth:`commit_marked` with a single mark at the end."""
        return self.commit_marked(items, [(len(items), checkpoint)], checkpoint)

    def commit_marked(
        self,
        items: Sequence[Window | SnapshotRestarted],
        marks: Sequence[tuple[int, Checkpoint]],
        checkpoint: Checkpoint,
    ) -> int:
        """Write every touched table (changes, then current; each commit with ``checkpoint``), then the log."""
        touched: list[str] = []
        for item in items:
            for e in item.events:
                if e.table not in touched:
                    touched.append(e.table)
        cleared = any(isinstance(i, SnapshotRestarted) for i in items)
        if cleared:
            touched += sorted(self.sources - set(touched))
        for source in touched:  # open them first: a number a cut-short commit used is never used again
            self._table("changes", source)
            self._table("current", source)
        n = max(self.commit_no, self._highest) + 1
        self._highest = n
        rows = 0
        still_ahead: dict[str, Checkpoint] = {}
        covers = {t.uri: covered_until(t.ahead, items, marks) for t in self._tables.values() if t.ahead is not None}
        for t in self._tables.values():  # a table starting over is written even when no event is its own
            if covers.get(t.uri, Cover(0)).replace and t.source not in touched:
                touched.append(t.source)
        for source in touched:
            for kind in ("changes", "current"):
                t = self._table(kind, source)
                todo: Sequence[Window | SnapshotRestarted] = items
                cover = covers.get(t.uri)
                if cover is not None:
                    todo = items[cover.skip :]
                    if cover.replace:
                        todo = [SnapshotRestarted(0, [], "replay_of_another_snapshot"), *todo]
                    log.info("lake_replay_skipped", table=t.uri, windows=cover.skip, replaced=cover.replace)
                if kind == "changes":
                    rows += self._append_changes(t, source, todo, n, checkpoint)
                else:
                    rows += self._apply_current(t, source, todo, n, checkpoint)
        for t in self._tables.values():  # ahead: passed now (or replaced), or still ahead
            cover = covers.get(t.uri)
            if cover is not None and cover.stays:
                assert t.ahead is not None
                still_ahead[t.uri] = t.ahead
            else:
                t.ahead = None
        log.debug(
            "lake_commit",
            commit=n,
            checkpoint=checkpoint.to_json(),
            items=len(items),
            restarted=cleared,
            covers={u: [c.skip, c.stays, c.replace] for u, c in covers.items()},
        )
        self.sources.update(touched)
        self._commit_log(n, checkpoint, touched, still_ahead)
        self.commit_no, self.last, self._log_ahead = n, checkpoint, still_ahead
        return rows

    # -- writing ---------------------------------------------------------------------------------

    def _schema(self, source: str) -> list[tuple[str, pa.DataType, Convert | None]]:
        return [(k, typ, conv) for k, (typ, conv) in self.columns.get(source, {}).items()]

    def _arrow(self, source: str, head: dict[str, Any], head_types: list[pa.DataType], rows: list[Any]) -> Any:
        """An Arrow table: the ``head`` columns, then the source's columns from ``rows`` (dicts or None)."""
        arrays = [pa.array(v, type=typ) for v, typ in zip(head.values(), head_types, strict=True)]
        names = list(head)
        for name, typ, conv in self._schema(source):
            vals = [None if r is None else r.get(name) for r in rows]
            if conv is not None:
                vals = [None if v is None else conv(v) for v in vals]
            arrays.append(pa.array(vals, type=typ))
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names)

    def _append_changes(
        self, t: _Table, source: str, items: Sequence[Window | SnapshotRestarted], n: int, cp: Checkpoint
    ) -> int:
        events: list[tuple[ChangeEvent, int]] = []
        for item in items:
            if isinstance(item, SnapshotRestarted):  # the copy is replaced: recorded as a truncate
                events.append((_truncate_event(source), 0))
                continue
            i = 0
            for e in item.events:
                if e.table == source:
                    events.append((e, i))
                    i += 1
        if not events:
            return 0
        head = {
            "_headrace_commit": [n] * len(events),
            "_headrace_op": [e.op.value for e, _ in events],
            "_headrace_scn": [e.scn for e, _ in events],
            "_headrace_index": [i for _, i in events],
            "_headrace_ts": [dt.datetime.fromtimestamp(e.ts_ms / 1000, dt.UTC) for e, _ in events],
            KEY_COLUMN: ["" if e.op is Op.TRUNCATE else key_text(e.key) for e, _ in events],
        }
        types = [pa.int64(), pa.string(), pa.int64(), pa.int32(), pa.timestamp("us", tz="UTC"), pa.string()]
        images = [e.before if e.op is Op.DELETE else e.after for e, _ in events]
        data = self._arrow(source, head, types, images)
        self._dl.write_deltalake(
            t.uri,
            data,
            mode="append",
            schema_mode="merge",
            storage_options=self.opts,
            commit_properties=self._props(n, cp),
        )
        t.exists = True
        return len(events)

    def _apply_current(
        self, t: _Table, source: str, items: Sequence[Window | SnapshotRestarted], n: int, cp: Checkpoint
    ) -> int:
        plan = BatchPlan()
        for item in items:
            if isinstance(item, SnapshotRestarted):
                plan.clear()
            else:
                plan.add_window(e for e in item.events if e.table == source)
        if not plan:
            return 0
        table = plan.tables.get(source)
        last = table.last if table is not None else {}
        overwrite = plan.clear_all or (table is not None and table.truncated) or not t.exists
        if overwrite:  # the table is emptied (or new): one overwrite with the rows after the truncate
            live = [(k, r) for k, r in last.items() if r is not None]
            data = self._arrow(source, {KEY_COLUMN: [k for k, _ in live]}, [pa.string()], [r for _, r in live])
            self._dl.write_deltalake(
                t.uri,
                data,
                mode="overwrite",
                schema_mode="merge",
                storage_options=self.opts,
                commit_properties=self._props(n, cp),
            )
            t.exists = True
            return len(live)
        keys = list(last)
        head = {KEY_COLUMN: keys, DELETED: [last[k] is None for k in keys]}
        data = self._arrow(source, head, [pa.string(), pa.bool_()], [last[k] for k in keys])
        cols = [c for c in data.column_names if c != DELETED]
        sets = {c: f"s.`{c}`" for c in cols}
        (
            self._delta(t.uri)
            .merge(
                data,
                f"t.`{KEY_COLUMN}` = s.`{KEY_COLUMN}`",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=self._props(n, cp),
            )
            .when_matched_delete(predicate=f"s.`{DELETED}`")
            .when_matched_update(updates=sets, predicate=f"NOT s.`{DELETED}`")
            .when_not_matched_insert(updates=sets, predicate=f"NOT s.`{DELETED}`")
            .execute()
        )
        return len(keys)

    def _commit_log(self, n: int, cp: Checkpoint, touched: list[str], ahead: dict[str, Checkpoint]) -> None:
        row = pa.table(
            {
                "commit": pa.array([n], pa.int64()),
                "scn": pa.array([cp.scn], pa.int64()),
                "phase": pa.array([cp.phase]),
                "position": pa.array([json.dumps(cp.position, sort_keys=True)]),
                "tables": pa.array([json.dumps(touched)]),
                "committed_at": pa.array([dt.datetime.now(dt.UTC)], pa.timestamp("us", tz="UTC")),
            }
        )
        self._dl.write_deltalake(
            self.log_uri, row, mode="append", storage_options=self.opts, commit_properties=self._props(n, cp, ahead)
        )


def _truncate_event(source: str) -> ChangeEvent:
    return ChangeEvent(0, source, Op.TRUNCATE, [], None, None, 0, True, "", 0)
