"""The ``lake`` sink target fed decoded windows directly (local Delta tables): MERGE of upserts and
deletes, the change table, truncates, schema growth, a snapshot restart, the checkpoint read back from
the Delta history by a new target, and the replay of a commit cut short between tables (each table
skips what it already holds); compaction keeps the content."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_sink_target import FP2, SCHEMAS, ev, row

from headrace.errors import UsageError
from headrace.relay._event import Op
from headrace.relay.client import Checkpoint, SnapshotRestarted, Window
from headrace.sinks._config import LakeTarget
from headrace.sinks._lake import LakeSinkTarget, read_sink_checkpoint

deltalake = pytest.importorskip("deltalake")


def _schema_of(fp: str, table: str) -> dict[str, Any]:
    return SCHEMAS[fp]


def _target(root: Path) -> LakeSinkTarget:
    return LakeSinkTarget(LakeTarget(type="lake", uri=str(root)), "s1")


def _win(t: LakeSinkTarget, scn: int, *events: Any) -> Window:
    w = Window(scn, list(events))
    t.prepare(w, _schema_of)
    return w


def current(root: Path) -> dict[int, dict[str, Any]]:
    rows = deltalake.DeltaTable(str(root / "current" / "shop_items")).to_pyarrow_table().to_pylist()
    return {r["id"]: r for r in rows}


def changes(root: Path) -> list[tuple[str, int, int]]:
    rows = deltalake.DeltaTable(str(root / "changes" / "shop_items")).to_pyarrow_table().to_pylist()
    return sorted((r["_headrace_op"], r["_headrace_scn"], r["_headrace_index"]) for r in rows)


def test_merge_changes_truncate_growth_and_checkpoint(tmp_path: Path) -> None:
    t = _target(tmp_path)
    assert t.load() is None
    w1 = _win(t, 1, ev(1, Op.INSERT, 1, row(1)), ev(1, Op.INSERT, 2, row(2)), ev(1, Op.INSERT, 3, row(3)))
    t.commit([w1], Checkpoint(1))
    w2 = _win(t, 2, ev(2, Op.UPDATE, 1, row(1, name="one")), ev(2, Op.DELETE, 2))
    w3 = _win(t, 3, ev(3, Op.INSERT, 4, {**row(4), "extra": 40}, FP2))  # the schema grows
    t.commit([w2, w3], Checkpoint(3))
    cur = current(tmp_path)
    assert sorted(cur) == [1, 3, 4]
    assert cur[1]["name"] == "one" and cur[4]["extra"] == 40 and cur[3]["extra"] is None
    # typed values as Delta holds them
    assert cur[3]["price"] == decimal.Decimal("3.25") and cur[3]["day"] == dt.date(2024, 1, 4)
    assert cur[3]["at"] == dt.datetime(2024, 5, 1, 10, 0, 3, 123456) and cur[3]["uid"] == str(uuid.UUID(int=3))
    assert cur[3]["doc"] == '{"n": 3, "tags": ["a", "b"]}' and cur[3]["blob"] == b"\x03\x03\x03"
    assert changes(tmp_path) == [("c", 1, 0), ("c", 1, 1), ("c", 1, 2), ("c", 3, 0), ("d", 2, 1), ("u", 2, 0)]

    w4 = _win(t, 4, ev(4, Op.INSERT, 5, row(5)), ev(4, Op.TRUNCATE, None), ev(4, Op.INSERT, 6, row(6)))
    t.commit([w4], Checkpoint(4))
    assert sorted(current(tmp_path)) == [6]
    assert [c for c in changes(tmp_path) if c[1] == 4] == [("c", 4, 0), ("c", 4, 2), ("t", 4, 1)]

    again = _target(tmp_path)  # a new process reads the checkpoint back from the log's commit metadata
    assert again.load() == Checkpoint(4)
    # a log whose commits no longer carry the checkpoint (as after the Delta log's retention): a clear refusal
    log_rows = deltalake.DeltaTable(str(tmp_path / "_headrace_sink" / "s1")).to_pyarrow_table()
    deltalake.write_deltalake(str(tmp_path / "_headrace_sink" / "s2"), log_rows)
    with pytest.raises(UsageError, match="refusing to start over"):
        LakeSinkTarget(LakeTarget(type="lake", uri=str(tmp_path)), "s2").load()
    head = read_sink_checkpoint(deltalake.DeltaTable(str(tmp_path / "current" / "shop_items")), "s1")
    assert head is not None and head.checkpoint == Checkpoint(4) and head.number == 3

    t.commit([SnapshotRestarted(0, []), _win(t, 0, ev(9, Op.READ, 7, row(7)))], Checkpoint(0, "snapshot", {"a": 1}))
    assert sorted(current(tmp_path)) == [7]
    assert _target(tmp_path).load() == Checkpoint(0, "snapshot", {"a": 1})


def test_replay_after_a_commit_cut_short_between_tables(tmp_path: Path) -> None:
    t = _target(tmp_path)
    t.load()
    t.commit([_win(t, 1, ev(1, Op.INSERT, 1, row(1)))], Checkpoint(1))
    wins = [_win(t, s, ev(s, Op.INSERT, s, row(s))) for s in (2, 3, 4)]
    marks = [(1, Checkpoint(2)), (2, Checkpoint(3)), (3, Checkpoint(4))]

    # the commit dies after the change table's commit, before the current table's and the log's
    def die(*_: Any) -> int:
        raise OSError("killed")

    t._apply_current = die  # type: ignore[method-assign]
    with pytest.raises(OSError):
        t.commit_marked(wins[:2], marks[:2], Checkpoint(3))
    assert changes(tmp_path) == [("c", 1, 0), ("c", 2, 0), ("c", 3, 0)]

    # a new target resumes after the log (SCN 1); its first commit ends before the change table's checkpoint
    r = _target(tmp_path)
    assert r.load() == Checkpoint(1)
    r.commit_marked([_win(r, 2, *wins[0].events)], marks[:1], Checkpoint(2))
    assert changes(tmp_path) == [("c", 1, 0), ("c", 2, 0), ("c", 3, 0)]  # skipped: the change table has it
    assert sorted(current(tmp_path)) == [1, 2]  # applied: the current table did not
    # a crash now, then a replay of the rest: the log remembers that the change table is still ahead
    r2 = _target(tmp_path)
    assert r2.load() == Checkpoint(2)
    rest = [_win(r2, w.scn, *w.events) for w in wins[1:]]
    r2.commit_marked(rest, [(1, Checkpoint(3)), (2, Checkpoint(4))], Checkpoint(4))
    assert changes(tmp_path) == [("c", 1, 0), ("c", 2, 0), ("c", 3, 0), ("c", 4, 0)]  # every change once
    assert sorted(current(tmp_path)) == [1, 2, 3, 4]
    assert _target(tmp_path).load() == Checkpoint(4)


def test_a_snapshot_restart_ends_the_skip_of_a_table_ahead(tmp_path: Path) -> None:
    t = _target(tmp_path)
    t.load()
    t.commit([_win(t, 0, ev(5, Op.READ, 1, row(1)))], Checkpoint(5, "snapshot", {"after": "a"}))

    def die(*_: Any) -> None:
        raise OSError("killed")

    t._commit_log = die  # type: ignore[method-assign]
    with pytest.raises(OSError):  # both tables got the commit that reached the relay phase, the log did not
        t.commit([_win(t, 0, ev(5, Op.READ, 2, row(2))), _win(t, 9, ev(9, Op.INSERT, 3, row(3)))], Checkpoint(9))
    assert sorted(current(tmp_path)) == [1, 2, 3]
    r = _target(tmp_path)
    assert r.load() == Checkpoint(5, "snapshot", {"after": "a"})
    # the replay: the bootstrap server restarted the snapshot; the new one replaces everything
    items = [SnapshotRestarted(0, []), _win(r, 0, ev(12, Op.READ, 1, row(1, name="new")))]
    r.commit_marked(items, [(1, Checkpoint(0, "snapshot", {})), (2, Checkpoint(12, "relay"))], Checkpoint(12))
    assert sorted(current(tmp_path)) == [1] and current(tmp_path)[1]["name"] == "new"
    # the change table: what it held, then the restart (a ``t``) and the new snapshot's rows
    assert changes(tmp_path) == sorted([("r", 5, 0), ("r", 5, 0), ("c", 9, 0), ("t", 0, 0), ("r", 12, 0)])
    # the replay took a new commit number: the cut-short commit's rows sort before the restart's ``t``
    rows = deltalake.DeltaTable(str(tmp_path / "changes" / "shop_items")).to_pyarrow_table().to_pylist()
    commit_of = {r["_headrace_op"] + str(r["_headrace_scn"]): r["_headrace_commit"] for r in rows}
    assert commit_of["c9"] < commit_of["t0"] == commit_of["r12"]


def _page(s0: int, after: str) -> Checkpoint:
    return Checkpoint(s0, "snapshot", {"snapshot_scn": s0, "after": after})


def _done(s0: int) -> Checkpoint:
    return Checkpoint(s0, "catchup", {"snapshot_scn": s0})


def _named(root: Path) -> list[tuple[int, str, int, int | None, str | None]]:
    """The change table in commit order: (commit, op, scn, id, name)."""
    rows = deltalake.DeltaTable(str(root / "changes" / "shop_items")).to_pyarrow_table().to_pylist()
    out = [(r["_headrace_commit"], r["_headrace_op"], r["_headrace_scn"], r["id"], r["name"]) for r in rows]
    return sorted(out, key=lambda r: (r[0], r[2], -1 if r[3] is None else r[3]))


@pytest.mark.parametrize("dies_in", ["_apply_current", "_commit_log"])
@pytest.mark.parametrize("held_at", ["catchup", "snapshot"])
def test_a_table_ahead_from_another_snapshot_is_replaced_not_skipped(
    tmp_path: Path, dies_in: str, held_at: str
) -> None:
    """Issue 15: the log's checkpoint is the start of a snapshot (the commit ended at a restart); the next
    commit (snapshot 5) reached some tables but not the log; the replay reads a *new* snapshot (8): its
    pages and checkpoints differ from what the tables hold, and its catch-up starts at 8. A table that
    skipped the new snapshot's pages as "held" lost the changes between 5 and 8 (the gap of issue 15);
    now such a table starts over: a ``t`` in the change table, the new snapshot, then the catch-up."""
    t = _target(tmp_path)
    t.load()
    t.commit([_win(t, 1, ev(1, Op.INSERT, 1, row(1)))], Checkpoint(1))
    t.commit([SnapshotRestarted(0, [])], Checkpoint(0, "snapshot", {}))  # the log stops at the restart

    def die(*_: Any) -> int:
        raise OSError("killed")

    setattr(t, dies_in, die)
    # snapshot 5: page 1 (ids 1, 2), page 2 (id 3, the last), then catch-up: id 1 at 6, id 2 at 7, id 1 at 8
    p1 = _win(t, 5, ev(5, Op.READ, 1, row(1, name="s5")), ev(5, Op.READ, 2, row(2, name="s5")))
    p2 = _win(t, 5, ev(5, Op.READ, 3, row(3, name="s5")))
    w6 = _win(t, 6, ev(6, Op.UPDATE, 1, row(1, name="u6")))
    if held_at == "snapshot":  # the cut-short commit ended inside snapshot 5
        cut, marks = [p1], [(1, _page(5, "c2"))]
    else:  # … or past it, in the catch-up
        cut, marks = [p1, p2, w6], [(1, _page(5, "c2")), (2, _done(5)), (3, Checkpoint(6, "catchup"))]
    with pytest.raises(OSError):
        t.commit_marked(cut, marks, marks[-1][1])

    r = _target(tmp_path)
    assert r.load() == Checkpoint(0, "snapshot", {})
    # the replay reads snapshot 8 (the changes at 6, 7 and 8 are in it), then catches up from 8
    q1 = _win(r, 8, ev(8, Op.READ, 1, row(1, name="u8")), ev(8, Op.READ, 2, row(2, name="u7")))
    q2 = _win(r, 8, ev(8, Op.READ, 3, row(3, name="s5")))
    w9 = _win(r, 9, ev(9, Op.UPDATE, 1, row(1, name="u9")))
    marks = [(1, _page(8, "c2")), (2, _done(8)), (3, Checkpoint(9, "catchup"))]
    r.commit_marked([q1], marks[:1], marks[0][1])  # the replay's commits are smaller
    r.commit_marked([q2, w9], [(1, marks[1][1]), (2, marks[2][1])], marks[2][1])

    cur = current(tmp_path)
    assert {i: v["name"] for i, v in cur.items()} == {1: "u9", 2: "u7", 3: "s5"}
    ch = _named(tmp_path)
    last_t = max(i for i, c in enumerate(ch) if c[1] == "t")
    # after the last restart marker: snapshot 8's rows and the catch-up, every change once, no gap
    assert [c[1:] for c in ch[last_t + 1 :]] == [
        ("r", 8, 1, "u8"),
        ("r", 8, 2, "u7"),
        ("r", 8, 3, "s5"),
        ("u", 9, 1, "u9"),
    ]
    assert _target(tmp_path).load() == Checkpoint(9, "catchup")


def _cur(i: int) -> str:
    """A bootstrap server's ``after`` cursor of row ``i`` (see headrace.bootstrap._serve_snapshot)."""
    from headrace.bootstrap._serve_snapshot import encode_cursor

    return encode_cursor("shop.items", i.to_bytes(4, "big"), 1)


def test_a_table_ahead_inside_a_snapshot_paged_differently_skips_only_its_pages(tmp_path: Path) -> None:
    """The replay resumes the same snapshot, but rows changed in the store meanwhile, so pages end at other
    keys: pages ending at or before the table's page are skipped, the first one past it is applied (its
    rows the table held are in the change table twice, as ``r``); none is lost."""
    t = _target(tmp_path)
    t.load()
    t.commit([_win(t, 5, ev(5, Op.READ, 1, row(1)))], _page(5, _cur(1)))

    def die(*_: Any) -> None:
        raise OSError("killed")

    t._commit_log = die  # type: ignore[method-assign]
    cut = [_win(t, 5, ev(5, Op.READ, 2, row(2)), ev(5, Op.READ, 3, row(3))), _win(t, 5, ev(5, Op.READ, 4, row(4)))]
    with pytest.raises(OSError):
        t.commit_marked(cut, [(1, _page(5, _cur(3))), (2, _page(5, _cur(4)))], _page(5, _cur(4)))
    r = _target(tmp_path)
    assert r.load() == _page(5, _cur(1))
    # meanwhile 3 was deleted, 5 and 6 inserted: the replay's pages end at 2, at 5, then 6 (the last page)
    q = [
        _win(r, 5, ev(5, Op.READ, 2, row(2))),
        _win(r, 5, ev(5, Op.READ, 4, row(4)), ev(5, Op.READ, 5, row(5))),
        _win(r, 5, ev(5, Op.READ, 6, row(6))),
    ]
    r.commit_marked(q[:1], [(1, _page(5, _cur(2)))], _page(5, _cur(2)))  # skipped: the table holds it
    r.commit_marked(q[1:], [(1, _page(5, _cur(5))), (2, _done(5))], _done(5))
    assert sorted(current(tmp_path)) == [1, 2, 3, 4, 5, 6]  # 3's delete comes with the catch-up
    ids = sorted(c[3] for c in _named(tmp_path))
    assert ids == [1, 2, 3, 4, 4, 5, 6]  # 4 twice (its page was paged differently), 5 not lost


def test_compaction_keeps_the_content(tmp_path: Path) -> None:
    from headrace.sinks import compact_lake

    t = _target(tmp_path)
    t.load()
    for s in range(1, 13):
        t.commit([_win(t, s, ev(s, Op.INSERT, s % 5, row(s % 5, name=f"v{s}")))], Checkpoint(s))
    before_cur, before_ch = current(tmp_path), changes(tmp_path)
    files = len(deltalake.DeltaTable(str(tmp_path / "current" / "shop_items")).file_uris())
    out = compact_lake(LakeTarget(type="lake", uri=str(tmp_path), vacuum_retention_hours=0), "s1")
    assert len(deltalake.DeltaTable(str(tmp_path / "current" / "shop_items")).file_uris()) < files
    assert out["tables"] == 3 and out["files_removed"] > 0 and out["vacuumed"] > 0
    assert current(tmp_path) == before_cur and changes(tmp_path) == before_ch
    assert _target(tmp_path).load() == Checkpoint(12)  # compaction commits do not hide the checkpoint


def test_lake_config_errors_are_clear(tmp_path: Path) -> None:
    import subprocess
    import sys

    from support import write_config

    def run(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "headrace", *extra, "--config", str(cfg)]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    no_uri = write_config(tmp_path / "a.yaml", {"sink": {"relays": ["http://127.0.0.1:1"], "target": {"type": "lake"}}})
    r = run(no_uri, "sink")
    assert r.returncode == 2 and "sink.target.lake.uri" in r.stderr, r.stderr
    sql = {"type": "sql", "url": f"sqlite:///{tmp_path / 'r.db'}"}
    not_lake = write_config(tmp_path / "b.yaml", {"sink": {"relays": ["http://127.0.0.1:1"], "target": sql}})
    r = run(not_lake, "sink", "--compact")
    assert r.returncode == 2 and "type lake" in r.stderr, r.stderr
    lake = {"type": "lake", "uri": str(tmp_path / "lake")}
    ok = write_config(tmp_path / "c.yaml", {"sink": {"relays": ["http://127.0.0.1:1"], "target": lake}})
    r = run(ok, "sink", "--compact")  # nothing written yet: nothing to compact
    assert r.returncode == 0 and '"tables": 0' in r.stdout, r.stderr
    r = run(ok, "check", "--connect")
    assert "ok   sink.target.uri" in r.stdout, r.stdout
