"""SQLite change source: a change-log table filled by triggers, polled by the relay.

Theory of operation
-------------------
``open()`` installs, idempotently, in the source database:

* ``headrace_changes(scn INTEGER PRIMARY KEY AUTOINCREMENT, tbl, op, ts_ms, before, after)`` — one
  row per row change, with the before/after images as JSON objects. ``AUTOINCREMENT`` keeps row ids
  from ever being reused, so the SCN (= the row id) only grows, even after pruning.
* ``headrace_marks(scn)`` — SCNs known to end a transaction (written by the relay, see below).
* ``headrace_state(k, v)`` — ``pruned_scn``: everything ≤ it has been deleted.
* ``headrace_reals(scn, side, col, v)`` — the exact value of each REAL in a change (``side`` ``b`` or
  ``a``): no text form SQLite prints is exact for every double, a REAL stored as a REAL is.
* ``headrace_tables(tbl, since_scn, meta)`` — each shape (:class:`TableMeta` as JSON) a captured table
  has had, recorded in the transaction that (re)creates its triggers: change-log rows after
  ``since_scn`` (and up to the next shape's) were written by triggers of that shape.
* per captured table, triggers ``headrace_<table>_{ai,au,ad}`` (AFTER INSERT/UPDATE/DELETE) that
  insert into ``headrace_changes`` (and the row's REALs into ``headrace_reals``). BLOB values are
  written as ``["x", "HEX"]`` so JSON can carry them, REAL values as ``["r", "%!.17g text"]``. A trigger
  whose SQL differs from what the table's current columns need is dropped and re-created.

SQLite serializes writers: a transaction's change-log rows get consecutive row ids and become
visible all at once, at commit, so a read snapshot always ends on a transaction boundary. SQLite
has no transaction id a trigger could record, so the relay *cuts* the log instead: every
``sqlite.poll_ms`` a cutter thread reads the newest change-log row id in a fresh snapshot; that row
ends a committed transaction. The reader serves the rows between consecutive cuts as one window:
never part of a transaction, at most the transactions committed within one cut interval (one
transaction under light load), however far behind the reader is. Reading only up to a cut also
answers "is it committed and complete": a cut is only ever taken from committed rows. The reader
uses only the boundaries its own read snapshot can see (a cut may come from a newer snapshot than
the reader's), and adds its snapshot's newest row as a boundary of its own, since writers are
serialized and row ids follow commit order. In WAL mode
the cutter and the reader never wait for writers (in rollback-journal mode they take brief shared
locks; WAL is recommended).

The window ends served are saved in ``headrace_marks`` (about once a second, giving way to the
application's writers), so a restarted relay, or a second relay on the same file, re-reads the
same windows; changes committed while no relay ran form one window per cut of the first poll.

Schema changes: ``PRAGMA schema_version`` is checked on every poll; when it moves, the captured
tables are reflected again, triggers whose column lists changed are re-created, and new
:class:`TableMeta` objects (so new schema versions) are recorded and used for the rows the new
triggers write. Every change-log row is decoded with the shape recorded for it in
``headrace_tables`` (so changes of a table dropped since are still delivered); one that carries only
some of those columns is encoded with the schema of exactly those columns.

Values: SQLite lets any column hold any value. A stored value that is a value of the column's kind
becomes that Python value; any other travels as its text (``value_text``) in the column's
text-fallback branch, with a warning. See docs/type-mapping.md.

Resume-state contract: the change log itself is the state (``headrace_changes`` with its
``headrace_reals``, and the shapes in ``headrace_tables``). ``read(after_scn)`` re-reads every change
with SCN > ``after_scn``; nothing is kept in the relay process. Pruning deletes changes (and their
REALs) ≤ the newest mark that is ≤ min(acknowledged durable SCN, last SCN read) and older than
``sqlite.retention_seconds``; ``pruned_scn`` is updated in the same transaction. Shapes are kept.
Saving marks and pruning are the relay's only writes; both give way to the application's writers.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._frozen import fast_constructor
from ..._logging import get_logger
from ...errors import ConfigError, TransientError, UsageError
from .._event import Op
from .._schema import Column, ColumnType, TableMeta, table_meta_from_sqlalchemy
from ._base import ChangeSource, ChangeWindow, RowChange

if TYPE_CHECKING:
    from .._config import RelayConfig

__all__ = [
    "CHANGES_TABLE",
    "SqliteSource",
    "meta_from_json",
    "meta_to_json",
    "sqlite_column",
    "sqlite_path",
    "text_or_bytes",
    "trigger_sql",
    "value_text",
]

log = get_logger("relay.sqlite")

CHANGES_TABLE = "headrace_changes"
MARKS_TABLE = "headrace_marks"
STATE_TABLE = "headrace_state"
REALS_TABLE = "headrace_reals"
TABLES_TABLE = "headrace_tables"
ROWID_COLUMN = "__rowid__"
_PREFIX = "headrace_"
HOUSEKEEPING_BUSY_MS = 50
MARKS_PER_POLL = 256
MARKS_SAVE_SECONDS = 1.0
POLL_ROWS = 20_000
PAGE_ROWS = 100
LARGE_WINDOW_ROWS = 50_000
_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_OPS = {"c": Op.INSERT, "u": Op.UPDATE, "d": Op.DELETE}
#: ``RowChange(scn, table, op, key, before, after, ts_ms)`` without the frozen dataclass's per-field cost
_row_change = fast_constructor(RowChange)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.drivername.startswith("sqlite") or not u.database or u.database == ":memory:":
        raise ConfigError([f"relay.source: {url!r} is not a SQLite file URL (sqlite:////abs/path.db)"])
    return u.database


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _image(meta: TableMeta, ref: str) -> str:
    args = []
    for c in meta.columns:
        if c.name == ROWID_COLUMN:
            args.append(f"{_lit(c.name)}, {ref}.rowid")
            continue
        v = f"{ref}.{_q(c.name)}"
        args.append(
            f"{_lit(c.name)}, CASE typeof({v}) WHEN 'blob' THEN json_array('x', hex({v})) "
            f"WHEN 'real' THEN json_array('r', printf('%!.17g', {v})) ELSE {v} END"
        )
    return f"json_object({', '.join(args)})"


def _real_columns(meta: TableMeta) -> list[str]:
    return [c.name for c in meta.columns if c.name != ROWID_COLUMN]


def _reals(meta: TableMeta, sides: tuple[tuple[str, str], ...]) -> str:
    """The statement copying the REAL values of a change into ``headrace_reals``."""
    parts = [
        f"SELECT {_lit(side)} AS s, {_lit(name)} AS c, {ref}.{_q(name)} AS v"
        for side, ref in sides
        for name in _real_columns(meta)
    ]
    return (
        f" INSERT INTO {REALS_TABLE}(scn, side, col, v) SELECT (SELECT max(scn) FROM {CHANGES_TABLE}), s, c, v "
        f"FROM ({' UNION ALL '.join(parts)}) WHERE typeof(v) = 'real';"
    )


def trigger_sql(meta: TableMeta) -> dict[str, str]:
    """The three trigger statements for ``meta`` by trigger name."""
    t = meta.name
    ins = f"INSERT INTO {CHANGES_TABLE}(tbl, op, ts_ms, before, after) VALUES ({_lit(t)}, "
    new, old = _image(meta, "NEW"), _image(meta, "OLD")
    ops = {
        "ai": ("INSERT", f"{ins}'c', {_NOW_MS}, NULL, {new})", (("a", "NEW"),)),
        "au": ("UPDATE", f"{ins}'u', {_NOW_MS}, {old}, {new})", (("b", "OLD"), ("a", "NEW"))),
        "ad": ("DELETE", f"{ins}'d', {_NOW_MS}, {old}, NULL)", (("b", "OLD"),)),
    }
    return {
        f"{_PREFIX}{t}_{suffix}": f"CREATE TRIGGER {_q(f'{_PREFIX}{t}_{suffix}')} AFTER {event} ON {_q(t)} "
        f"FOR EACH ROW BEGIN {stmt};{_reals(meta, sides) if _real_columns(meta) else ''} END"
        for suffix, (event, stmt, sides) in ops.items()
    }


def _unwrap(v: Any) -> Any:
    """Undo the triggers' wrapping: ``["x", HEX]`` is a BLOB, ``["r", TEXT]`` a REAL (whose exact value
    ``headrace_reals`` gives; the text is for rows logged before it existed)."""
    if isinstance(v, list) and len(v) == 2:
        if v[0] == "x":
            return bytes.fromhex(v[1])
        if v[0] == "r":
            return float(v[1])
    return v


class _NoFit(Exception):
    """The stored value is not a value of the column's kind: it travels as its text."""


def value_text(v: Any) -> str:
    """A SQLite value's text, lossless: TEXT as it is, INTEGER in decimal, REAL as the shortest text that
    reads back as the same double (``repr``; SQLite's own ``CAST(… AS TEXT)`` keeps 15 digits), BLOB as
    SQLite's literal ``X'HEX'``."""
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return "X'" + v.hex().upper() + "'"
    return repr(v) if isinstance(v, float) else str(v)


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_RE = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?")
_TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?")
_TSTZ_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_NUMBER_RE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[Ii]nf(?:inity)?)")
_BIG = decimal.Context(prec=100_000, traps=[decimal.InvalidOperation])


def _int_kind(lo: int, hi: int) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if type(v) is int and lo <= v <= hi:
            return v
        raise _NoFit

    return conv


def _double(v: Any) -> float:
    if isinstance(v, float):
        return v
    if type(v) is int and float(v) == v and int(float(v)) == v:
        return float(v)
    raise _NoFit


def _boolean(v: Any) -> bool:
    if type(v) is int and v in (0, 1):
        return v == 1
    raise _NoFit


def _number(v: Any) -> decimal.Decimal:
    """A stored number (or number text) as an exact Decimal (a REAL: its shortest text)."""
    if type(v) is int:
        return decimal.Decimal(v)
    if isinstance(v, float):
        return decimal.Decimal(repr(v))
    if isinstance(v, str) and _NUMBER_RE.fullmatch(v):
        return decimal.Decimal(v)
    raise _NoFit


def _decimal_kind(t: ColumnType) -> Callable[[Any], Any]:
    if t.precision is None or t.scale is None:
        return _number
    p, sc = t.precision, t.scale
    q = decimal.Decimal(1).scaleb(-sc)

    def fixed(v: Any) -> Any:
        d = _number(v)
        if d.is_finite() and (d.is_zero() or d.adjusted() < p - sc):
            exact = d.quantize(q, context=_BIG)
            if exact == d and len(exact.as_tuple().digits) <= p:
                return exact
        # more digits than NUMERIC(p,s) declares (SQLite does not enforce it), or ±Infinity: the exact
        # text, which the client reads back as Decimal(text)
        return str(d) if d.is_infinite() else value_text(v)

    return fixed


def _text_only(kind: Callable[[str], Any], pattern: re.Pattern[str]) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, str) and pattern.fullmatch(v):
            try:
                return kind(v)
            except ValueError:
                pass  # e.g. 2024-02-30
        raise _NoFit

    return conv


def _timestamp(v: str) -> dt.datetime:
    return dt.datetime.fromisoformat(v)


def _timestamptz(v: str) -> dt.datetime:
    d = dt.datetime.fromisoformat(v)
    return d.replace(tzinfo=dt.UTC) if d.tzinfo is None else d.astimezone(dt.UTC)


def _uuid(v: Any) -> uuid.UUID:
    try:
        if isinstance(v, bytes) and len(v) == 16:
            return uuid.UUID(bytes=v)
        if isinstance(v, str):
            return uuid.UUID(v)
    except ValueError:
        pass
    raise _NoFit


def _json_text(v: Any) -> str:
    """JSON column: the JSON text as stored (an INTEGER or REAL: the number's text, since SQLite's
    NUMERIC affinity stores ``5`` as a number)."""
    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError:
            raise _NoFit from None
        return v
    if type(v) is int:
        return str(v)
    if isinstance(v, float):
        return json.dumps(v)  # Infinity as Python's JSON spells it
    raise _NoFit


def _string(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise _NoFit


def _bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    raise _NoFit


_KIND_CONV: dict[str, Callable[[Any], Any]] = {
    "int": _int_kind(*_INT32),
    "long": _int_kind(*_INT64),
    "float": _double,
    "double": _double,
    "boolean": _boolean,
    "bytes": _bytes,
    "date": _text_only(dt.date.fromisoformat, _DATE_RE),
    "time": _text_only(dt.time.fromisoformat, _TIME_RE),
    "timestamp": _text_only(_timestamp, _TS_RE),
    "timestamptz": _text_only(_timestamptz, _TSTZ_RE),
    "uuid": _uuid,
    "json": _json_text,
    "string": _string,
    "enum": _string,
}


def _conv(t: ColumnType) -> Callable[[Any], Any]:
    """Stored value (unwrapped) → the Python value of the column's kind; raises _NoFit if it is not one."""
    if t.kind == "decimal":
        return _decimal_kind(t)
    return _KIND_CONV.get(t.kind, value_text)


def _no_fit(t: ColumnType) -> Callable[[Any], Any]:
    """What a value that is not one of the kind's travels as."""
    if t.kind == "json":
        return lambda v: json.dumps(value_text(v), ensure_ascii=False)  # a JSON string holding the text
    return value_text


def sqlite_column(c: Column) -> Column:
    """A reflected column as the SQLite source describes it: SQLite lets any column hold any value, so
    every column has a text fallback (a value that is not one of its kind travels as its text; a
    decimal's text branch also carries numbers NUMERIC(p,s) cannot, since SQLite does not enforce p, s)."""
    if c.name == ROWID_COLUMN:
        return c
    return Column(c.name, dataclasses.replace(c.type, text_fallback=True), c.nullable)


#: kinds whose Python value is the stored value itself, when it has this exact type
_NATIVE: dict[str, type] = {"long": int, "string": str, "enum": str, "double": float, "float": float}


# images as bytes: SQLite does not check that TEXT is UTF-8, and a str fetch of such text would fail
_IMAGES = "CAST(before AS BLOB), CAST(after AS BLOB)"


def text_or_bytes(raw: bytes) -> str | bytes:
    """A ``sqlite3`` ``text_factory``: TEXT as ``str``, or as its bytes when it is not UTF-8 (as the
    change log delivers it), instead of failing the fetch."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _load_image(raw: bytes) -> dict[str, Any]:
    """A change-log image; TEXT values that are not UTF-8 come back as their bytes."""
    # (json.loads(bytes) lets UTF-8-encoded surrogates, ED A0..BF .., through: those take the slow path)
    if b"\xed" not in raw:
        try:
            image: dict[str, Any] = json.loads(raw)
            return image
        except UnicodeDecodeError:
            pass
    image = json.loads(raw.decode("utf-8", "surrogateescape"))
    for k, v in image.items():
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                image[k] = v.encode("utf-8", "surrogateescape")
    return image


def _load_images(raws: list[bytes | None]) -> list[dict[str, Any] | None]:
    """:func:`_load_image` of each of ``raws`` (None stays None), parsed as one JSON array when every
    image allows it: one parser call per page instead of one per image."""
    present = [r for r in raws if r is not None]
    joined = b",".join(present)
    if present and b"\xed" not in joined:
        try:
            parsed: list[dict[str, Any]] = json.loads(b"[" + joined + b"]")
        except (UnicodeDecodeError, ValueError):
            pass
        else:
            if len(parsed) == len(present) and all(type(i) is dict for i in parsed):
                it = iter(parsed)
                return [None if r is None else next(it) for r in raws]
    return [None if r is None else _load_image(r) for r in raws]


def _read_reals(conn: sqlite3.Connection, lo: int, hi: int) -> list[tuple[int, str, str, float]]:
    """The exact REAL values of changes ``lo < scn <= hi``: ``(scn, side, column, value)`` in SCN order."""
    return conn.execute(
        f"SELECT scn, side, col, v FROM {REALS_TABLE} WHERE scn > ? AND scn <= ? ORDER BY scn", (lo, hi)
    ).fetchall()


def _type_to_dict(t: ColumnType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(t):
        v = getattr(t, f.name)
        if v == f.default:
            continue
        out[f.name] = _type_to_dict(v) if isinstance(v, ColumnType) else list(v) if isinstance(v, tuple) else v
    return out


def _type_from_dict(d: dict[str, Any]) -> ColumnType:
    names = {f.name for f in dataclasses.fields(ColumnType)}
    kw = {k: v for k, v in d.items() if k in names}
    if kw.get("items") is not None:
        kw["items"] = _type_from_dict(kw["items"])
    if "symbols" in kw:
        kw["symbols"] = tuple(kw["symbols"])
    return ColumnType(**kw)


def meta_to_json(meta: TableMeta) -> str:
    """A :class:`TableMeta` as JSON (as ``headrace_tables`` keeps it)."""
    return json.dumps(
        {
            "name": meta.name,
            "namespace": meta.namespace,
            "key": list(meta.key),
            "columns": [{"name": c.name, "type": _type_to_dict(c.type), "nullable": c.nullable} for c in meta.columns],
        },
        sort_keys=True,
    )


def meta_from_json(text: str) -> TableMeta:
    """The :class:`TableMeta` of :func:`meta_to_json`'s text."""
    d = json.loads(text)
    cols = tuple(Column(c["name"], _type_from_dict(c["type"]), bool(c["nullable"])) for c in d["columns"])
    return TableMeta(d["name"], cols, tuple(d["key"]), d["namespace"])


def _guess_meta(tbl: str, image: dict[str, Any]) -> TableMeta:
    """A last-resort shape from a change's own image: every column nullable text (values as text)."""
    cols = tuple(Column(name, ColumnType("string"), name != ROWID_COLUMN) for name in image)
    key = (ROWID_COLUMN,) if ROWID_COLUMN in image else ()
    if key:
        cols = tuple(Column(c.name, ColumnType("long"), False) if c.name == ROWID_COLUMN else c for c in cols)
    return TableMeta(tbl, cols, key)


_DECL_OVERRIDES = {"UUID": ColumnType("uuid"), "TIMESTAMPTZ": ColumnType("timestamptz")}
#: declared types that mean a decimal (SQLAlchemy maps every unknown type to NUMERIC, by affinity)
_NUMERIC_NAMES = frozenset({"NUMERIC", "DECIMAL"})


class _Table:
    """A captured table: its current metadata, converters, and projections for older images."""

    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta
        self.convs = {c.name: _conv(c.type) for c in meta.columns}
        self.no_fit = {c.name: _no_fit(c.type) for c in meta.columns}
        self.warned: set[tuple[str, type]] = set()
        self.natives = {c.name: _NATIVE[c.type.kind] for c in meta.columns if c.type.kind in _NATIVE}
        self._projections: dict[frozenset[str], TableMeta] = {}
        self.names = frozenset(c.name for c in meta.columns)
        self.order = tuple(c.name for c in meta.columns)
        self._whole: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def meta_for(self, image: dict[str, Any]) -> TableMeta:
        if image.keys() == self.names:
            return self.meta
        image_keys = frozenset(image)
        m = self._projections.get(image_keys)
        if m is None:
            cols = tuple(c for c in self.meta.columns if c.name in image_keys)
            m = self._projections[image_keys] = TableMeta(self.meta.name, cols, self.meta.key, self.meta.namespace)
        return m

    def convert(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The delivered values of a stored image (any subset of the columns, in any order)."""
        if tuple(raw) == self.order:  # the image of every column, as the triggers write it
            whole = self._whole
            if whole is None:
                whole = self._whole = self._compile_whole()
            return whole(raw)
        return self.convert_each(raw)

    def convert_each(self, raw: dict[str, Any]) -> dict[str, Any]:
        """:meth:`convert` value by value (the general path, and the reference of the compiled one)."""
        out = {}
        natives = self.natives
        for name, v in raw.items():
            if name not in self.convs:
                continue  # a column dropped since the row was captured
            # fast path: the stored value already has the kind's Python type (int for long, str for text)
            out[name] = v if v is None or type(v) is natives.get(name) else self.value(name, v)
        return out

    def _compile_whole(self) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """:meth:`convert` of an image of exactly :attr:`order`'s columns, as one generated function:
        a value that is None or of its kind's native type is kept inline, any other goes through
        :meth:`value` (the same as the general loop)."""
        env: dict[str, Any] = {"_value": self.value}
        lines = ["def convert(raw):"]
        if self.order:
            lines.append(f"    {''.join(f'v{i}, ' for i in range(len(self.order)))}= raw.values()")
        for i, name in enumerate(self.order):
            env[f"_n{i}"] = name
            t = self.natives.get(name)
            if t is not None:
                env[f"_t{i}"] = t
                lines += [
                    f"    if v{i} is not None and type(v{i}) is not _t{i}:",
                    f"        v{i} = _value(_n{i}, v{i})",
                ]
            else:
                lines += [f"    if v{i} is not None:", f"        v{i} = _value(_n{i}, v{i})"]
        row = ", ".join(f"{n!r}: v{i}" for i, n in enumerate(self.order))
        lines.append(f"    return {{{row}}}")
        exec(compile("\n".join(lines), "<headrace sqlite image>", "exec"), env)
        fn: Callable[[dict[str, Any]], dict[str, Any]] = env["convert"]
        return fn

    def value(self, name: str, v: Any) -> Any:
        """The delivered value of column ``name``'s stored value ``v`` (not None, not of the native type)."""
        if type(v) is list:
            v = _unwrap(v)
        try:
            return self.convs[name](v)
        except _NoFit:
            pass
        except Exception as exc:  # a bug here must not stop capture: the value still travels, as text
            log.warning("value_conversion_failed", table=self.meta.name, column=name, error=repr(exc))
        # SQLite lets any column hold any value: one that is not a value of the column's kind
        # (say 'abc' in an INTEGER column) travels as its text (docs/type-mapping.md)
        out = self.no_fit[name](v)
        if (name, type(v)) not in self.warned:
            self.warned.add((name, type(v)))
            log.warning(
                "value_does_not_fit_column",
                table=self.meta.name,
                column=name,
                stored_type=type(v).__name__,
                delivered="null" if out is None else "text",
            )
        return out


class _WindowChanges:
    """The changes of one window of a poll (rows ``i`` to ``j - 1``), converted when iterated."""

    __slots__ = ("_i", "_j", "_pages")

    def __init__(self, pages: _Pages, i: int, j: int) -> None:
        self._pages, self._i, self._j = pages, i, j

    def __iter__(self) -> Iterator[RowChange]:
        return self._pages.changes(self._i, self._j)

    def __len__(self) -> int:
        return self._j - self._i


class _Pages:
    """The changes of one poll's change-log rows, converted a page at a time as their windows are read.

    Converting a whole poll up front kept every change of it alive until the last was encoded: up
    to ``POLL_ROWS`` (or a whole backlog window) of row images the garbage collector traversed again
    and again. A page (:data:`PAGE_ROWS` rows, one JSON parse) is converted when a window first
    needs it, so a change lives only until it is encoded. The windows are read in order, each once
    (the :class:`ChangeWindow` contract), so pages are normally only needed going forward; going
    back converts the page again.
    """

    __slots__ = ("_page", "_real_scns", "_reals", "_rows", "_source", "_start")

    def __init__(self, source: SqliteSource, rows: list[Any], reals: list[tuple[int, str, str, float]]) -> None:
        self._source = source
        self._rows = rows
        self._reals = reals
        self._real_scns = [r[0] for r in reals]
        self._start = 0
        self._page: list[RowChange] = []

    def changes(self, i: int, j: int) -> Iterator[RowChange]:
        """The changes of rows ``i`` to ``j - 1``."""
        while i < j:
            if not self._start <= i < self._start + len(self._page):
                self._convert(i)
            page, start = self._page, self._start
            stop = min(j, start + len(page))
            yield from page[i - start : stop - start]
            i = stop

    def _convert(self, i: int) -> None:
        rows = self._rows[i : i + PAGE_ROWS]
        lo = bisect.bisect_left(self._real_scns, rows[0][0])
        hi = bisect.bisect_right(self._real_scns, rows[-1][0])
        self._page = []  # the previous page's changes are not needed any more
        try:
            self._page = self._source._changes(rows, self._reals[lo:hi])
        except sqlite3.Error as exc:  # a shape looked up in the database (a table not captured now)
            self._source._drop_conn()
            raise TransientError(f"reading the change log of {self._source.path} failed: {exc}") from exc
        self._start = i


class SqliteSource(ChangeSource):
    """Capture changes of a SQLite file with triggers (see the module docstring)."""

    kind = "sqlite"

    def __init__(self, config: RelayConfig) -> None:
        self.path = sqlite_path(config.source)
        self.wanted: list[str] | None = list(config.tables) if config.tables is not None else None
        opts = config.sqlite
        self.poll_seconds = opts.poll_ms / 1000.0
        self.retention_ms = None if opts.retention_seconds is None else int(opts.retention_seconds * 1000)
        self.prune_interval = opts.prune_interval_seconds
        self._conn: sqlite3.Connection | None = None
        self._engine: Any = None
        self._tables: dict[str, _Table] = {}
        # each table's shapes, oldest first, with the change-log SCN after which each one applies
        self._history: dict[str, list[tuple[int, _Table]]] = {}
        self._guessed: dict[str, _Table] = {}
        self._by_meta: dict[TableMeta, _Table] = {}
        self._schema_version = -1
        self._wake = threading.Event()
        self._cuts: list[int] = []  # transaction boundaries seen by the cutter, not yet read
        self._cuts_lock = threading.Lock()
        self._unsaved: list[int] = []  # window ends served but not yet in headrace_marks
        self._last_save = 0.0
        self._last_prune = 0.0
        self._durable: int | None = None
        self._acknowledged = False
        self._last_read = 0
        self.lock = threading.Lock()

    # -- connection and installation -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if not Path(self.path).exists():
            raise UsageError(f"relay.source: the SQLite file {self.path} does not exist")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA busy_timeout = 30000")
        except sqlite3.Error as exc:
            raise TransientError(f"cannot open {self.path}: {exc}") from exc
        return conn

    def preflight(self) -> None:
        """The file exists and is a SQLite database (opened read-only: nothing is installed)."""
        if not Path(self.path).exists():
            raise UsageError(f"relay.source: the SQLite file {self.path} does not exist")
        try:
            uri = Path(self.path).absolute().as_uri() + "?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise UsageError(f"relay.source: {self.path} is not a readable SQLite database: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def open(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            began = bool(c.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (CHANGES_TABLE,)).fetchall())
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (scn INTEGER PRIMARY KEY AUTOINCREMENT, "
                "tbl TEXT NOT NULL, op TEXT NOT NULL, ts_ms INTEGER NOT NULL, before TEXT, after TEXT)"
            )
            c.execute(f"CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (scn INTEGER PRIMARY KEY)")
            c.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (k TEXT PRIMARY KEY, v)")
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {REALS_TABLE} (scn INTEGER NOT NULL, side TEXT NOT NULL, "
                "col TEXT NOT NULL, v, PRIMARY KEY (scn, side, col)) WITHOUT ROWID"
            )
            c.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLES_TABLE} (tbl TEXT NOT NULL, since_scn INTEGER NOT NULL, "
                "meta TEXT NOT NULL, PRIMARY KEY (tbl, since_scn))"
            )
            self._refresh_locked(capture_began=began)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _table_names(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            f"AND name NOT LIKE '{_PREFIX}%' ORDER BY name"
        ).fetchall()
        existing = [r[0] for r in rows]
        if self.wanted is None:
            return existing
        missing = [t for t in self.wanted if t not in existing]
        if missing:
            raise ConfigError([f"relay.tables: no table {t!r} in {self.path}" for t in missing])
        return list(self.wanted)

    def _reflect(self, name: str) -> TableMeta:
        import sqlalchemy as sa

        if self._engine is None:
            # a connection of its own: the pool's reset-on-return would end our write transaction
            path = self.path
            self._engine = sa.create_engine(
                "sqlite://", creator=lambda: sqlite3.connect(path, timeout=30.0), poolclass=sa.pool.NullPool
            )
        table = sa.Table(name, sa.MetaData(), autoload_with=self._engine)
        decl = {r[1]: str(r[2]).upper() for r in self.conn.execute(f"PRAGMA table_xinfo({_q(name)})")}
        overrides = {}
        for col, d in decl.items():
            base = d.split("(")[0].strip()
            if base in _DECL_OVERRIDES:
                overrides[col] = _DECL_OVERRIDES[base]
            elif base not in _NUMERIC_NAMES and col in table.c and isinstance(table.c[col].type, sa.Numeric):
                # SQLAlchemy gives a type it does not know SQLite's NUMERIC affinity (``ANY``, ``STRING``,
                # ``MONEY``): such a column holds whatever is written to it, so it travels as text
                overrides[col] = ColumnType("string")
                log.warning("unmapped_sql_type", table=name, column=col, sql_type=d, mapped_to="string")
        meta = table_meta_from_sqlalchemy(table, overrides)
        meta = TableMeta(meta.name, tuple(sqlite_column(c) for c in meta.columns), meta.key, meta.namespace)
        if not meta.key:
            ddl = self.conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchall()
            if ddl and "WITHOUT ROWID" not in str(ddl[0][0]).upper():
                meta = TableMeta(
                    meta.name, (Column(ROWID_COLUMN, ColumnType("long"), False), *meta.columns), (ROWID_COLUMN,)
                )
        return meta

    def _load_history(self) -> None:
        """Read the recorded shapes (another relay on the same file may have added some), keeping the
        objects of shapes already known so their schema versions stay the same objects."""
        known = {(tbl, since): t for tbl, hist in self._history.items() for since, t in hist}
        history: dict[str, list[tuple[int, _Table]]] = {}
        for tbl, since, text in self.conn.execute(
            f"SELECT tbl, since_scn, meta FROM {TABLES_TABLE} ORDER BY tbl, since_scn"
        ).fetchall():
            meta = meta_from_json(text)
            t = known.get((tbl, int(since)))
            history.setdefault(tbl, []).append((int(since), t if t is not None and t.meta == meta else _Table(meta)))
        self._history = history

    def _refresh_locked(self, capture_began: bool = True) -> None:
        """Reflect captured tables, record changed shapes and (re)create triggers that differ; inside a
        write transaction. A table that has none of its triggers yet, once capture has begun (the
        change log existed before this transaction), was created since: its rows were committed
        after capture began, with no trigger to log them, so they are logged now as inserts (the
        write lock is held: no row is both copied here and logged by the new triggers)."""
        c = self.conn
        self._load_history()
        existing = {r[0]: r[1] for r in c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")}
        seq_rows = c.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (CHANGES_TABLE,)).fetchall()
        seq = int(seq_rows[0][0]) if seq_rows else 0
        tables: dict[str, _Table] = {}
        history = dict(self._history)
        for name in self._table_names():
            meta = self._reflect(name)
            hist = history[name] = list(history.get(name, ()))
            if hist and hist[-1][1].meta == meta:
                tables[name] = hist[-1][1]
            else:
                # every change-log row after ``seq`` is written by the triggers installed below (this
                # transaction holds the write lock): it is decoded with this shape
                tables[name] = _Table(meta)
                c.execute(
                    f"INSERT OR REPLACE INTO {TABLES_TABLE}(tbl, since_scn, meta) VALUES (?, ?, ?)",
                    (name, seq, meta_to_json(meta)),
                )
                if hist and hist[-1][0] == seq:
                    hist.pop()
                hist.append((seq, tables[name]))
            triggers = trigger_sql(meta)
            if capture_began and not any(tname in existing for tname in triggers):
                copied = self._log_existing_rows(meta)
                if copied:
                    log.info("new_table_rows_logged", table=name, rows=copied)
            for tname, sql in triggers.items():
                if existing.get(tname) != sql:
                    if tname in existing:
                        c.execute(f"DROP TRIGGER {_q(tname)}")
                    c.execute(sql)
                    log.info("trigger_installed", table=name, trigger=tname)
        self._tables = tables
        self._history = history
        self._schema_version = c.execute("PRAGMA schema_version").fetchall()[0][0]

    def _log_existing_rows(self, meta: TableMeta) -> int:
        """Log every row of ``meta``'s table as an insert, as its trigger would have (REALs too)."""
        c = self.conn
        t = meta.name
        keys = ["rowid"] if meta.key == (ROWID_COLUMN,) else [_q(k) for k in meta.key]
        if not keys:
            keys = ["rowid"]
        where = " AND ".join(f"NEW.{k} IS ?" for k in keys)
        log_row = (
            f"INSERT INTO {CHANGES_TABLE}(tbl, op, ts_ms, before, after) SELECT {_lit(t)}, 'c', {_NOW_MS}, NULL, "
            f"{_image(meta, 'NEW')} FROM {_q(t)} AS NEW WHERE {where}"
        )
        names = _real_columns(meta)
        parts = [f"SELECT 'a' AS s, {_lit(n)} AS c, NEW.{_q(n)} AS v FROM {_q(t)} AS NEW WHERE {where}" for n in names]
        log_reals = (
            f"INSERT INTO {REALS_TABLE}(scn, side, col, v) SELECT (SELECT max(scn) FROM {CHANGES_TABLE}), s, c, v "
            f"FROM ({' UNION ALL '.join(parts)}) WHERE typeof(v) = 'real'"
        )
        n = 0
        for key in c.execute(f"SELECT {', '.join(keys)} FROM {_q(t)} ORDER BY {', '.join(keys)}").fetchall():
            c.execute(log_row, key)
            if names:
                c.execute(log_reals, key * len(names))
            n += 1
        return n

    def _refresh(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            self._refresh_locked()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def tables(self) -> list[TableMeta]:
        return [t.meta for t in self._tables.values()]

    def convert_row(self, meta: TableMeta, row: Mapping[str, Any]) -> dict[str, Any]:
        """``row`` as ``SELECT`` returns it (a connection with :func:`text_or_bytes` as its
        ``text_factory``; the rowid under ``__rowid__``) → the values the stream delivers for the same
        stored row: one conversion for the change log and for a snapshot (seeding)."""
        table = self._by_meta.get(meta)
        if table is None:
            known = (t for hist in self._history.values() for _s, t in hist if t.meta == meta)
            table = self._by_meta[meta] = next(known, None) or _Table(meta)
        return table.convert(dict(row))

    def start_scn(self) -> int:
        # fetchall, never fetchone: a statement left un-stepped keeps its read snapshot open (WAL)
        rows = self.conn.execute(f"SELECT v FROM {STATE_TABLE} WHERE k = 'pruned_scn'").fetchall()
        return int(rows[0][0]) if rows else 0

    # -- reading ---------------------------------------------------------------------------------

    def _poll(self, after: int) -> list[ChangeWindow]:
        """The changes after ``after`` up to the newest known boundary (at most ``MARKS_PER_POLL`` windows)."""
        with self._cuts_lock:
            cuts = [x for x in self._cuts if x > after]
            self._cuts = cuts
        c = self.conn
        c.execute("BEGIN")
        try:
            sv = c.execute("PRAGMA schema_version").fetchall()[0][0]
            saved = c.execute(
                f"SELECT scn FROM {MARKS_TABLE} WHERE scn > ? ORDER BY scn LIMIT {MARKS_PER_POLL}", (after,)
            ).fetchall()
            # Only boundaries this snapshot can see are usable: a cut taken in a newer snapshot than
            # ours names a row we cannot read yet. The newest row we can see ends a transaction too
            # (writers are serialized and row ids follow commit order), so it is a boundary as well.
            visible = c.execute(f"SELECT max(scn) FROM {CHANGES_TABLE}").fetchall()[0][0]
            candidates = {r[0] for r in saved} | set(cuts)
            if visible is not None and visible > after:
                candidates.add(visible)
            marks = sorted(m for m in candidates if visible is not None and m <= visible)[:MARKS_PER_POLL]
            # keep a poll to about POLL_ROWS rows (SCN spans bound row counts); a window larger than
            # LARGE_WINDOW_ROWS is streamed on its own instead of being read into memory
            prev = after
            keep: list[int] = []
            large: int | None = None
            for m in marks:
                if m - prev > LARGE_WINDOW_ROWS:
                    large = None if keep else m
                    break
                keep.append(m)
                prev = m
                if m - after > POLL_ROWS:
                    break
            marks = keep
            rows = (
                c.execute(
                    f"SELECT scn, tbl, op, ts_ms, {_IMAGES} FROM {CHANGES_TABLE} "
                    "WHERE scn > ? AND scn <= ? ORDER BY scn",
                    (after, marks[-1]),
                ).fetchall()
                if marks
                else []
            )
            reals = _read_reals(c, after, marks[-1]) if marks else []
        finally:
            c.execute("COMMIT")
        if sv != self._schema_version:
            self._refresh()
        if large is not None:
            self._unsaved.append(large)
            return [self._streamed_window(after, large)]
        windows: list[ChangeWindow] = []
        ends = set(marks)
        pages = _Pages(self, rows, reals)
        start = 0
        for i, row in enumerate(rows):
            if row[0] in ends:  # a window ends at a row whose SCN is a boundary
                windows.append(ChangeWindow(row[0], row[3] or 0, _WindowChanges(pages, start, i + 1)))
                start = i + 1
        assert start == len(rows), "change-log rows past the last boundary"
        self._unsaved.extend(w.scn for w in windows)
        return windows

    def _streamed_window(self, lo: int, hi: int) -> ChangeWindow:
        """The window (lo, hi] read lazily through a connection and read snapshot of its own."""
        ts = self.conn.execute(f"SELECT ts_ms FROM {CHANGES_TABLE} WHERE scn = ?", (hi,)).fetchall()
        log.info("large_window_streamed", after_scn=lo, scn=hi)

        def changes() -> Iterator[RowChange]:
            conn = sqlite3.connect(self.path, timeout=30.0)
            try:
                cur = conn.execute(
                    f"SELECT scn, tbl, op, ts_ms, {_IMAGES} FROM {CHANGES_TABLE} "
                    "WHERE scn > ? AND scn <= ? ORDER BY scn",
                    (lo, hi),
                )
                while rows := cur.fetchmany(1000):
                    # committed change-log rows never change: another statement may read their REALs
                    reals = _read_reals(conn, rows[0][0] - 1, rows[-1][0])
                    yield from _Pages(self, rows, reals).changes(0, len(rows))
            finally:
                conn.close()

        return ChangeWindow(hi, int(ts[0][0]) if ts else 0, changes())

    def _table_for(self, tbl: str, scn: int, image: dict[str, Any]) -> _Table:
        """The table's shape as of change ``scn`` (recorded when its triggers were installed)."""
        hist = self._history.get(tbl)
        if hist:
            for since, t in reversed(hist):
                if since < scn:
                    return t
            return hist[0][1]
        # a change logged by a relay version that recorded no shapes, of a table not captured now
        table = self._guessed.get(tbl)
        if table is None or not image.keys() <= table.names:
            try:
                table = _Table(self._reflect(tbl))
            except Exception:
                table = _Table(_guess_meta(tbl, image))
                log.warning("table_shape_unknown", table=tbl, scn=scn, columns=sorted(image))
            self._guessed[tbl] = table
        return table

    def _changes(
        self,
        rows: list[tuple[int, str, str, int | None, bytes | None, bytes | None]],
        reals: list[tuple[int, str, str, float]],
    ) -> list[RowChange]:
        """The :class:`RowChange` of each change-log row ``(scn, tbl, op, ts_ms, before, after)``, with
        the exact REALs of :func:`_read_reals` (both in SCN order) put into its images."""
        befores = _load_images([r[4] for r in rows])
        afters = _load_images([r[5] for r in rows])
        out: list[RowChange] = []
        append = out.append
        table_for = self._table_for
        ri, rn = 0, len(reals)
        for (scn, tbl, op, ts_ms, _, _), b, a in zip(rows, befores, afters, strict=True):
            while ri < rn and reals[ri][0] < scn:
                ri += 1
            while ri < rn and reals[ri][0] == scn:
                _, side, col, v = reals[ri]
                ri += 1
                img = a if side == "a" else b
                if img is not None and col in img:
                    img[col] = v
            image = a if a is not None else b
            assert image is not None
            table = table_for(tbl, scn, image)
            meta = table.meta_for(image)
            bv = table.convert(b) if b is not None else None
            av = table.convert(a) if a is not None else None
            src = av if av is not None else bv
            assert src is not None
            key = tuple([src.get(k) for k in meta.key])
            # each change keeps the time its trigger recorded, so an event is the same however it is windowed
            append(_row_change(scn, meta, _OPS[op], key, bv, av, ts_ms))
        return out

    def read(self, after_scn: int | None, stop: threading.Event) -> Iterator[ChangeWindow | None]:
        last = self.start_scn() if after_scn is None else after_scn
        cut_stop = threading.Event()
        cutter = threading.Thread(target=self._cut_loop, args=(stop, cut_stop), name="sqlite-cutter", daemon=True)
        cutter.start()
        try:
            while not stop.is_set():
                if not cutter.is_alive():
                    # Without cuts no window would ever end: say so and let capture retry (a new read, a new cutter).
                    raise TransientError(f"the change-log cutter of {self.path} stopped")
                try:
                    windows = self._poll(last)
                except sqlite3.Error as exc:
                    self._drop_conn()
                    raise TransientError(f"reading the change log of {self.path} failed: {exc}") from exc
                for w in windows:
                    yield w
                    last = w.scn
                self._last_read = max(self._last_read, last)
                now = time.monotonic()
                if self._unsaved and now - self._last_save >= MARKS_SAVE_SECONDS:
                    self._last_save = now
                    self._save_marks()
                if self._acknowledged and now - self._last_prune >= self.prune_interval:
                    self._last_prune = now
                    self.prune()
                yield None
                if not windows:
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        finally:
            cut_stop.set()
            cutter.join(5)

    def _drop_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- boundaries (cuts and marks) and pruning -------------------------------------------------

    def _cut_loop(self, stop: threading.Event, cut_stop: threading.Event) -> None:
        """Every ``poll_ms``, note the newest committed change-log row: a read snapshot only ever holds
        whole committed transactions, so that row ends one. Reads never wait for writers (WAL)."""
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            log.warning("cutter_not_started", error=str(exc))
            return
        last = -1
        try:
            while not (stop.is_set() or cut_stop.is_set()):
                try:
                    newest = conn.execute(f"SELECT max(scn) FROM {CHANGES_TABLE}").fetchall()[0][0]
                except sqlite3.Error as exc:
                    log.debug("cut_failed", error=str(exc))
                    newest = None
                if newest is not None and newest > last:
                    last = newest
                    with self._cuts_lock:
                        self._cuts.append(newest)
                    self._wake.set()
                cut_stop.wait(self.poll_seconds)
        finally:
            conn.close()

    def _save_marks(self) -> None:
        """Persist the window ends served, so a restarted relay re-reads the same windows (best effort)."""
        marks, self._unsaved = self._unsaved, []
        try:
            with self.lock, self._short_busy_timeout():
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(f"INSERT OR IGNORE INTO {MARKS_TABLE}(scn) VALUES (?)", [(m,) for m in marks])
                self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.debug("marks_not_saved", error=str(exc))
            self._unsaved = marks + self._unsaved
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _short_busy_timeout(self) -> Iterator[None]:
        """Pruning gives way to the application: SQLite's busy handler is not fair, and a busy writer
        would starve a long wait. It fails fast (``database is locked``) and is retried later."""
        self.conn.execute(f"PRAGMA busy_timeout = {HOUSEKEEPING_BUSY_MS}")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA busy_timeout = 30000")

    def acknowledge(self, durable_scn: int | None) -> None:
        self._durable = durable_scn
        self._acknowledged = True  # pruning waits for the relay to say what durable consumers hold

    def prune(self, now_ms: int | None = None) -> int:
        """Delete changes that no one needs any more (see the module docstring); returns the new pruned SCN."""
        if self._unsaved:
            self._save_marks()
        bound = self._last_read
        if self._durable is not None:
            bound = min(bound, self._durable)
        c = self.conn
        with self.lock, self._short_busy_timeout():
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                log.info("prune_postponed", reason=str(exc))
                return self.start_scn()
            try:
                if self.retention_ms is not None:
                    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - self.retention_ms
                    oldest = c.execute(
                        f"SELECT max(scn) FROM {CHANGES_TABLE} WHERE scn <= ? AND ts_ms < ?", (bound, cutoff)
                    ).fetchall()[0][0]
                    bound = min(bound, oldest or 0)
                elif self._durable is None:
                    bound = 0  # neither retention nor a durable consumer: keep everything
                mark = c.execute(f"SELECT max(scn) FROM {MARKS_TABLE} WHERE scn <= ?", (bound,)).fetchall()[0][0]
                pruned = self.start_scn()
                if mark is not None and mark > pruned:
                    n = c.execute(f"DELETE FROM {CHANGES_TABLE} WHERE scn <= ?", (mark,)).rowcount
                    c.execute(f"DELETE FROM {REALS_TABLE} WHERE scn <= ?", (mark,))
                    c.execute(f"DELETE FROM {MARKS_TABLE} WHERE scn <= ?", (mark,))
                    c.execute(f"INSERT OR REPLACE INTO {STATE_TABLE}(k, v) VALUES ('pruned_scn', ?)", (mark,))
                    log.info("change_log_pruned", upto_scn=mark, rows=n)
                    pruned = mark
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return pruned

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "last_read_scn": self._last_read, "durable_scn": self._durable}

    def close(self) -> None:
        self._drop_conn()

    def uninstall(self) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for (name,) in c.execute(
                f"SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '{_PREFIX}%'"
            ).fetchall():
                c.execute(f"DROP TRIGGER {_q(name)}")
            for t in (CHANGES_TABLE, MARKS_TABLE, STATE_TABLE, REALS_TABLE, TABLES_TABLE):
                c.execute(f"DROP TABLE IF EXISTS {t}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        log.info("uninstalled", path=self.path)
