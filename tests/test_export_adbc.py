"""The PostgreSQL export fast path (ADBC's PostgreSQL driver) writes exactly what the reference path writes.

Hypothesis generates rows for a table holding every type the fast path reads (edge values included:
NaN and infinite numerics and floats, 38-digit decimals, tiny and huge unconstrained numerics, padded
chars, empty and non-ASCII text, bytes, far and infinite dates and timestamps, microsecond timestamps
in and out of UTC); both
paths export it and the Parquet values and types must be equal. A table with a column the fast path
does not read (jsonb, real, uuid, interval, arrays) goes through the reference path whole.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from db_servers import PgServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.batch._config import ExportConfig
from headrace.batch._export import read_export, run_export
from headrace.batch._export_adbc import AdbcReader, adbc_available
from headrace.errors import UsageError

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not adbc_available(), reason="adbc-driver-postgresql is not installed (headrace[fastexport])"),
]

COLUMNS = {
    "id": "bigint PRIMARY KEY",
    "i2": "smallint",
    "i4": "integer",
    "i8": "bigint",
    "n12": "numeric(12, 2)",
    "n18": "numeric(18, 6)",
    "n180": "numeric(18, 0)",
    "n1818": "numeric(18, 18)",
    "n1": "numeric(1, 0)",
    "n19": "numeric(19, 4)",
    "n38": "numeric(38, 10)",
    "n": "numeric",
    "f8": "double precision",
    "b": "boolean",
    "d": "date",
    "ts": "timestamp",
    "tz": "timestamptz",
    "tm": "time",
    "tx": "text",
    "vc": "varchar(12)",
    "ch": "char(5)",
    "by": "bytea",
}

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def _dec(places: int, digits: int) -> st.SearchStrategy[decimal.Decimal]:
    """Values of numeric(digits, places), the largest and smallest included: built from their unscaled
    integer and text, exact (decimal arithmetic would round 38 digits to the context's 28)."""
    unscaled = 10**digits - 1
    return st.one_of(st.integers(-unscaled, unscaled), st.sampled_from([unscaled, -unscaled, 1, -1])).map(
        lambda i: decimal.Decimal(f"{i}E-{places}")
    )


unconstrained = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**30), max_value=10**30, places=12),
    st.sampled_from(
        [
            decimal.Decimal("NaN"),
            decimal.Decimal("Infinity"),
            decimal.Decimal("-Infinity"),
            decimal.Decimal("1E-40"),
            decimal.Decimal("123456789012345678901234567890123456789012345.5"),
            decimal.Decimal("1.500"),
            decimal.Decimal("0"),
            decimal.Decimal("-0.000"),
        ]
    ),
)
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
stamp = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
infinite = st.sampled_from(["infinity", "-infinity"])  # psycopg2 reads them as Python's min and max
row = st.fixed_dictionaries(
    {
        "i2": st.integers(-(2**15), 2**15 - 1),
        "i4": st.integers(-(2**31), 2**31 - 1),
        "i8": st.integers(-(2**63), 2**63 - 1),
        "n12": _dec(2, 12),
        "n18": _dec(6, 18),
        "n180": _dec(0, 18),
        "n1818": _dec(18, 18),
        "n1": _dec(0, 1),
        "n19": _dec(4, 19),
        "n38": _dec(10, 38),
        "n": unconstrained,
        "f8": st.floats(allow_nan=True, allow_infinity=True),
        "b": st.booleans(),
        "d": st.one_of(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)), infinite),
        "ts": st.one_of(stamp, infinite),
        "tz": st.one_of(stamp.map(lambda t: t.replace(tzinfo=IST)), infinite),
        "tm": st.times(),
        "tx": text,
        "vc": text.map(lambda s: s[:12]),
        "ch": st.text("ab c", max_size=5),
        "by": st.binary(max_size=20),
    }
).map(lambda r: {k: v for k, v in r.items()})
nullable_row = row.flatmap(lambda r: st.fixed_dictionaries({k: st.sampled_from([v, v, None]) for k, v in r.items()}))


def _comparable(v: Any) -> Any:
    return "NaN" if isinstance(v, float) and math.isnan(v) else v


def _export_both(pg: PgServer, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Export ``db`` through both readers; whether the fast path read each table (in export order)."""
    used: list[bool] = []
    real = AdbcReader.batches

    def spy(self: AdbcReader, *args: Any, **kwargs: Any) -> Any:
        got = real(self, *args, **kwargs)
        used.append(got is not None)
        return got

    monkeypatch.setattr(AdbcReader, "batches", spy)
    for reader in ("auto", "sqlalchemy"):
        out = tmp_path / reader
        cfg = ExportConfig(url=pg.url(db), output=str(out), reader=reader, batch_rows=7, part_rows=20)
        summary = run_export(cfg)
        assert summary.ok, summary.line()
    return used


def _same(tmp_path: Path, table: str) -> None:
    fast, ref = read_export(str(tmp_path / "auto"), table), read_export(str(tmp_path / "sqlalchemy"), table)
    assert fast.schema == ref.schema
    for name in ref.column_names:
        want = [_comparable(v) for v in ref.column(name).to_pylist()]
        got = [_comparable(v) for v in fast.column(name).to_pylist()]
        assert got == want, name


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(nullable_row, min_size=0, max_size=40))
def test_fast_path_writes_the_reference_values_for_every_supported_type(
    rows: list[dict[str, Any]], pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp_path = tmp_path_factory.mktemp("adbc")
    db = pg_server.create_database("export_adbc")
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE every_type ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
        names = [k for k in COLUMNS if k != "id"]
        for i, r in enumerate(rows):
            cur.execute(
                f"INSERT INTO every_type (id, {', '.join(names)}) VALUES (%s, {', '.join(['%s'] * len(names))})",
                [i, *(r[k] for k in names)],
            )
    with pytest.MonkeyPatch.context() as mp:
        used = _export_both(pg_server, db, tmp_path, mp)
    assert used == [True], "the fast path read the table"
    _same(tmp_path, "every_type")
    fast = read_export(str(tmp_path / "auto"), "every_type")
    assert fast.num_rows == len(rows)
    types = {f.name: str(f.type) for f in fast.schema}
    assert types["n12"] == "decimal128(12, 2)" and types["n38"] == "decimal128(38, 10)" and types["n"] == "string"
    assert types["n1818"] == "decimal128(18, 18)"
    assert types["tz"] == "timestamp[us, tz=UTC]" and types["i2"] == "int32" and types["ts"] == "timestamp[us]"


@pytest.mark.parametrize(
    "column, value",
    [
        ("jsonb", "'{\"a\": [1, 2]}'"),
        ("real", "1.1"),
        ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
        ("interval", "'1 month 2 days'"),
        ("int[]", "'{1,2}'"),
        ("inet", "'10.0.0.1'"),
    ],
)
def test_a_table_with_a_column_the_fast_path_does_not_read_goes_the_reference_path(
    column: str, value: str, pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_server.create_database("export_adbc_other")
    pg_server.execute(
        f"CREATE TABLE plain (id int PRIMARY KEY, n numeric(5, 1)); INSERT INTO plain VALUES (1, 2.5);"
        f"CREATE TABLE other (id int PRIMARY KEY, x {column}); INSERT INTO other VALUES (1, {value}), (2, NULL);",
        db,
    )
    used = _export_both(pg_server, db, tmp_path, monkeypatch)
    assert used == [False, True], "other (first in name order) fell back; plain took the fast path"
    _same(tmp_path, "other")
    _same(tmp_path, "plain")


def test_fast_path_in_a_named_schema_with_a_quoted_name_and_incremental_tables_on_the_reference_path(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_server.create_database("export_adbc_schema")
    pg_server.execute(
        'CREATE SCHEMA sales; CREATE TABLE sales."Orders" (id int PRIMARY KEY, "Amount" numeric(8, 3), at timestamptz);'
        "INSERT INTO sales.\"Orders\" SELECT g, g / 8.0, timestamptz '2026-01-01 00:00+02' + g * interval '1 minute'"
        " FROM generate_series(1, 300) g;"
        "CREATE TABLE sales.events (id bigint PRIMARY KEY, what text);"
        "INSERT INTO sales.events SELECT g, 'e' || g FROM generate_series(1, 50) g;",
        db,
    )
    used: list[bool] = []
    real = AdbcReader.batches

    def spy(self: AdbcReader, *args: Any, **kwargs: Any) -> Any:
        got = real(self, *args, **kwargs)
        used.append(got is not None)
        return got

    monkeypatch.setattr(AdbcReader, "batches", spy)
    for reader in ("auto", "sqlalchemy"):
        cfg = ExportConfig.model_validate(
            {
                "url": pg_server.url(db),
                "output": str(tmp_path / reader),
                "schema": "sales",
                "incremental": {"events": "id"},
                "reader": reader,
            }
        )
        assert run_export(cfg).records == 350
    assert used == [True], "Orders took the fast path; the incremental table never asked for it"
    _same(tmp_path, "Orders")
    _same(tmp_path, "events")
    pg_server.execute("INSERT INTO sales.events VALUES (51, 'late')", db)
    cfg = ExportConfig.model_validate(
        {"url": pg_server.url(db), "output": str(tmp_path / "auto"), "schema": "sales", "incremental": {"events": "id"}}
    )
    run_export(cfg)
    assert read_export(str(tmp_path / "auto"), "events").column("id").to_pylist() == list(range(1, 52))


@pytest.mark.parametrize(
    "column, value",
    [
        ("date", "'4713-01-01 BC'"),
        ("timestamp", "'10000-01-01'"),
        ("numeric(12, 2)", "'NaN'"),  # read as a scaled bigint: NaN arrives as the sentinel
        ("numeric(18, 18)", "'NaN'"),
        ("numeric(30, 2)", "'NaN'"),  # read as text
    ],
)
def test_a_value_arrow_cannot_hold_stops_both_paths(
    column: str, value: str, pg_server: PgServer, tmp_path: Path
) -> None:
    db = pg_server.create_database("export_adbc_range")
    pg_server.execute(f"CREATE TABLE far (id int PRIMARY KEY, x {column}); INSERT INTO far VALUES (1, {value})", db)
    for reader in ("auto", "sqlalchemy"):
        cfg = ExportConfig(url=pg_server.url(db), output=str(tmp_path / reader), reader=reader)
        with pytest.raises((ValueError, UsageError)):
            run_export(cfg)
        assert not list((tmp_path / reader).rglob("MANIFEST.json")), "nothing committed"


def test_nan_deep_in_a_scaled_numeric_column_stops_the_run_and_the_reader_thread(
    pg_server: PgServer, tmp_path: Path
) -> None:
    db = pg_server.create_database("export_adbc_late_nan")
    pg_server.execute(
        "CREATE TABLE t (id int PRIMARY KEY, x numeric(10, 3));"
        "INSERT INTO t SELECT g, CASE WHEN g = 2500 THEN 'NaN' ELSE g / 8.0 END FROM generate_series(1, 3000) g",
        db,
    )
    cfg = ExportConfig(url=pg_server.url(db), output=str(tmp_path / "out"), batch_rows=100, part_rows=1000)
    with pytest.raises(UsageError, match="NaN"):
        run_export(cfg)
    assert not list((tmp_path / "out").rglob("MANIFEST.json")), "nothing committed"
    assert not [t for t in threading.enumerate() if t.name == "headrace-export-read"], "the reader thread ended"
    pg_server.execute("UPDATE t SET x = 1 WHERE id = 2500", db)
    assert run_export(cfg).records == 3000
    got = read_export(str(tmp_path / "out"), "t").column("x").to_pylist()
    assert got[:3] == [decimal.Decimal("0.125"), decimal.Decimal("0.250"), decimal.Decimal("0.375")]
    assert got[2499] == decimal.Decimal("1.000") and got[-1] == decimal.Decimal("375.000")


def test_the_driver_connection_opened_while_reflecting_is_closed_when_the_run_stops_early(
    pg_server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_server.create_database("export_adbc_early_stop")
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY)", db)
    opened: list[AdbcReader] = []
    closed: list[AdbcReader] = []
    real_init, real_close = AdbcReader.__init__, AdbcReader.close

    def init(self: AdbcReader, url: str) -> None:
        real_init(self, url)
        opened.append(self)

    def close(self: AdbcReader) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(AdbcReader, "__init__", init)
    monkeypatch.setattr(AdbcReader, "close", close)
    cfg = ExportConfig(url=pg_server.url(db), output=str(tmp_path / "out"), tables=["t", "missing"])
    with pytest.raises(UsageError, match="missing"):
        run_export(cfg)
    assert len(opened) == 1 and closed == opened, "the connection opened while reflecting was closed"
    cfg = ExportConfig(url=pg_server.url(db), output=str(tmp_path / "out"), tables=["t"])
    assert run_export(cfg).ok
    assert len(opened) == 2 and closed == opened
