"""Sans-io: how the pgoutput assembler keys and images each table shape (the same cases run against
a real server in ``test_pg_shapes.py``)."""

from __future__ import annotations

from headrace.relay import Op
from headrace.relay.sources import RowChange
from headrace.relay.sources._pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
)
from headrace.relay.sources._pgstream import UNCHANGED_COLUMN, PgChangeAssembler, RelationCatalog

INT, TEXT = 23, 25


def rel(relid: int, ident: str, cols: list[tuple[str, int, bool]], name: str = "t") -> Relation:
    return Relation(relid, "public", name, ident, tuple(Column(n, oid, -1, key) for n, oid, key in cols))


def assembler(catalog: dict[int, RelationCatalog | None]) -> tuple[PgChangeAssembler, list[int]]:
    asked: list[int] = []

    def lookup(relid: int) -> RelationCatalog | None:
        asked.append(relid)
        return catalog.get(relid)

    return PgChangeAssembler(lookup, lambda _oid: None), asked


def change(item: object) -> RowChange:
    assert isinstance(item, RowChange)
    return item


def test_using_index_keys_by_the_identity_not_the_primary_key() -> None:
    asm, _ = assembler({1: RelationCatalog(("id",), frozenset({"id", "code"}), ("code",))})
    meta = asm.feed(rel(1, "i", [("id", INT, False), ("code", TEXT, True), ("v", TEXT, False)]))
    assert meta.key == ("code",)  # type: ignore[union-attr]
    assert [c.nullable for c in meta.columns] == [True, False, True]  # type: ignore[union-attr]
    asm.feed(Begin(10, 0, 1))
    d = change(asm.feed(Delete(1, "K", (None, b"a", None))))
    assert (d.key, d.before) == (("a",), {"code": "a"})
    u = change(asm.feed(Update(1, "K", (None, b"a", None), (b"1", b"b", b"x"))))
    assert (u.key, u.before, u.after) == (("b",), {"code": "a"}, {"id": 1, "code": "b", "v": "x"})


def test_composite_key_in_index_order_and_toasted_key_from_the_old_key() -> None:
    asm, _ = assembler({2: RelationCatalog(("big", "a"), frozenset({"a", "big"}))})
    meta = asm.feed(rel(2, "d", [("a", INT, True), ("big", TEXT, True), ("n", INT, False)]))
    assert meta.key == ("big", "a")  # type: ignore[union-attr]
    asm.feed(Begin(10, 0, 1))
    u = change(asm.feed(Update(2, "K", (b"1", b"long", None), (b"1", UNCHANGED, b"5"))))
    assert u.key == ("long", 1) and u.after == {"a": 1, "big": "long", "n": 5}
    assert UNCHANGED_COLUMN not in [c.name for c in u.table.columns]
    # a non-key TOASTed column the old key does not carry stays marked
    asm.feed(rel(3, "d", [("id", INT, True), ("doc", TEXT, False)], name="m"))
    m = change(asm.feed(Update(3, None, None, (b"1", UNCHANGED))))
    assert m.after == {"id": 1, "doc": None, UNCHANGED_COLUMN: ["doc"]}


def test_full_identity_key_from_the_catalog_once_per_relation_message_else_every_column() -> None:
    catalog: dict[int, RelationCatalog | None] = {4: RelationCatalog(("id",), frozenset({"id", "v"}))}
    asm, asked = assembler(catalog)
    r = rel(4, "f", [("id", INT, True), ("v", TEXT, True)])
    assert asm.feed(r).key == ("id",)  # type: ignore[union-attr]
    assert [c.nullable for c in asm.feed(r).columns] == [True, True]  # type: ignore[union-attr]
    catalog[4] = None  # the table is dropped; the same Relation message (a replay) decodes the same way
    assert asm.feed(r).key == ("id",) and asked == [4]  # type: ignore[union-attr]
    r2 = rel(4, "f", [("id", INT, True), ("v", TEXT, True), ("w", INT, True)])  # an older shape, read later
    assert asm.feed(r2).key == ("id", "v", "w")  # type: ignore[union-attr]
    asm.feed(Begin(10, 0, 1))
    i = change(asm.feed(Insert(4, (b"1", None, None))))
    assert i.key == (1, None, None)
    d = change(asm.feed(Delete(4, "O", (b"1", None, None))))
    assert d.before == {"id": 1, "v": None, "w": None}
    # no identity at all: every column (PostgreSQL only lets such a table publish inserts)
    assert asm.feed(rel(5, "n", [("a", INT, False), ("b", INT, False)])).key == ("a", "b")  # type: ignore[union-attr]


def test_truncate_yields_one_change_per_table_in_place() -> None:
    asm, _ = assembler({})
    asm.feed(rel(6, "d", [("id", INT, True)], name="a"))
    asm.feed(rel(7, "d", [("id", INT, True)], name="b"))
    asm.feed(Begin(10, 0, 1))
    first = change(asm.feed(Insert(6, (b"1",))))
    out = asm.feed(Truncate((6, 7), cascade=False, restart_identity=False))
    assert isinstance(out, list)
    assert [(c.op, c.table.name, c.key, c.before, c.after, c.scn) for c in out] == [
        (Op.TRUNCATE, "a", (), None, None, 10),
        (Op.TRUNCATE, "b", (), None, None, 10),
    ]
    assert first.op is Op.INSERT
    end = asm.feed(Commit(0, 10, 20, 0))
    assert end.rows == 3  # type: ignore[union-attr]
