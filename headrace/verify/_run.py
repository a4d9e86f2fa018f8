"""``verify``'s orchestration: resolve both sides and their columns, descend, recheck, report."""

from __future__ import annotations

import datetime as dt
import decimal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .._db import create_engine
from .._typemap import column_type_from_sqlalchemy
from ..errors import Unavailable, UsageError
from ._merkle import Outcome, Side, compare_rows, descend
from ._sides import Col, MemorySide, SqlSide, session_setup

__all__ = ["VerifyReport", "verify"]

#: replica columns headrace adds (the sink's key column): never compared
_OWN_PREFIX = "_headrace_"
_SINK_TABLES = "_headrace_sink_tables"
_SINK_CHECKPOINT = "_headrace_sink_checkpoint"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, dt.date | dt.time | dt.datetime):
        return v.isoformat()
    if isinstance(v, decimal.Decimal | uuid.UUID | dt.timedelta):
        return str(v)
    return str(v)


@dataclass
class VerifyReport:
    """The result of one comparison; :meth:`to_json` is what ``--json`` prints."""

    table: str
    replica_table: str
    key: list[str]
    columns: list[str]
    equal: bool
    source_rows: int
    replica_rows: int
    missing: list[dict[str, Any]] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)
    different: list[dict[str, Any]] = field(default_factory=list)
    columns_missing: list[str] = field(default_factory=list)
    columns_extra: list[str] = field(default_factory=list)
    settled: int = 0
    levels: int = 0
    source_stats: dict[str, int] = field(default_factory=dict)
    replica_stats: dict[str, int] = field(default_factory=dict)
    replica_checkpoints: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def round_trips(self) -> int:
        return self.source_stats.get("round_trips", 0) + self.replica_stats.get("round_trips", 0)

    @property
    def rows_fetched(self) -> int:
        return self.source_stats.get("rows", 0) + self.replica_stats.get("rows", 0)

    def repair_plan(self) -> dict[str, list[dict[str, Any]]]:
        """Keys to copy again from the source (missing or different) and keys to delete from the replica."""
        return {"resnapshot": self.missing + self.different, "delete": self.extra}

    def to_json(self) -> dict[str, Any]:
        return {
            "equal": self.equal,
            "table": self.table,
            "replica_table": self.replica_table,
            "key": self.key,
            "columns": self.columns,
            "source_rows": self.source_rows,
            "replica_rows": self.replica_rows,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "columns_missing": self.columns_missing,
            "columns_extra": self.columns_extra,
            "settled_on_recheck": self.settled,
            "repair": self.repair_plan(),
            "levels": self.levels,
            "round_trips": self.round_trips,
            "rows_fetched": self.rows_fetched,
            "source": self.source_stats,
            "replica": self.replica_stats,
            "replica_checkpoints": self.replica_checkpoints,
            "seconds": round(self.seconds, 3),
        }


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _engine(url: str, what: str) -> sa.engine.Engine:
    try:
        engine = create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise UsageError(f"{what}: not a SQLAlchemy URL the installed drivers reach: {exc}") from exc
    session_setup(engine)
    return engine


def _reflect(engine: sa.engine.Engine, name: str, what: str) -> sa.Table:
    schema, table = _split(name)
    try:
        return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=engine)
    except sa.exc.NoSuchTableError as exc:
        raise UsageError(f"{what}: no table {name!r}") from exc
    except sa.exc.OperationalError as exc:
        raise Unavailable(f"{what}: {exc.orig}") from exc


def _kinds(table: sa.Table) -> dict[str, str]:
    return {c.name: column_type_from_sqlalchemy(c.type).kind for c in table.columns}


def _replica_name(engine: sa.engine.Engine, table: str) -> str:
    """The replica table of source ``table``: the sink's registry names it, else the same name."""
    insp = sa.inspect(engine)
    if not insp.has_table(_SINK_TABLES):
        return table
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT source_table, replica_table FROM {_SINK_TABLES}")).all()
    _, bare = _split(table)
    exact = {r[1] for r in rows if r[0] == table}
    loose = {r[1] for r in rows if _split(r[0])[1] == bare}
    found = exact or loose
    if len(found) == 1:
        return str(next(iter(found)))
    return table


def _checkpoints(engine: sa.engine.Engine) -> list[dict[str, Any]]:
    if not sa.inspect(engine).has_table(_SINK_CHECKPOINT):
        return []
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT sink_name, scn, phase, updated_ms FROM {_SINK_CHECKPOINT}")).all()
    return [{"sink": r[0], "scn": int(r[1]), "phase": r[2], "updated_ms": int(r[3])} for r in rows]


def _is_delta(location: str, storage_options: dict[str, str] | None) -> bool:
    """A Delta Lake table (a ``sink lake`` target's ``current/<name>``): a local folder with a
    ``_delta_log``, or an object-store URI (``s3://``, ``gs://``, ``az://`` …) that deltalake opens."""
    if "://" not in location:
        return (Path(location) / "_delta_log").is_dir()
    if not location.startswith(("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "file://")):
        return False
    try:
        import deltalake
    except ImportError as exc:
        raise UsageError("--against: a Delta table needs the deltalake package: pip install 'headrace[lake]'") from exc
    return bool(deltalake.DeltaTable.is_deltatable(location, storage_options=storage_options))


def _export_dir(path: Path, table: str) -> bool:
    return (path / f"table={table}" / "MANIFEST.json").is_file()


@dataclass
class _Plan:
    key: list[Col]
    columns: list[Col]
    missing: list[str]
    extra: list[str]


def _plan(src_kinds: dict[str, str], rep_kinds: dict[str, str], key: Sequence[str], exclude: Sequence[str]) -> _Plan:
    skip = set(exclude)
    for k in key:
        if k not in src_kinds:
            raise UsageError(f"--key: the source table has no column {k!r}")
        if k not in rep_kinds:
            raise UsageError(f"--key: the replica has no column {k!r}")
    src = {n for n in src_kinds if n not in skip and not n.startswith(_OWN_PREFIX)}
    rep = {n for n in rep_kinds if n not in skip and not n.startswith(_OWN_PREFIX)}
    key_cols = [Col(k, src_kinds[k], rep_kinds[k]) for k in key]
    common = sorted(src & rep)
    return _Plan(
        key=key_cols,
        columns=[Col(n, src_kinds[n], rep_kinds[n]) for n in common],
        missing=sorted(src - rep),
        extra=sorted(rep - src),
    )


def verify(
    source: str,
    against: str,
    table: str,
    *,
    against_table: str | None = None,
    key: Sequence[str] = (),
    exclude: Sequence[str] = (),
    leaf_rows: int = 64,
    recheck_seconds: float = 0.0,
    max_keys: int = 10_000,
    token: str | None = None,
    wait: Callable[[float], None] = time.sleep,
    storage_options: dict[str, str] | None = None,
) -> VerifyReport:
    """Compare ``table`` in the database at ``source`` with its copy at ``against``.

    ``against`` is a SQLAlchemy URL (a ``headrace sink`` sql replica, or any copy), a bootstrap
    server's ``http(s)://`` URL (its snapshot; ``token`` for its bearer token), a Delta table (a ``sink
    lake`` target's ``<uri>/current/<name>``, local or ``s3://…`` with ``storage_options``; read whole
    with Arrow and hashed here) or the folder of a ``headrace export`` (Parquet). Raises
    :class:`UsageError` for a bad argument (nothing is changed on either side: every statement is a
    ``SELECT``). With ``recheck_seconds``, the rows of the buckets
    that differed are fetched again after ``wait(recheck_seconds)``, and only keys that still differ
    (and differed before) are reported: a change in flight between source and replica is not a
    difference once the replica applied it.
    """
    started = time.monotonic()
    if leaf_rows < 1:
        raise UsageError("--leaf-rows must be at least 1")
    src_engine = _engine(source, "--source")
    rep_engine: sa.engine.Engine | None = None
    sides: list[Side] = []
    try:
        src_table = _reflect(src_engine, table, "--source")
        src_kinds = _kinds(src_table)
        key = list(key) or [c.name for c in src_table.primary_key.columns]
        if not key:
            raise UsageError(f"--source: table {table!r} has no primary key: name the key columns with --key")
        replica: Side
        checkpoints: list[dict[str, Any]] = []
        if against.startswith(("http://", "https://")):
            from ._sides import bootstrap_rows

            rep_name = against_table or table
            rows, snapshot_scn = bootstrap_rows(against, rep_name, token=token)
            fields = set().union(*(r.keys() for r in rows)) if rows else set(src_kinds)
            plan = _plan(src_kinds, {n: src_kinds.get(n, "string") for n in fields}, key, exclude)
            replica = MemorySide(rows, plan.key, plan.columns)
            checkpoints = [{"bootstrap": against, "snapshot_scn": snapshot_scn}]
        elif _is_delta(against, storage_options):
            import deltalake

            rep_name = against_table or against.rstrip("/").rpartition("/")[2]
            arrow = deltalake.DeltaTable(against, storage_options=storage_options).to_pyarrow_table()
            plan = _plan(src_kinds, {n: src_kinds.get(n, "string") for n in arrow.column_names}, key, exclude)
            replica = MemorySide(arrow.to_pylist(), plan.key, plan.columns)
        elif "://" in against:
            rep_engine = _engine(against, "--against")
            rep_name = against_table or _replica_name(rep_engine, table)
            rep_table = _reflect(rep_engine, rep_name, "--against")
            plan = _plan(src_kinds, _kinds(rep_table), key, exclude)
            replica = SqlSide(rep_engine, rep_table, plan.key, plan.columns)
            sides.append(replica)
            checkpoints = _checkpoints(rep_engine)
        else:
            path = Path(against)
            rep_name = against_table or _split(table)[1]
            if not _export_dir(path, rep_name):
                raise UsageError(
                    f"--against: {against!r} is neither a SQLAlchemy URL nor an export folder holding "
                    f"table={rep_name}/MANIFEST.json"
                )
            from ..batch._export import read_export

            arrow = read_export(str(path), rep_name)
            plan = _plan(src_kinds, {n: src_kinds.get(n, "string") for n in arrow.column_names}, key, exclude)
            replica = MemorySide(arrow.to_pylist(), plan.key, plan.columns)
        src_side = SqlSide(src_engine, src_table, plan.key, plan.columns)
        sides.append(src_side)
        out = descend(src_side, replica, leaf_rows=leaf_rows)
        settled = 0
        if not out.equal and recheck_seconds > 0:
            before = len(out.missing) + len(out.extra) + len(out.different)
            wait(recheck_seconds)
            again = Outcome(source_rows=out.source_rows, replica_rows=out.replica_rows, levels=out.levels)
            compare_rows(src_side.rows(out.leaves, fresh=True), replica.rows(out.leaves, fresh=True), again)
            keep = set(out.missing) | set(out.extra) | set(out.different)
            again.missing = [k for k in again.missing if k in keep]
            again.extra = [k for k in again.extra if k in keep]
            again.different = [k for k in again.different if k in keep]
            again.leaves = out.leaves
            settled = before - (len(again.missing) + len(again.extra) + len(again.different))
            out = again
        names = [c.name for c in plan.key]

        def keys(hashes: list[str]) -> list[dict[str, Any]]:
            return [dict(zip(names, map(_jsonable, out.keys[h]), strict=True)) for h in hashes[:max_keys]]

        return VerifyReport(
            table=table,
            replica_table=rep_name,
            key=names,
            columns=[c.name for c in plan.columns],
            equal=out.equal and not plan.missing and not plan.extra,
            source_rows=out.source_rows,
            replica_rows=out.replica_rows,
            missing=keys(out.missing),
            extra=keys(out.extra),
            different=keys(out.different),
            columns_missing=plan.missing,
            columns_extra=plan.extra,
            settled=settled,
            levels=out.levels,
            source_stats=src_side.stats.to_json(),
            replica_stats=replica.stats.to_json(),
            replica_checkpoints=checkpoints,
            seconds=time.monotonic() - started,
        )
    except sa.exc.OperationalError as exc:
        raise Unavailable(f"verify: {exc.orig}") from exc
    finally:
        for side in sides:
            side.close()
        src_engine.dispose()
        if rep_engine is not None:
            rep_engine.dispose()
