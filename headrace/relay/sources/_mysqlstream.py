"""Row-binlog events → committed transactions of row changes (sans-io).

:class:`BinlogAssembler` is told, in binlog order, about rotations, transaction starts, row events,
DDL and commits (the shell translates ``mysql-replication`` events into these calls). It converts
row images to relay values with the table's columns from ``information_schema`` (an injected
lookup, refreshed after DDL) and collects a transaction's changes in a :class:`SpillBuffer`, which
keeps ``spill_rows`` changes in memory and writes the rest to a temporary file, so a huge
transaction does not sit in memory. :meth:`BinlogAssembler.commit` returns the finished
:class:`BinlogTxn`: its SCN is the packed position *after* its commit event (XID, or ``COMMIT``
for non-transactional tables), which is exactly where a reader resumes to get the next one.

Column names come from the binlog's table-map metadata (``binlog_row_metadata=FULL``), so old
events replayed after an ``ALTER TABLE`` keep the shape they were written with; types come from
``information_schema`` by name (a column that no longer exists there travels as a string).
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from ..._frozen import fast_constructor
from ...errors import UnrepresentableValue
from .._event import Op
from .._schema import Column, ColumnType, TableMeta
from ._base import RowChange
from ._mysqlrows import BinlogColumn
from ._mysqltypes import PASSTHROUGH, MysqlColumn, binlog_only_column, matches_binlog, pack_scn

__all__ = ["BinlogAssembler", "BinlogTxn", "SpillBuffer", "StampedChanges", "TableInfo", "binlog_index"]


#: ``RowChange(scn, table, op, key, before, after, ts_ms)`` without the frozen dataclass's per-field cost
_row_change = fast_constructor(RowChange)
RowConverter = Callable[[dict[str, Any]], tuple[dict[str, Any], tuple[Any, ...]]]


def compile_converter(names: Sequence[str], convs: Sequence[Any], key: Sequence[str]) -> RowConverter:
    """A function converting a row image whose columns are exactly ``names`` (in order) with ``convs``,
    returning ``(row, key)`` — what converting value by value gives: ``None`` stays ``None``, a value
    already of its converter's :data:`~._mysqltypes.PASSTHROUGH` type is kept as it is (the converter
    would return it unchanged), anything else goes through its converter. The caller checks the
    names; an error is the converter's own (the caller then names the column)."""
    where = {n: i for i, n in enumerate(names)}
    env: dict[str, Any] = {}
    lines = ["def convert(values):"]
    if names:
        lines.append(f"    {''.join(f'v{i}, ' for i in range(len(names)))}= values.values()")
    for i, c in enumerate(convs):
        env[f"_c{i}"] = c
        t = PASSTHROUGH.get(c)
        if t is not None:
            env[f"_t{i}"] = t
            lines += [f"    if v{i} is not None and type(v{i}) is not _t{i}:", f"        v{i} = _c{i}(v{i})"]
        else:
            lines += [f"    if v{i} is not None:", f"        v{i} = _c{i}(v{i})"]
    row = ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names))
    keys = "".join(f"v{where[k]}, " for k in key)
    lines.append(f"    return {{{row}}}, ({keys})")
    exec(compile("\n".join(lines), "<headrace binlog row converter>", "exec"), env)
    fn: RowConverter = env["convert"]
    return fn


def _any_text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)


def binlog_index(file_name: str) -> int:
    """``binlog.000042`` → 42."""
    _, dot, suffix = file_name.rpartition(".")
    if not dot or not suffix.isdigit():
        raise ValueError(f"binlog file name {file_name!r} has no numeric suffix")
    return int(suffix)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A table as ``information_schema`` describes it now."""

    name: str
    columns: dict[str, MysqlColumn]
    key: tuple[str, ...]


class SpillBuffer:
    """Append-only list of row changes: the first ``limit`` in memory, the rest pickled to a temp file."""

    def __init__(self, limit: int, directory: str | None = None) -> None:
        self.limit = limit
        self.directory = directory
        self.count = 0
        self._mem: list[Any] = []
        self._file: IO[bytes] | None = None
        self._tables: list[TableMeta] = []
        self._table_ids: dict[int, int] = {}

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def append(self, change: RowChange) -> None:
        """Add ``change`` (its SCN is not kept: :meth:`stamped` gives it)."""
        self.add(change.table, change.op, change.key, change.before, change.after)

    def add(
        self,
        table: TableMeta,
        op: Op,
        key: tuple[Any, ...],
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        """Add a change of ``table`` (its parts: no :class:`RowChange` is built until :meth:`stamped`)."""
        self.count += 1
        if len(self._mem) < self.limit:
            self._mem.append((table, op, key, before, after))
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="headrace-txn-", dir=self.directory)  # noqa: SIM115
        tid = self._table_ids.get(id(table))
        if tid is None:
            tid = self._table_ids[id(table)] = len(self._tables)
            self._tables.append(table)
        pickle.dump((tid, op.value, key, before, after), self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def stamped(self, scn: int) -> Iterator[RowChange]:
        """Every change in order (once), as a :class:`RowChange` of SCN ``scn``; the temp file is closed
        at the end."""
        make = _row_change
        try:
            for table, op, key, before, after in self._mem:
                yield make(scn, table, op, key, before, after, None)
            if self._file is not None:
                self._file.flush()
                self._file.seek(0)
                for _ in range(self.count - len(self._mem)):
                    tid, opv, key, before, after = pickle.load(self._file)
                    yield make(scn, self._tables[tid], Op(opv), key, before, after, None)
        finally:
            self.close()

    def __iter__(self) -> Iterator[RowChange]:
        """Every change in order (once), SCN -1; the temp file is closed at the end."""
        return self.stamped(-1)

    def close(self) -> None:
        self._mem = []
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class BinlogTxn:
    """A committed transaction: SCN (position after its commit), commit time, GTID, its changes."""

    scn: int
    ts_ms: int
    gtid: str | None
    changes: StampedChanges


@dataclass(slots=True)
class BinlogAssembler:
    """Collects row events into transactions; see the module docstring."""

    table_info: Callable[[str], TableInfo | None]
    schema: str
    spill_rows: int = 10000
    spill_dir: str | None = None
    skip_through: int = -1
    file_index: int = 0
    ddl_seen: int = 0
    _buf: SpillBuffer | None = None
    _gtid: str | None = None
    _metas: dict[tuple[str, tuple[str, ...]], tuple[TableMeta, list[Any], Any]] = field(default_factory=dict)
    _converters: dict[int, tuple[list[Any], RowConverter]] = field(default_factory=dict)
    _prepared: dict[str, tuple[SpillBuffer, str | None]] = field(default_factory=dict)

    @property
    def in_transaction(self) -> bool:
        return self._buf is not None

    @property
    def open_rows(self) -> int:
        """Rows buffered for the open transaction."""
        return self._buf.count if self._buf is not None else 0

    def rotate(self, next_file: str) -> None:
        self.file_index = binlog_index(next_file)

    def reset(self) -> None:
        """Forget an open transaction (the stream broke inside it)."""
        if self._buf is not None:
            self._buf.close()
        self._buf = None
        self._gtid = None

    def begin(self, gtid: str | None = None) -> None:
        if self._buf is not None:  # a GTID event followed by BEGIN: one transaction
            if gtid is not None:
                self._gtid = gtid
            return
        self._buf = SpillBuffer(self.spill_rows, self.spill_dir)
        self._gtid = gtid

    def ddl(self) -> None:
        """A statement that may change tables ran: reload their columns on next use."""
        self.ddl_seen += 1
        self._metas.clear()
        self._converters.clear()
        self.reset()

    def _meta(
        self, table: str, names: tuple[str, ...], bcols: Sequence[BinlogColumn] | None
    ) -> tuple[TableMeta, list[Any]]:
        cached = self._metas.get((table, names))
        if cached is not None and cached[2] is bcols:
            return cached[0], cached[1]
        info = self.table_info(table)
        by_name = {c.name: c for c in bcols} if bcols is not None else {}
        cols: list[Column] = []
        convs: list[Any] = []
        for n in names:
            mc = info.columns.get(n) if info is not None else None
            bc = by_name.get(n)
            if bc is not None and (mc is None or (mc.row is not None and not matches_binlog(mc.row, bc))):
                # the column is gone or changed type since the event was written: the event's own type
                mc = binlog_only_column(bc)
            if mc is None:
                cols.append(Column(n, ColumnType("string"), True))
                convs.append(_any_text)
            else:
                cols.append(mc.column)
                convs.append(mc.convert)
        key = tuple(k for k in (info.key if info else ()) if k in names)
        meta = TableMeta(name=table, columns=tuple(cols), key=key)
        self._metas[(table, names)] = (meta, convs, bcols)
        return meta, convs

    def _convert(
        self, table: str, values: dict[str, Any], bcols: Sequence[BinlogColumn] | None
    ) -> tuple[TableMeta, dict[str, Any]]:
        names = tuple(values)
        meta, convs = self._meta(table, names, bcols)
        try:
            row = {n: (None if v is None else c(v)) for (n, v), c in zip(values.items(), convs, strict=True)}
        except (ValueError, TypeError, ArithmeticError):
            for (n, v), c in zip(values.items(), convs, strict=True):  # name the column
                try:
                    if v is not None:
                        c(v)
                except (ValueError, TypeError, ArithmeticError) as exc:
                    raise UnrepresentableValue(table, n, f"{type(v).__name__} {v!r:.200}: {exc}") from exc
            raise
        return meta, row

    def _converter(self, meta: TableMeta, convs: list[Any]) -> RowConverter:
        """The compiled converter of rows of ``meta``'s columns with ``convs`` (see :func:`compile_converter`)."""
        entry = self._converters.get(id(convs))
        if entry is None or entry[0] is not convs:  # the list is kept in the entry, so its id stays its own
            if len(self._converters) > 4096:
                self._converters.clear()
            names = [c.name for c in meta.columns]
            entry = self._converters[id(convs)] = (convs, compile_converter(names, convs, meta.key))
        return entry[1]

    def rows(
        self, op: Op, table: str, rows: list[dict[str, Any]], columns: Sequence[BinlogColumn] | None = None
    ) -> None:
        """One row event's rows (``values``, or ``before_values``/``after_values`` for updates).

        ``columns`` are the event's table-map columns (:func:`._mysqlrows.binlog_column`); pass the same
        list object for the same table shape, so the converted table metadata is reused.

        The rows of one event are images of the same columns (one columns-present bitmap per event),
        so they share their names: they are converted with one metadata lookup and the shape's compiled
        converter; a row that does not share them, or whose conversion fails, goes value by value
        (:meth:`_convert`, which names the column of an error).
        """
        if self._buf is None:
            self.begin()
        assert self._buf is not None
        if not rows:
            return
        add = self._buf.add
        update = op is Op.UPDATE
        names = tuple(rows[0]["after_values" if update else "values"])
        meta, convs = self._meta(table, names, columns)
        convert = self._converter(meta, convs)
        for r in rows:
            if update:
                bv, av = r["before_values"], r["after_values"]
                if tuple(bv) == names and tuple(av) == names:
                    try:
                        before, _ = convert(bv)
                        after, key = convert(av)
                    except (ValueError, TypeError, ArithmeticError):
                        pass
                    else:
                        add(meta, op, key, before, after)
                        continue
                m, before = self._convert(table, bv, columns)
                _, after = self._convert(table, av, columns)
                add(m, op, tuple([after[k] for k in m.key]), before, after)
                continue
            values = r["values"]
            if tuple(values) == names:
                try:
                    row, key = convert(values)
                except (ValueError, TypeError, ArithmeticError):
                    pass
                else:
                    if op is Op.INSERT:
                        add(meta, op, key, None, row)
                    else:
                        add(meta, op, key, row, None)
                    continue
            m, row = self._convert(table, values, columns)
            key = tuple([row[k] for k in m.key])
            if op is Op.INSERT:
                add(m, op, key, None, row)
            else:
                add(m, op, key, row, None)

    def xa_prepare(self, xid: str) -> None:
        """``XA PREPARE``: the open transaction waits, under its XID, for ``XA COMMIT``/``XA ROLLBACK``."""
        if self._buf is not None:
            old = self._prepared.pop(xid, None)
            if old is not None:
                old[0].close()
            self._prepared[xid] = (self._buf, self._gtid)
        self._buf, self._gtid = None, None

    def xa_commit(self, xid: str, end_position: int, timestamp: int) -> BinlogTxn | None:
        """``XA COMMIT`` of a prepared transaction (its own event group): delivered at this position."""
        commit_gtid = self._gtid
        if self._buf is not None:  # the commit's own group (GTID, query) holds no rows
            self._buf.close()
        self._buf, gtid = self._prepared.pop(xid, (None, None))
        self._gtid = commit_gtid or gtid
        return self.commit(end_position, timestamp)

    def xa_rollback(self, xid: str) -> None:
        """``XA ROLLBACK`` of a prepared transaction: its rows never happened."""
        old = self._prepared.pop(xid, None)
        if old is not None:
            old[0].close()
        self.reset()

    def commit(self, end_position: int, timestamp: int) -> BinlogTxn | None:
        """The commit event ending at ``end_position``; returns the transaction unless already delivered."""
        buf, gtid = self._buf, self._gtid
        self._buf, self._gtid = None, None
        scn = pack_scn(self.file_index, end_position)
        if buf is None:
            return None
        if scn <= self.skip_through or buf.count == 0:
            buf.close()
            return None
        self.skip_through = scn
        return BinlogTxn(scn, timestamp * 1000, gtid, StampedChanges(buf, scn))


class StampedChanges:
    """A transaction's buffered changes (SCN -1 until the commit position was known), stamped on the way out."""

    __slots__ = ("buf", "count", "scn")

    def __init__(self, buf: SpillBuffer, scn: int) -> None:
        self.buf = buf
        self.scn = scn
        self.count = buf.count

    def __iter__(self) -> Iterator[RowChange]:
        return self.buf.stamped(self.scn)

    def close(self) -> None:
        self.buf.close()
