"""PostgreSQL key and identity shapes, TRUNCATE as events, and the publication policy, on a private
PostgreSQL 15 (issue 10, "what broke"): every change goes through the relay's own encoder and is
decoded as a subscriber would, so a change capture cannot encode fails here as it fails the relay."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_servers import PgServer
from sources_harness import collect, start_relay

from headrace.relay import Codecs, RowCodec, SchemaRegistry, decode_key, iter_frames
from headrace.relay._codec import encode_window
from headrace.relay._config import RelayConfig
from headrace.relay._event import Op
from headrace.relay.sources import ChangeWindow
from headrace.relay.sources.postgres import PostgresSource

pytestmark = pytest.mark.postgres

Wire = tuple[str, str, list[Any], dict[str, Any] | None, dict[str, Any] | None]


def source_for(pg: PgServer, db: str, tables: list[str] | None, slot: str, **postgres: Any) -> PostgresSource:
    cfg = RelayConfig(source=pg.url(db), tables=tables, postgres={"slot": slot, "publication": slot, **postgres})
    return PostgresSource(cfg)


def read_wire(src: PostgresSource, after: int | None, windows: int, timeout: float = 20.0) -> list[list[Wire]]:
    """``windows`` windows as a subscriber decodes them after the relay's encoder: per event
    (op, table, key, before, after)."""
    registry = SchemaRegistry()
    codecs = Codecs(registry)
    out: list[list[Wire]] = []
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    reader = src.read(after, stop)
    try:
        for w in reader:
            if isinstance(w, ChangeWindow):
                enc = encode_window(w, codecs)
                assert enc is not None
                events = []
                for e in iter_frames(enc.data):
                    sv = registry.get(e.fingerprint)
                    assert sv is not None
                    codec = RowCodec(sv)
                    before = codec.decode(e.before) if e.before is not None else None
                    after_row = codec.decode(e.after) if e.after is not None else None
                    events.append((e.op.value, e.source, decode_key(e.key), before, after_row))
                out.append(events)
            if len(out) >= windows or time.monotonic() > deadline:
                break
    finally:
        stop.set()
        reader.close()
    assert len(out) == windows, f"got {len(out)} of {windows} windows"
    return out


def run(pg: PgServer, db: str, *statements: str) -> None:
    """Each statement in its own transaction (a list item with ';' inside is one transaction)."""
    with contextlib.closing(pg.connect(db)) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def test_full_identity_without_primary_key_and_nulls(pg_server: PgServer) -> None:
    """Was: every column became a NOT NULL key column → ``TypeError: must be string on field …``."""
    db = pg_server.create_database("shfull")
    pg_server.execute("CREATE TABLE f (a int, b text, c text NOT NULL); ALTER TABLE f REPLICA IDENTITY FULL", db)
    src = source_for(pg_server, db, ["f"], slot="shfull")
    src.open()
    after = src.start_scn()
    run(
        pg_server, db,
        "INSERT INTO f VALUES (1, NULL, 'x')",
        "UPDATE f SET b = 'y' WHERE a = 1",
        "DELETE FROM f WHERE a = 1",
        "INSERT INTO f VALUES (NULL, NULL, 'z')",
    )  # fmt: skip
    got = read_wire(src, after, 4)
    assert got == [
        [("c", "f", [1, None, "x"], None, {"a": 1, "b": None, "c": "x"})],
        [  # every column is the key: the update moves the row, so the old key is deleted first
            ("d", "f", [1, None, "x"], {"a": 1, "b": None, "c": "x"}, None),
            ("u", "f", [1, "y", "x"], {"a": 1, "b": None, "c": "x"}, {"a": 1, "b": "y", "c": "x"}),
        ],
        [("d", "f", [1, "y", "x"], {"a": 1, "b": "y", "c": "x"}, None)],
        [("c", "f", [None, None, "z"], None, {"a": None, "b": None, "c": "z"})],
    ]
    src.uninstall()
    src.close()


def test_full_identity_table_dropped_or_altered_before_the_relay_reads(pg_server: PgServer) -> None:
    """Was: the key and NOT NULL flags came from today's catalog, so a table dropped or altered after its
    changes (and before the relay read them) made the change unencodable."""
    db = pg_server.create_database("shdrop")
    pg_server.execute(
        "CREATE TABLE gone (id int PRIMARY KEY, v text); ALTER TABLE gone REPLICA IDENTITY FULL;"
        "CREATE TABLE alt (id int PRIMARY KEY, v text); ALTER TABLE alt REPLICA IDENTITY FULL",
        db,
    )
    src = source_for(pg_server, db, None, slot="shdrop")
    src.open()
    after = src.start_scn()
    run(
        pg_server, db,
        "INSERT INTO gone VALUES (1, NULL)",
        "UPDATE gone SET v = 'a'",
        "INSERT INTO alt VALUES (1, NULL)",
        "UPDATE alt SET v = 'b'",
        # later: the NULL the relay has yet to read becomes illegal, and the primary key moves to v
        "ALTER TABLE alt ALTER v SET NOT NULL; ALTER TABLE alt DROP CONSTRAINT alt_pkey;"
        "ALTER TABLE alt ADD PRIMARY KEY (v)",
        "DROP TABLE gone",
    )  # fmt: skip
    got = read_wire(src, after, 4)
    # the dropped table: no catalog answer, so every column is the key (values as they were)
    assert got[0] == [("c", "gone", [1, None], None, {"id": 1, "v": None})]
    assert got[1] == [  # every column is the key: the old key is deleted first
        ("d", "gone", [1, None], {"id": 1, "v": None}, None),
        ("u", "gone", [1, "a"], {"id": 1, "v": None}, {"id": 1, "v": "a"}),
    ]
    # the altered table: decoded with its columns as of the change; the NULL still encodes
    # (the catalog read after the ALTER makes v the key, so the update moves the row: d of the old key, u)
    assert [e[0] for e in got[2] + got[3]] == ["c", "d", "u"]
    assert got[2][0][4] == {"id": 1, "v": None} and got[3][-1][4] == {"id": 1, "v": "b"}
    src.uninstall()
    src.close()


def test_composite_key_with_a_toasted_value_left_unchanged(pg_server: PgServer) -> None:
    """Was: an UPDATE that left a TOASTed key value unchanged gave the key None (``'u'`` in the new tuple)
    and the row failed to encode; the old key tuple that PostgreSQL sends has the value."""
    db = pg_server.create_database("shtoast")
    pg_server.execute(
        "CREATE TABLE k (a int, big text, n int, PRIMARY KEY (big, a));"  # key in index order: (big, a)
        "ALTER TABLE k ALTER big SET STORAGE EXTERNAL",  # out of line, uncompressed
        db,
    )
    src = source_for(pg_server, db, ["k"], slot="shtoast")
    src.open()
    after = src.start_scn()
    big = secrets.token_hex(1100)  # 2,200 bytes: stored out of line, yet small enough for a btree entry
    run(
        pg_server, db,
        f"INSERT INTO k VALUES (1, '{big}', 0)",
        "UPDATE k SET n = 1",  # the key is unchanged and TOASTed
        "UPDATE k SET a = 2",  # part of the key changes, the TOASTed part does not
        "DELETE FROM k",
    )  # fmt: skip
    [[ins], [upd], [gone, upd_key], [dele]] = read_wire(src, after, 4)
    assert gone == ("d", "k", [big, 1], {"a": 1, "big": big, "n": None}, None)  # the key moved: old key first
    assert ins == ("c", "k", [big, 1], None, {"a": 1, "big": big, "n": 0})
    assert upd[0] == "u" and upd[2] == [big, 1] and upd[4] == {"a": 1, "big": big, "n": 1}
    assert upd_key[0] == "u" and upd_key[2] == [big, 2] and upd_key[4] == {"a": 2, "big": big, "n": 1}
    assert upd_key[3] == {"a": 1, "big": big, "n": None}  # the old key; n is not in the old tuple
    assert dele == ("d", "k", [big, 2], {"a": 2, "big": big, "n": None}, None)
    src.uninstall()
    src.close()


def test_primary_key_plus_replica_identity_using_index(pg_server: PgServer) -> None:
    """Was: any DELETE (or an UPDATE of the identity columns) → ``an integer is required on field id``: the
    key was the primary key, which the old tuple does not carry. The key is the replica identity."""
    db = pg_server.create_database("shidx")
    pg_server.execute(
        "CREATE TABLE u (id int PRIMARY KEY, code text NOT NULL, v text);"
        "CREATE UNIQUE INDEX u_code ON u (code); ALTER TABLE u REPLICA IDENTITY USING INDEX u_code",
        db,
    )
    src = source_for(pg_server, db, ["u"], slot="shidx")
    src.open()
    after = src.start_scn()
    run(
        pg_server, db,
        "INSERT INTO u VALUES (1, 'a', 'x')",
        "UPDATE u SET v = 'y'",
        "UPDATE u SET code = 'b'",
        "UPDATE u SET id = 7",
        "DELETE FROM u",
    )  # fmt: skip
    got = [e for w in read_wire(src, after, 5) for e in w]
    assert got == [
        ("c", "u", ["a"], None, {"id": 1, "code": "a", "v": "x"}),
        ("u", "u", ["a"], None, {"id": 1, "code": "a", "v": "y"}),
        ("d", "u", ["a"], {"id": None, "code": "a", "v": None}, None),  # the key moved: old key first
        ("u", "u", ["b"], {"id": None, "code": "a", "v": None}, {"id": 1, "code": "b", "v": "y"}),
        ("u", "u", ["b"], None, {"id": 7, "code": "b", "v": "y"}),
        ("d", "u", ["b"], {"id": None, "code": "b", "v": None}, None),
    ]
    # the catalog the relay registers at start agrees with the stream
    assert {m.name: m.key for m in src.tables()} == {"u": ("code",)}
    src.uninstall()
    src.close()


def test_truncate_is_an_event_in_its_window(pg_server: PgServer) -> None:
    """Was: TRUNCATE was dropped (``truncate_ignored``), also inside a mixed transaction."""
    db = pg_server.create_database("shtrunc")
    pg_server.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY, v text)", db)
    src = source_for(pg_server, db, ["a", "b"], slot="shtrunc")
    src.open()
    after = src.start_scn()
    run(
        pg_server, db,
        "INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1, 'x')",
        "INSERT INTO a VALUES (3); TRUNCATE a, b; INSERT INTO b VALUES (2, 'y')",
        "TRUNCATE b",
    )  # fmt: skip
    got = read_wire(src, after, 3)
    assert [(op, t, k) for op, t, k, _b, _a in got[1]] == [
        ("c", "a", [3]), ("t", "a", []), ("t", "b", []), ("c", "b", [2]),
    ]  # fmt: skip
    assert all(e[3] is None and e[4] is None for e in got[1] if e[0] == "t")
    assert got[2] == [("t", "b", [], None, None)]
    src.uninstall()
    src.close()


def test_truncate_through_relay_filters_and_subscriber(pg_server: PgServer, tmp_path: Path, daemons: Any) -> None:
    """A truncate reaches every key partition, the subscriber client, and ``headrace subscribe``."""
    db = pg_server.create_database("shtrel")
    pg_server.execute("CREATE TABLE a (id int PRIMARY KEY, v text)", db)
    _relay, url = start_relay(daemons, tmp_path, pg_server.url(db), tables=["a"], postgres={"slot": "shtrel"})
    run(pg_server, db, "INSERT INTO a SELECT g, 'v' FROM generate_series(1, 8) g; TRUNCATE a; INSERT INTO a VALUES (9)")
    [w] = collect(url, ["a"], 10, timeout=30)
    assert [e.op for e in w.events] == [Op.INSERT] * 8 + [Op.TRUNCATE, Op.INSERT]
    t = w.events[8]
    assert (t.table, t.key, t.before, t.after) == ("a", [], None, None)
    from headrace.relay._event import peek_header

    for i in range(3):  # every mod partition gets the truncate, in order
        r = httpx.get(url + "/v1/stream", params={"since": w.scn - 1, "filter": f"mod:3:{i}", "wait_ms": 0}, timeout=10)
        assert r.status_code == 200, r.text
        ops, off = [], 0
        while off < len(r.content):
            h = peek_header(r.content, off)
            ops.append(h.op)
            off += h.length
        assert Op.TRUNCATE in ops and ops.index(Op.TRUNCATE) == sum(
            o is Op.INSERT for o in ops[: ops.index(Op.TRUNCATE)]
        )
    r = httpx.get(url + "/v1/stream", params={"since": w.scn - 1, "filter": "range:100:200", "wait_ms": 0}, timeout=10)
    assert [peek_header(r.content).op] == [Op.TRUNCATE]
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "headrace", "subscribe", "--relay", url, "--idle-exit", "2"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert '"op": "t"' in out and '"key": []' in out


def test_keyless_tables_do_not_break_the_applications_writes(pg_server: PgServer) -> None:
    """Was: the default FOR ALL TABLES publication made PostgreSQL refuse the application's UPDATE and
    DELETE on a table without a replica identity. Now such tables are left out (named in a warning and in
    the source status) and join the publication as soon as they get a key or a replica identity."""
    db = pg_server.create_database("shpub")
    pg_server.execute(
        "CREATE TABLE keyless (a int, b text); INSERT INTO keyless VALUES (1, 'x');"
        "CREATE TABLE fullnopk (a int, b text); ALTER TABLE fullnopk REPLICA IDENTITY FULL;"
        "CREATE TABLE withpk (id int PRIMARY KEY)",
        db,
    )
    src = source_for(pg_server, db, None, slot="shpub", status_interval=1)
    src.open()
    after = src.start_scn()
    # the application's writes on the keyless table work while the relay's publication exists
    run(pg_server, db, "UPDATE keyless SET b = 'y'", "DELETE FROM keyless")
    assert src.describe()["unpublished_tables"] == ["keyless"]
    published = {
        t for (t,) in pg_server.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'shpub'", db)
    }
    assert published == {"fullnopk", "withpk"}
    run(
        pg_server, db,
        "INSERT INTO fullnopk VALUES (1, NULL)",
        # a new table with a key is published by the DDL's own transaction (event trigger): its first rows count
        "CREATE TABLE fresh (id int PRIMARY KEY); INSERT INTO fresh VALUES (1)",
        # a keyless table that gets a replica identity joins; one that loses its key leaves
        "ALTER TABLE keyless REPLICA IDENTITY FULL",
        "INSERT INTO keyless VALUES (2, 'z')",
        "ALTER TABLE withpk DROP CONSTRAINT withpk_pkey",
        "INSERT INTO withpk VALUES (5); UPDATE withpk SET id = 6; DELETE FROM withpk",  # not refused
        "INSERT INTO fresh VALUES (2)",
    )  # fmt: skip
    got = read_wire(src, after, 4)
    assert got[0] == [("c", "fullnopk", [1, None], None, {"a": 1, "b": None})]
    assert got[1] == [("c", "fresh", [1], None, {"id": 1})]
    assert got[2] == [("c", "keyless", [2, "z"], None, {"a": 2, "b": "z"})]
    assert got[3] == [("c", "fresh", [2], None, {"id": 2})]  # withpk left the publication with its key
    src.uninstall()
    src.close()


def test_listed_tables_without_superuser_follow_by_polling(pg_server: PgServer) -> None:
    """``relay.tables`` as a table owner without superuser rights: no event trigger; a listed keyless table
    is left out (its writes work); a listed table created later joins the publication at the next poll."""
    db = pg_server.create_database("shown")
    pg_server.execute("DROP ROLE IF EXISTS shown; CREATE ROLE shown LOGIN REPLICATION")
    pg_server.execute("GRANT CREATE ON SCHEMA public TO shown; GRANT CREATE ON DATABASE shown TO shown", db)
    with contextlib.closing(pg_server.connect(db, user="shown")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE nokey (a int); INSERT INTO nokey VALUES (1); CREATE TABLE keyed (id int PRIMARY KEY)")
    pg_server.execute("CREATE TABLE theirs (id int PRIMARY KEY)", db)  # owned by another role: left out, named
    cfg = RelayConfig(
        source=pg_server.url(db, user="shown"),
        tables=["nokey", "keyed", "later", "theirs"],
        postgres={"slot": "shown", "publication": "shown", "status_interval": 1},
    )
    src = PostgresSource(cfg)
    src.open()
    after = src.start_scn()
    info = src.describe()
    assert info["publication_trigger"] is False and info["unpublished_tables"] == ["nokey"]
    with contextlib.closing(pg_server.connect(db, user="shown")) as conn, conn.cursor() as cur:
        cur.execute("UPDATE nokey SET a = 2")  # not refused
        cur.execute("INSERT INTO keyed VALUES (1)")
        cur.execute("CREATE TABLE later (id int PRIMARY KEY)")
    published = "SELECT tablename FROM pg_publication_tables WHERE pubname = 'shown' ORDER BY 1"
    got = read_wire(src, after, 1)  # reading polls the slot, and the poll updates the publication
    assert got == [[("c", "keyed", [1], None, {"id": 1})]]
    assert pg_server.execute(published, db) == [("keyed",), ("later",)]
    pg_server.execute("INSERT INTO later VALUES (5)", db)
    assert read_wire(src, None, 2)[1] == [("c", "later", [5], None, {"id": 5})]
    src.uninstall()
    src.close()


def test_an_all_tables_publication_handed_to_the_relay_is_replaced_without_a_gap(pg_server: PgServer) -> None:
    """A FOR ALL TABLES publication the relay did not create is left alone (with a warning); once the
    operator marks it as the relay's, the relay replaces it by its FOR TABLE publication in one
    transaction: changes before and after the swap are all delivered."""
    db = pg_server.create_database("shmig")
    pg_server.execute(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE nokey (a int); CREATE PUBLICATION shmig FOR ALL TABLES", db
    )
    src = source_for(pg_server, db, None, slot="shmig")
    src.open()
    after = src.start_scn()
    assert pg_server.execute("SELECT puballtables FROM pg_publication WHERE pubname = 'shmig'", db) == [(True,)]
    pg_server.execute("INSERT INTO t VALUES (1)", db)
    src.close()
    from headrace.relay.sources.postgres import PUB_MARKER

    pg_server.execute(f"COMMENT ON PUBLICATION shmig IS '{PUB_MARKER}'", db)
    src = source_for(pg_server, db, None, slot="shmig")
    src.open()
    assert pg_server.execute("SELECT puballtables FROM pg_publication WHERE pubname = 'shmig'", db) == [(False,)]
    run(pg_server, db, "INSERT INTO nokey VALUES (1); UPDATE nokey SET a = 2", "INSERT INTO t VALUES (2)")
    got = read_wire(src, after, 2)
    assert got == [[("c", "t", [1], None, {"id": 1})], [("c", "t", [2], None, {"id": 2})]]
    src.uninstall()
    src.close()
