"""Store generations (a re-seed fills a new one while the old one is served), the snapshot restart
answer, the migration of a store from before generations, and unchanged-TOAST filling (in process,
real SQLite stores)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from db_servers import PgServer
from support import free_port, wait_until

from headrace.bootstrap import LogWindow, Store, apply_once, merge, sort_key
from headrace.bootstrap._config import BootstrapConfig
from headrace.bootstrap._serve import BootstrapState, build_app, decode_cursor, encode_cursor
from headrace.bootstrap._toast import SchemaCache, ToastFiller
from headrace.errors import InvalidInput
from headrace.relay import (
    Codecs,
    Column,
    ColumnType,
    Event,
    Op,
    RowChange,
    SchemaRegistry,
    TableMeta,
    decode_event,
    encode_event,
    encode_key,
)
from headrace.relay._schema import UNCHANGED_MARKER
from headrace.relay.client import BootstrapClient
from headrace.relay.sources._pgstream import UNCHANGED_COLUMN

META = TableMeta("t", (Column("id", ColumnType("long"), False), Column("big", ColumnType("string"))), ("id",))
MARKED = META.with_marker(UNCHANGED_MARKER)[0]


class Rows:
    """Events of table ``t`` encoded with the relay's own codecs (plain and marked schema)."""

    def __init__(self) -> None:
        self.registry = SchemaRegistry()
        self.codecs = Codecs(self.registry)

    def ev(self, scn: int, i: int, op: Op, big: str | None, unchanged: bool = False, end: bool = True) -> Event:
        meta = MARKED if unchanged else META
        codec = self.codecs.for_change(RowChange(scn, meta, op, (i,), None, {}))
        after = (
            None
            if op is Op.DELETE
            else codec.encode({"id": i, "big": big, UNCHANGED_COLUMN: ["big"] if unchanged else None})
        )
        before = codec.encode({"id": i}) if op is Op.DELETE else None
        return Event(scn, "t", op, encode_key([i]), scn, codec.version.fingerprint, before, after, end)

    def window(self, *events: Event) -> LogWindow:
        return LogWindow(
            events[-1].scn, events[0].scn, 0, len(events), frozenset({"t"}), b"".join(map(encode_event, events))
        )

    def versions(self) -> list[Any]:
        return self.registry.versions("t")


def _rows(store: Store) -> dict[int, dict[str, Any]]:
    from headrace.relay import RowCodec

    out = {}
    schemas = store.schemas()
    for _s, _k, frame in store.snapshot_page(["t"], None, 10_000)[0]:
        e, _ = decode_event(frame)
        out[int(e.key[1:-1])] = RowCodec(schemas[e.fingerprint]).decode(e.after)  # type: ignore[arg-type]
    return out


def test_reseed_builds_a_new_generation_while_the_old_one_is_served(tmp_path: Path) -> None:
    _generations(Store(f"sqlite:///{tmp_path / 'b.db'}"))


def test_generations_in_a_postgresql_store(pg_server: PgServer) -> None:
    _generations(Store(pg_server.url(pg_server.create_database("bootstore"))))


def _generations(store: Store) -> None:
    rows = Rows()
    seed = {"start_scn": 10, "high_scn": 10, "done": False}
    g1 = store.begin_generation(10, seed, "initial")
    store.put_schemas(rows.versions() or [rows.registry.register(META)])
    assert store.state()["gen"] is None and store.state()["building"]["gen"] == g1
    assert store.append([rows.window(rows.ev(11, 1, Op.INSERT, "a"))], 11, gen=g1)
    store.apply(merge([[rows.ev(10, 2, Op.INSERT, "seeded")]]).values(), 10, gen=g1)
    assert apply_once(store, 100) == 0 and store.state()["gen"] is None  # the seed is not done: nothing applied
    store.set_seed({**seed, "done": True}, gen=g1)
    apply_once(store, 100)
    st = store.state()
    assert (st["gen"], st["building"], st["applied_scn"], st["reseeds"]["count"]) == (g1, None, 11, 0)
    assert _rows(store) == {1: {"id": 1, "big": "a"}, 2: {"id": 2, "big": "seeded"}}

    # the relay no longer has log_scn: a new generation starts at 50; the old one stays served
    g2 = store.begin_generation(50, {"start_scn": 50, "high_scn": 50, "done": False}, "relay_no_longer_has_log_scn")
    assert not store.append([rows.window(rows.ev(51, 9, Op.INSERT, "x"))], 51, gen=g1)  # g1 is not followed any more
    assert store.append([rows.window(rows.ev(51, 3, Op.INSERT, "new"))], 51, gen=g2)
    store.apply(merge([[rows.ev(50, 4, Op.INSERT, "reseeded")]]).values(), 50, gen=g2)
    st = store.state()
    assert st["gen"] == g1 and st["log_scn"] == 11 and st["reseeds"]["count"] == 1
    assert st["reseeds"]["last_reason"] == "relay_no_longer_has_log_scn"
    assert [w.scn for w in store.log_windows(11, 10, upto=st["log_scn"])] == []  # catch-up stays in g1's log
    assert _rows(store) == {1: {"id": 1, "big": "a"}, 2: {"id": 2, "big": "seeded"}}
    # a second request abandons g2 while it seeds: its pages are refused from then on
    g3 = store.begin_generation(60, {"start_scn": 60, "high_scn": 60, "done": False}, "relay_no_longer_has_log_scn")
    assert not store.apply(merge([[rows.ev(50, 5, Op.INSERT, "late")]]).values(), 50, gen=g2)
    assert not store.set_seed({"done": True}, gen=g2)
    assert store.log_windows(11, 10) == []  # g2's log went with it
    store.apply(merge([[rows.ev(60, 4, Op.INSERT, "third")]]).values(), 60, gen=g3)
    store.set_seed({"start_scn": 60, "high_scn": 60, "done": True}, gen=g3)
    apply_once(store, 100)
    st = store.state()
    assert (st["gen"], st["building"], st["log_floor"], st["reseeds"]["count"]) == (g3, None, 60, 2)
    assert _rows(store) == {4: {"id": 4, "big": "third"}}
    assert store.collect_garbage() == 3 and store.collect_garbage() == 0  # g1's and g2's rows
    store.close()


@contextlib.contextmanager
def _serving(store: Store, **config: Any) -> Iterator[str]:
    """The bootstrap server's HTTP app over ``store`` on a real socket (no threads of its own)."""
    port = free_port()
    app = build_app(BootstrapState(BootstrapConfig(**config), store))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the server to start", 0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_snapshot_read_across_a_reseed_is_told_to_restart(tmp_path: Path) -> None:
    rows = Rows()
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.put_schemas([rows.registry.register(META)])
    g1 = store.init_positions(5)
    store.apply(merge([[rows.ev(5, i, Op.INSERT, str(i))] for i in range(1, 6)]).values(), 5)
    with _serving(store, max_snapshot_rows=2) as url:
        bs = BootstrapClient(url)
        page = bs.snapshot(["t"], None, None, 2, "s1")
        assert len(page.events) == 2 and page.cursor is not None and decode_cursor(page.cursor)[2] == g1
        assert len(bs.snapshot(["t"], None, page.cursor, 2, "s1", page.snapshot_scn).events) == 2
        g2 = store.begin_generation(9, {"start_scn": 9, "high_scn": 9, "done": True}, "relay_no_longer_has_log_scn")
        # still served while the new generation is built
        assert len(bs.snapshot(["t"], None, page.cursor, 2, "s1", page.snapshot_scn).events) == 2
        apply_once(store, 10)  # promotes g2
        with pytest.raises(InvalidInput) as err:
            bs.snapshot(["t"], None, page.cursor, 2, "s1", page.snapshot_scn)
        assert err.value.reason == "snapshot_restarted"  # what the client library turns into SnapshotRestarted
        r = httpx.get(url + "/v1/snapshot", params={"limit": 2, "after": page.cursor, "snapshot_scn": 5})
        assert (r.status_code, r.json()["error"], r.json()["generation"]) == (410, "snapshot_restarted", g2)
        # a cursor without a generation (an older server's) is caught by its snapshot_scn below the log
        old = encode_cursor(*decode_cursor(page.cursor)[:2])
        r = httpx.get(url + "/v1/snapshot", params={"limit": 2, "after": old, "snapshot_scn": 5})
        assert (r.status_code, r.json()["error"]) == (410, "snapshot_restarted"), r.text
        assert httpx.get(url + "/v1/catchup", params={"since": 5}).status_code == 410
        status = httpx.get(url + "/v1/status").json()
        assert status["reseeds"]["count"] == 1 and status["generation"] == g2
        bs.close()
    store.close()


def test_a_store_from_before_generations_becomes_generation_one(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE headrace_boot_rows (source VARCHAR(255), sort_key BLOB, scn BIGINT, frame BLOB,
                                         PRIMARY KEY (source, sort_key));
        CREATE TABLE headrace_boot_state (k VARCHAR(64) PRIMARY KEY, v TEXT NOT NULL);
        INSERT INTO headrace_boot_state VALUES ('log_scn', '30'), ('applied_scn', '30'), ('log_floor', '20'),
                                               ('seed', '{"done": true, "high_scn": 7, "start_scn": 7}');
        """
    )
    frame = encode_event(Event(7, "t", Op.READ, encode_key([1]), 0, "0" * 16, None, b"x"))
    conn.execute("INSERT INTO headrace_boot_rows VALUES ('t', ?, 7, ?)", (sort_key(encode_key([1])), frame))
    conn.commit()
    conn.close()
    store = Store(f"sqlite:///{path}")
    st = store.state()
    assert (st["gen"], st["log_scn"], st["applied_scn"], st["log_floor"], st["seed"]["done"]) == (1, 30, 30, 20, True)
    assert store.row_count() == 1
    store.close()
    store = Store(f"sqlite:///{path}")  # idempotent
    assert store.state()["gen"] == 1 and store.row_count() == 1
    store.close()


def test_unchanged_toast_values_are_filled_from_the_batch_or_the_store() -> None:
    rows = Rows()
    rows.registry.register(META)
    rows.registry.register(MARKED)
    schemas = SchemaCache(lambda: {sv.fingerprint: sv for sv in rows.versions()})
    stored = {("t", sort_key(encode_key([1]))): encode_event(rows.ev(1, 1, Op.READ, "stored-1"))}
    fill = ToastFiller(schemas, lambda s, k: stored.get((s, k)))
    ops = merge(
        [
            [rows.ev(5, 1, Op.UPDATE, None, unchanged=True)],  # from the store
            [rows.ev(6, 2, Op.INSERT, "inserted-2"), rows.ev(7, 2, Op.UPDATE, None, unchanged=True)],  # same batch
            [rows.ev(8, 3, Op.DELETE, None), rows.ev(9, 3, Op.UPDATE, None, unchanged=True)],  # unknown: kept marked
        ],
        fill,
    )
    from headrace.relay import RowCodec

    got = {}
    for op in ops.values():
        e, _ = decode_event(op.frame)  # type: ignore[arg-type]
        got[int(e.key[1:-1])] = RowCodec(schemas._schemas[e.fingerprint]).decode(e.after)  # type: ignore[arg-type]
    assert got[1] == {"id": 1, "big": "stored-1", UNCHANGED_COLUMN: None}
    assert got[2] == {"id": 2, "big": "inserted-2", UNCHANGED_COLUMN: None}
    assert got[3] == {"id": 3, "big": None, UNCHANGED_COLUMN: ["big"]}


class _StopAfter:
    """A stop flag that turns set after ``n`` checks (a seed cut short, as by kill -9)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


def test_sqlite_seed_resumes_its_generation_and_a_reseed_builds_a_new_one_while_the_old_is_served(
    tmp_path: Path,
) -> None:
    import bootstrap_workload as wl

    from headrace.bootstrap import seed

    db = tmp_path / "src.db"
    wl.create(db, 1_000)
    url = f"sqlite:///{db}"
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    first = seed(store, url, None, 100, _StopAfter(3))  # cut after a few pages
    st = store.state()
    assert st["gen"] is None and not st["building"]["seed"]["done"] and 0 < store.row_count(gen=1) < 1_100
    done = seed(store, url, None, 100)  # the restart: resumes the same generation, not counted as a re-seed
    st = store.state()
    assert done["done"] and done["start_scn"] == first["start_scn"] and st["building"]["gen"] == 1
    apply_once(store, 10)
    st = store.state()
    assert (st["gen"], st["building"], st["reseeds"]["count"], store.row_count()) == (1, None, 0, 1_100)
    assert seed(store, url, None, 100) == done  # nothing to do

    with wl.connect(db) as conn:
        conn.execute("DELETE FROM accounts WHERE id <= 10")
    reseeded = seed(store, url, None, 300, reason="relay_no_longer_has_log_scn")
    st = store.state()
    assert reseeded["done"] and st["gen"] == 1 and st["building"]["gen"] == 2  # generation 1 still served
    assert store.row_count() == 1_100 and store.row_count(gen=2) == 1_090
    store.append([], reseeded["high_scn"], gen=2)  # the follower reached the seed's newest page
    apply_once(store, 10)
    st = store.state()
    assert (st["gen"], st["reseeds"]["count"], st["reseeds"]["last_reason"]) == (2, 1, "relay_no_longer_has_log_scn")
    assert store.row_count() == 1_090
    store.close()


def test_a_row_moved_to_a_new_key_leaves_no_old_row_and_keeps_its_unchanged_toast_value() -> None:
    from headrace.relay import ChangeWindow, RowCodec, iter_frames
    from headrace.relay._codec import encode_window

    rows = Rows()
    rows.registry.register(META)
    rows.registry.register(MARKED)
    schemas = SchemaCache(lambda: {sv.fingerprint: sv for sv in rows.versions()})
    stored = {("t", sort_key(encode_key([4]))): encode_event(rows.ev(1, 4, Op.READ, "stored-4"))}
    fill = ToastFiller(schemas, lambda s, k: stored.get((s, k)))
    # UPDATE t SET id = 40 WHERE id = 4, the big value left as it was: the relay's own frames
    moved = RowChange(7, MARKED, Op.UPDATE, (40,), {"id": 4}, {"id": 40, "big": None, UNCHANGED_COLUMN: ["big"]})
    ew = encode_window(ChangeWindow(7, 0, [moved]), rows.codecs)
    assert ew is not None
    ops = merge([list(iter_frames(ew.data))], fill)
    assert ops[("t", sort_key(encode_key([4])))].frame is None  # the old key is deleted
    frame = ops[("t", sort_key(encode_key([40])))].frame
    assert frame is not None
    e, _ = decode_event(frame)
    assert e.after is not None
    row = RowCodec(schemas._schemas[e.fingerprint]).decode(e.after)
    assert row == {"id": 40, "big": "stored-4", UNCHANGED_COLUMN: None}


def test_a_catchup_read_racing_a_compaction_is_too_old_not_a_hole(tmp_path: Path) -> None:
    """Issue 15: a compaction that commits between ``/v1/catchup``'s floor check and its read deletes
    windows after ``since``; the answer must be 410 ``scn_too_old`` (the subscriber restarts its
    snapshot), not the windows after the new floor claiming to have scanned everything (a subscriber
    then silently skipped changes: a lake sink's change table had a gap of a counter's updates)."""
    rows = Rows()
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.put_schemas([rows.registry.register(META)])
    store.init_positions(0)
    store.append([rows.window(rows.ev(s, s, Op.INSERT, str(s))) for s in range(1, 11)], 10)
    real = store.log_windows

    def compacted_meanwhile(after: int, *a: Any, **k: Any) -> list[LogWindow]:
        store.compact(5, older_than_ms=10**15)  # lands after the floor check, before the read
        return real(after, *a, **k)

    with _serving(store) as url:
        ok = httpx.get(url + "/v1/catchup", params={"since": 2})
        assert ok.status_code == 200 and ok.headers["x-headrace-scn"] == "10"
        store.log_windows = compacted_meanwhile  # type: ignore[method-assign]
        r = httpx.get(url + "/v1/catchup", params={"since": 2})
        assert r.status_code == 410, (r.status_code, r.headers)  # before: 200, windows 6-10 only, scanned to 10
        assert (r.json()["error"], r.json()["oldest_scn"]) == ("scn_too_old", 5)
        store.log_windows = real  # type: ignore[method-assign]
        assert httpx.get(url + "/v1/catchup", params={"since": 5}).status_code == 200
    store.close()
