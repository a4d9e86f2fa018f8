"""PostgreSQL export fast path: ADBC's PostgreSQL driver reads a table as Arrow (``COPY … TO STDOUT (FORMAT
binary)`` decoded in C++), and its columns are cast to exactly the types of :func:`arrow_schema`.

Used for a full (not incremental) export of a PostgreSQL table when ``adbc-driver-postgresql`` is
installed (``pip install 'headrace[fastexport]'``), ``export.reader`` is ``auto``, and every column
is of a type whose values the driver hands back as the reference path (SQLAlchemy + psycopg2 →
:func:`rows_to_batch`) would write them:

==============  ==========================  =============================================
kind            driver's Arrow type         cast
==============  ==========================  =============================================
boolean         bool                        —
int / long      int16 / int32 / int64       widened to int32 / int64
double          float64 (float8)            — (``real`` comes as float32: reference path)
decimal(p, s)   int64: the server sends     the unscaled integer as decimal128(p, s): no
0 ≤ s ≤ p ≤ 18  ``numeric × 10^s`` as        text on either side (``NaN`` arrives as a
                bigint (exact: the value    sentinel and stops the run, as on the
                has s places)               reference path)
decimal(p, s)   numeric as text             text → decimal128(p, s), exact (an error, not a
other                                       rounding, if a value does not fit)
decimal         numeric as text             text, ``nan``/``inf`` spelt as PostgreSQL does
string          string (text, varchar,      —
                char)
bytes           binary                      —
date            date32                      —
time            time64[us]                  —
timestamp       timestamp[us]               —
timestamptz     timestamp[us, UTC]          —
==============  ==========================  =============================================

Any other column (json, uuid, interval, arrays, enums, ``real``, types mapped to text such as
``inet``) sends the whole table through the reference path, so a table's file never mixes paths.
The fast path reads inside the same snapshot as the rest of the run: the SQLAlchemy transaction
exports its snapshot (``pg_export_snapshot()``) and the driver's transaction imports it.

The driver and the casts run in a thread of their own, a few batches ahead of the Parquet writer
(both release the GIL), so decoding the server's rows and encoding Parquet overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from .._logging import get_logger
from .._prefetch import prefetch
from .._typemap import TableMeta
from ..errors import UsageError
from ._export_arrow import arrow_schema

__all__ = ["AdbcReader", "adbc_available", "cast_plan", "fast_columns", "prefetch", "scaled_decimal"]

log = get_logger("export")

Cast = Callable[[pa.Array], pa.Array]

_NUMERIC_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}

#: what the server sends for NaN in a scaled numeric column: no numeric(p ≤ 18, s) value scales to it
_NAN_SENTINEL = -(2**63)
_SCALED_MAX_PRECISION = 18  # 10^18 - 1 < 2^63: every numeric(18, s) value scaled by 10^s fits a bigint


def adbc_available() -> bool:
    """Whether ADBC's PostgreSQL driver is installed."""
    try:
        import adbc_driver_postgresql.dbapi  # noqa: F401
    except ImportError:
        return False
    return True


def _storage(a: pa.Array) -> pa.Array:
    return a.storage if isinstance(a.type, pa.BaseExtensionType) else a


def _is_numeric_text(t: pa.DataType) -> bool:
    """The driver's numeric: an opaque extension type (or, in older drivers, plain text) over string storage."""
    if isinstance(t, pa.BaseExtensionType):
        return pa.types.is_string(t.storage_type) and getattr(t, "type_name", None) == "numeric"
    return False


def _numeric_text(a: pa.Array) -> pa.Array:
    s = _storage(a)
    for driver, pg in _NUMERIC_SPECIALS.items():  # the driver writes nan/inf; PostgreSQL (and psycopg2) NaN/Infinity
        s = pc.if_else(pc.equal(s, driver), pa.scalar(pg), s)
    return s


# The driver shifts PostgreSQL's ±infinity (the integer extremes) by the 1970 → 2000 epoch offset, so
# they arrive wrapped around; psycopg2 (the reference path) reads them as Python's date/datetime min and
# max. Values outside Python's years 1–9999 are an error in both paths.
_DATE_RANGE = (-719_162, 2_932_896)  # 0001-01-01, 9999-12-31 in days since 1970
_US_RANGE = (-62_135_596_800_000_000, 253_402_300_799_999_999)  # … and microseconds, 23:59:59.999999
_DATE_INF = {-2_147_472_692: _DATE_RANGE[1], -2_147_472_691: _DATE_RANGE[0]}  # infinity, -infinity
_US_INF = {-9_222_425_352_054_775_809: _US_RANGE[1], -9_222_425_352_054_775_808: _US_RANGE[0]}


def _temporal(table: str, column: str, target: pa.DataType) -> Cast:
    """Dates and timestamps as the reference path has them: ±infinity as the extremes, anything else
    outside years 1–9999 refused."""
    is_date = pa.types.is_date32(target)
    ints_type, (lo, hi), inf = (pa.int32(), _DATE_RANGE, _DATE_INF) if is_date else (pa.int64(), _US_RANGE, _US_INF)

    def cast(a: pa.Array) -> pa.Array:
        ints = pc.cast(_storage(a), ints_type)
        for sentinel, value in inf.items():
            ints = pc.if_else(pc.equal(ints, sentinel), pa.scalar(value, ints_type), ints)
        if pc.any(pc.or_(pc.less(ints, lo), pc.greater(ints, hi))).as_py():
            raise UsageError(f"table {table!r}: column {column!r} holds a value outside years 1-9999")
        return pc.cast(ints, target)

    return cast


def scaled_decimal(precision: int | None, scale: int | None) -> bool:
    """Whether a numeric(p, s) column is read as its unscaled integer (``numeric × 10^s`` as bigint)."""
    s = scale or 0
    return precision is not None and 0 < precision <= _SCALED_MAX_PRECISION and 0 <= s <= precision


def fast_columns(table: sa.Table, meta: TableMeta) -> list[Any]:
    """The columns the fast path selects: the table's, except numeric(p ≤ 18, s) as its unscaled integer
    (exact: a value of numeric(p, s) times 10^s is an integer of at most p digits, so the bigint cast
    does not round), NaN as a sentinel the cast refuses. The driver decodes numeric by formatting text
    and the cast parses it back: this sends 8 bytes and skips both."""
    out: list[Any] = []
    for c, m in zip(table.columns, meta.columns, strict=True):
        if m.type.kind == "decimal" and scaled_decimal(m.type.precision, m.type.scale):
            factor: sa.ColumnElement[Any] = sa.literal_column(str(10 ** (m.type.scale or 0)))
            nan: sa.ColumnElement[Any] = sa.cast(sa.literal_column("'NaN'"), sa.Numeric)
            sentinel: sa.ColumnElement[Any] = sa.cast(sa.literal_column(f"'{_NAN_SENTINEL}'"), sa.BigInteger)
            out.append(sa.case((c == nan, sentinel), else_=sa.cast(c * factor, sa.BigInteger)).label(c.name))
        else:
            out.append(c)
    return out


def _scaled(table: str, column: str, target: pa.DataType) -> Cast:
    """The unscaled int64 of :func:`fast_columns` as decimal128(p, s): the same 128-bit integer, read
    with the column's scale; a value with more than p digits (none, if the server kept its typmod) or
    NaN raises."""
    limit = 10**target.precision

    def cast(a: pa.Array) -> pa.Array:
        ints = _storage(a)
        lo, hi = pc.min_max(ints).values()
        if lo.is_valid and lo.as_py() == _NAN_SENTINEL:
            raise UsageError(f"table {table!r}: column {column!r} holds NaN, which {target} cannot hold")
        if lo.is_valid and (lo.as_py() <= -limit or hi.as_py() >= limit):
            raise UsageError(f"table {table!r}: column {column!r} holds a value that does not fit {target}")
        return pc.cast(ints, pa.decimal128(19, 0)).view(target)

    return cast


def _cast_to(target: pa.DataType) -> Cast:
    return lambda a: pc.cast(_storage(a), target, safe=True)


def cast_plan(meta: TableMeta, driver: pa.Schema) -> list[Cast] | None:
    """Per column, the cast from the driver's Arrow type (for the query of :func:`fast_columns`) to
    :func:`arrow_schema`'s, or None when a column is not one the fast path reads exactly (see the module
    docstring)."""
    target = arrow_schema(meta)
    if len(driver) != len(target):
        return None
    plan: list[Cast] = []
    for col, got, want in zip(meta.columns, driver, target, strict=True):
        k, t = col.type.kind, got.type
        if k == "decimal" and scaled_decimal(col.type.precision, col.type.scale):
            if t != pa.int64() or not pa.types.is_decimal(want.type):
                log.info("export_fast_path_unsupported", column=col.name, kind=k, driver_type=str(t))
                return None
            plan.append(_scaled(meta.name, col.name, want.type))
            continue
        if k == "decimal" and _is_numeric_text(t):
            plan.append(_cast_to(want.type) if pa.types.is_decimal(want.type) else _numeric_text)
            continue
        exact = (
            (k == "boolean" and pa.types.is_boolean(t))
            or (k in ("int", "long") and pa.types.is_integer(t) and t.bit_width <= want.type.bit_width)
            or (k == "double" and pa.types.is_float64(t))
            or (k == "string" and pa.types.is_string(t))
            or (k == "bytes" and pa.types.is_binary(t))
            or (k == "date" and pa.types.is_date32(t))
            or (k == "time" and t == pa.time64("us"))
            or (k == "timestamp" and t == pa.timestamp("us"))
            or (k == "timestamptz" and pa.types.is_timestamp(t) and t.unit == "us" and t.tz is not None)
        )
        if not exact:
            log.info("export_fast_path_unsupported", column=col.name, kind=k, driver_type=str(t))
            return None
        temporal = k in ("date", "timestamp", "timestamptz")
        plan.append(_temporal(meta.name, col.name, want.type) if temporal else _cast_to(want.type))
    return plan


def convert(batch: pa.RecordBatch, plan: list[Cast], schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` (the driver's types) as a batch of ``schema`` (arrow_schema's types)."""
    return pa.RecordBatch.from_arrays([c(a) for c, a in zip(plan, batch.columns, strict=True)], schema=schema)


class AdbcReader:
    """One ADBC connection; after :meth:`begin`, reading inside an exported PostgreSQL snapshot."""

    def __init__(self, url: str) -> None:
        import adbc_driver_postgresql.dbapi as adbc

        self._conn = adbc.connect(_libpq_uri(url), autocommit=False)

    def begin(self, snapshot: str) -> None:
        """Make this connection's (not yet used) transaction read-only, REPEATABLE READ, in ``snapshot``."""
        with self._conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

    def batches(self, sql: str, meta: TableMeta, batch_rows: int) -> Iterator[pa.RecordBatch] | None:
        """The rows of ``sql`` (a select of :func:`fast_columns`) as batches of :func:`arrow_schema` (at
        most ``batch_rows`` rows each), or None when a column's type is not one the fast path reads exactly.

        The batches are read and cast in a thread of their own, ahead of the caller (:func:`prefetch`):
        the caller must close the iterator (or read it to the end) before using the connection again."""
        cur = self._conn.cursor()
        try:  # the driver's batches (16 MiB, ≈ 185k rows of the benchmark table by default) near batch_rows:
            # the Parquet writer starts on the first one sooner; CPU is the same
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(_BATCH_HINT_BYTES)})
        except Exception as exc:  # an older driver without the option reads with its default
            log.debug("export_batch_hint_unsupported", error=str(exc))
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        plan = cast_plan(meta, reader.schema)
        if plan is None:
            cur.close()
            return None
        schema = arrow_schema(meta)

        def gen() -> Iterator[pa.RecordBatch]:
            try:
                for batch in reader:
                    for off in range(0, batch.num_rows, batch_rows):
                        try:
                            converted = convert(batch.slice(off, batch_rows), plan, schema)
                        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # e.g. NaN in numeric(p, s)
                            raise UsageError(f"table {meta.name!r}: {exc}") from exc
                        yield converted
            finally:
                cur.close()

        return prefetch(gen(), _AHEAD, "headrace-export-read")

    def close(self) -> None:
        """End the read-only transaction and close the connection."""
        try:
            self._conn.rollback()
        finally:
            self._conn.close()


_BATCH_HINT_BYTES = 4 << 20
_AHEAD = 2  # batches read ahead of the writer: enough to keep both busy, little memory (≈ 2 × batch_rows rows)


def _libpq_uri(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg2://…`` → ``postgresql://…``)."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    return str(u.set(drivername="postgresql").render_as_string(hide_password=False))
