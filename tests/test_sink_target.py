"""The ``sql`` sink's planning (sans-io) and its target, fed decoded windows directly: upserts, deletes,
truncates, schema growth, a snapshot restart, many column kinds, and the atomicity of data and
checkpoint, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from db_servers import mariadb_server, pg_server  # noqa: F401
from sink_support import checkpoint, replica_table

from headrace._db import create_engine
from headrace.relay._event import Op
from headrace.relay._schema import Column, ColumnType, TableMeta, avro_schema, schema_fingerprint
from headrace.relay.client import ChangeEvent, Checkpoint, SnapshotRestarted, Window
from headrace.sinks._config import SqlTarget
from headrace.sinks._plan import KEY_COLUMN, BatchPlan, ClearAll, Delete, Truncate, Upsert, key_text
from headrace.sinks._sql import SqlSinkTarget

V1 = TableMeta(
    "shop.items",
    (
        Column("id", ColumnType("long"), nullable=False),
        Column("name", ColumnType("string")),
        Column("price", ColumnType("decimal", precision=10, scale=2)),
        Column("ratio", ColumnType("double")),
        Column("ok", ColumnType("boolean")),
        Column("day", ColumnType("date")),
        Column("at", ColumnType("timestamp")),
        Column("uid", ColumnType("uuid")),
        Column("doc", ColumnType("json")),
        Column("blob", ColumnType("bytes")),
    ),
    key=("id",),
)
V2 = TableMeta(V1.name, (*V1.columns, Column("extra", ColumnType("long"))), key=("id",))
SCHEMAS = {schema_fingerprint(avro_schema(m)): avro_schema(m) for m in (V1, V2)}
FP1, FP2 = (schema_fingerprint(avro_schema(m)) for m in (V1, V2))


def ev(scn: int, op: Op, key: int | None, after: dict[str, Any] | None = None, fp: str = FP1) -> ChangeEvent:
    return ChangeEvent(scn, V1.name, op, [] if key is None else [key], None, after, 0, False, fp, 1 if fp == FP1 else 2)


def row(i: int, **over: Any) -> dict[str, Any]:
    r = {
        "id": i,
        "name": f"item é'\" {i}",
        "price": decimal.Decimal(f"{i}.25"),
        "ratio": i / 3,
        "ok": i % 2 == 0,
        "day": dt.date(2024, 1, 1 + i % 28),
        "at": dt.datetime(2024, 5, 1, 10, 0, i % 60, 123456),
        "uid": uuid.UUID(int=i),
        "doc": {"n": i, "tags": ["a", "b"]},
        "blob": bytes([i % 256]) * 3,
    }
    r.update(over)
    return r


# -- the plan (sans-io) -------------------------------------------------------------------------------


def test_plan_keeps_the_last_image_per_key_and_orders_truncate_first() -> None:
    p = BatchPlan()
    p.add_window([ev(1, Op.INSERT, 1, row(1)), ev(1, Op.INSERT, 2, row(2)), ev(1, Op.UPDATE, 1, row(1, name="x"))])
    p.add_window([ev(2, Op.DELETE, 2), ev(2, Op.INSERT, 3, row(3))])
    steps = p.steps()
    assert steps[0] == Delete(V1.name, ["[2]"])
    assert isinstance(steps[1], Upsert) and [r["name"] for r in steps[1].rows] == ["x", row(3)["name"]]
    assert steps[1].rows[0][KEY_COLUMN] == "[1]"
    # a truncate voids what came before it in the batch; the rows after it stay
    p.add_window([ev(3, Op.TRUNCATE, None), ev(3, Op.INSERT, 9, row(9))])
    steps = p.steps()
    assert steps[0] == Truncate(V1.name)
    assert [type(s) for s in steps] == [Truncate, Upsert] and [r["id"] for r in steps[1].rows] == [9]  # type: ignore[union-attr]
    p.clear()
    p.add_window([ev(4, Op.READ, 5, row(5))])
    assert [type(s) for s in p.steps()] == [ClearAll, Upsert]


def test_plan_groups_rows_by_column_set() -> None:
    p = BatchPlan()
    old = {"id": 1, "name": "a"}
    p.add_window([ev(1, Op.INSERT, 1, old), ev(1, Op.INSERT, 2, {**old, "id": 2, "extra": 5}, FP2)])
    ups = [s for s in p.steps() if isinstance(s, Upsert)]
    assert [u.columns for u in ups] == [("id", "name"), ("id", "name", "extra")]


def test_plan_keeps_toasted_values_an_update_left_unchanged() -> None:
    """PostgreSQL leaves out TOASTed values an UPDATE did not change (ChangeEvent.unchanged): the
    replica keeps its value (the column is not set), or the batch's earlier image gives it."""
    import dataclasses

    def toast_update(scn: int, key: int, name: str) -> ChangeEvent:
        e = ev(scn, Op.UPDATE, key, row(key, name=name, doc=None))
        return dataclasses.replace(e, unchanged=("doc",))

    p = BatchPlan()
    p.add_window([toast_update(1, 1, "renamed")])
    (up,) = [s for s in p.steps() if isinstance(s, Upsert)]
    assert "doc" not in up.columns and up.rows[0]["name"] == "renamed"
    p = BatchPlan()
    p.add_window([ev(1, Op.INSERT, 2, row(2)), toast_update(2, 2, "again")])
    (up,) = [s for s in p.steps() if isinstance(s, Upsert)]
    assert up.rows[0]["doc"] == row(2)["doc"] and up.rows[0]["name"] == "again"


def test_key_text_is_the_relay_key() -> None:
    from headrace.relay._event import encode_key

    for key in ([5], ["a", 1], [1.5, None, True], ["é"]):
        assert key_text(key).encode() == encode_key(key)


# -- the target on three databases -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def target_url(request: Any, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_server")
        return str(pg.url(pg.create_database("sink_target")))
    my = request.getfixturevalue("mariadb_server")
    return str(my.url(my.create_database("sink_target")))


def _target(url: str) -> SqlSinkTarget:
    return SqlSinkTarget(SqlTarget(type="sql", url=url), "t1")


def _deliver(t: SqlSinkTarget, items: list[Window | SnapshotRestarted], cp: Checkpoint) -> int:
    for w in items:
        if not isinstance(w, SnapshotRestarted):
            t.prepare(w, lambda fp, table: SCHEMAS[fp])
    return t.commit(items, cp)


def _norm(v: Any) -> Any:
    if isinstance(v, memoryview):
        return bytes(v)
    if isinstance(v, str) and v.startswith("{"):
        import json

        return json.loads(v)
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, str) and len(v) in (32, 36) and v.count("-") in (0, 4):  # a UUID reflected as CHAR
        try:
            return uuid.UUID(v)
        except ValueError:
            return v
    return v


def _rows(url: str) -> dict[Any, dict[str, Any]]:
    out = {k: {c: _norm(x) for c, x in r.items()} for k, r in replica_table(url, "shop_items", "id").items()}
    for r in out.values():  # MySQL's reflected DOUBLE reads back as a Decimal of 10 places
        r["ratio"] = None if r["ratio"] is None else round(float(r["ratio"]), 9)
    return out


def test_target_applies_windows_schema_growth_truncate_and_restart(target_url: str) -> None:
    t = _target(target_url)
    try:
        assert t.load() is None
        w1 = Window(10, [ev(10, Op.INSERT, i, row(i)) for i in range(1, 6)])
        w2 = Window(11, [ev(11, Op.UPDATE, 2, row(2, name="two")), ev(11, Op.DELETE, 3)])
        assert _deliver(t, [w1, w2], Checkpoint(11)) == 4 + 1
        rows = _rows(target_url)
        assert sorted(rows) == [1, 2, 4, 5] and rows[2]["name"] == "two"
        expect = {c: _norm(v) for c, v in row(4).items()}
        assert {c: v for c, v in rows[4].items()} == expect
        assert t.load() == Checkpoint(11)

        # the schema grows: the column is added, old rows keep NULL, new images set it
        w3 = Window(12, [ev(12, Op.UPDATE, 4, {**row(4), "extra": 44}, FP2)])
        _deliver(t, [w3], Checkpoint(12))
        rows = _rows(target_url)
        assert rows[4]["extra"] == 44 and rows[1]["extra"] is None

        # a truncate empties the table at its place in the window
        w4 = Window(13, [ev(13, Op.INSERT, 7, row(7)), ev(13, Op.TRUNCATE, None), ev(13, Op.INSERT, 8, row(8))])
        _deliver(t, [w4], Checkpoint(13))
        assert sorted(_rows(target_url)) == [8]

        # a failing batch changes neither rows nor the checkpoint
        bad = Window(14, [ev(14, Op.INSERT, 20, row(20)), ev(14, Op.INSERT, 21, row(21, price="not a number"))])
        with pytest.raises(Exception):  # noqa: B017 - the driver's own error
            _deliver(t, [bad], Checkpoint(14))
        assert sorted(_rows(target_url)) == [8] and t.load() == Checkpoint(13)

        # a snapshot restart replaces the copy
        snap = Window(15, [ev(15, Op.READ, 30, row(30))])
        restart = SnapshotRestarted(0, [], "snapshot_restarted", "test")
        _deliver(t, [restart, snap], Checkpoint(15, "snapshot", {"snapshot_scn": 15, "after": "x"}))
        assert sorted(_rows(target_url)) == [30]
        assert t.load() == Checkpoint(15, "snapshot", {"snapshot_scn": 15, "after": "x"})
    finally:
        t.close()
    # a second target object (a restarted sink) reads the checkpoint back from the database
    t2 = _target(target_url)
    try:
        assert t2.load() == Checkpoint(15, "snapshot", {"snapshot_scn": 15, "after": "x"})
        assert checkpoint(target_url, "t1") is not None
    finally:
        t2.close()
    engine = create_engine(target_url)
    try:
        assert KEY_COLUMN in {c["name"] for c in sa.inspect(engine).get_columns("shop_items")}
    finally:
        engine.dispose()
