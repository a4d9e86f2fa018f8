"""The agent's sans-io cores: record boundaries (chunker) and the rotation state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from headrace.agents._chunker import Chunker
from headrace.agents._discover import stream_name
from headrace.agents._rotation import Action, FileId, StreamTracker
from headrace.errors import InvalidInput


def test_lines_are_cut_at_newlines_and_the_tail_is_held() -> None:
    c = Chunker()
    assert c.feed(b"a\nb") == b"a\n"
    assert c.pending == 1
    assert c.feed(b"c\nd\n") == b"bc\nd\n"
    assert c.feed(b"tail") == b"" and c.flush() == b"tail" and c.pending == 0


@given(st.lists(st.binary(max_size=50), max_size=30))
def test_any_split_yields_the_same_bytes_on_line_boundaries(blocks: list[bytes]) -> None:
    c = Chunker()
    out = [c.feed(b) for b in blocks]
    assert all(o == b"" or o.endswith(b"\n") for o in out)
    assert b"".join(out) + c.flush() == b"".join(blocks)


def test_multiline_holds_the_last_record_until_the_next_start() -> None:
    c = Chunker(multiline_start=r"\d{4}-")
    text = b"2024-a\n  at x\n  at y\n2024-b\n  at z\n"
    assert c.feed(text) == b"2024-a\n  at x\n  at y\n"
    assert c.feed(b"  at w\n") == b""
    assert c.feed(b"2025-c\n") == b"2024-b\n  at z\n  at w\n"
    assert c.flush() == b"2025-c\n"


@given(st.lists(st.sampled_from([b"S1\n", b" c\n", b"S2 x\n", b" more", b"\n"]), max_size=40), st.integers(1, 7))
def test_multiline_records_never_split(parts: list[bytes], step: int) -> None:
    data = b"".join(parts)
    c = Chunker(multiline_start="S")
    out = [c.feed(data[i : i + step]) for i in range(0, len(data), step)]
    for o in out:
        if o:  # every emitted piece ends where the next record starts
            assert o.endswith(b"\n")
    assert b"".join(out) + c.flush() == data


def test_an_overlong_record_is_released_split() -> None:
    c = Chunker(max_record_bytes=10)
    assert c.feed(b"x" * 11) == b"x" * 11 and c.pending == 0


F1, F2, F3 = FileId(1, 10), FileId(1, 11), FileId(1, 12)


def tracker() -> StreamTracker:
    return StreamTracker(rotate_wait=1.0, partial_timeout=5.0, deleted_release=60.0)


def test_rename_rotation_reads_old_to_end_then_new() -> None:
    t = tracker()
    assert t.observe_path(F1, 0.0)
    t.add(F1, 0, 0.0)
    assert t.on_head_stat(100, 1, 0.0, pending=0, blocked=False) is Action.READ
    t.files[0].read_off = 100
    assert t.on_head_stat(100, 1, 0.1, pending=0, blocked=False) is Action.IDLE
    # renamed away long after its last write, a new file at the path: wait rotate_wait from the rename
    assert t.observe_path(F2, 10.0)
    t.add(F2, 0, 10.0)
    assert not t.files[0].at_path and t.files[1].at_path
    assert t.on_head_stat(100, 1, 10.0, pending=0, blocked=False) is Action.WAIT
    assert t.on_head_stat(150, 1, 10.5, pending=0, blocked=False) is Action.READ  # late writes to the old file
    t.files[0].read_off = 150
    assert t.on_head_stat(150, 1, 11.0, pending=0, blocked=False) is Action.WAIT
    assert t.next_deadline(0) == 11.5
    assert t.on_head_stat(150, 1, 11.5, pending=0, blocked=False) is Action.FINISH
    t.pop_head()
    assert t.head is not None and t.head.fid == F2
    assert not t.observe_path(F2, 2.0)  # same file still at the path: nothing new


def test_copytruncate_restarts_at_zero() -> None:
    t = tracker()
    t.add(F1, 0, 0.0)
    t.files[0].read_off = 500
    assert t.on_head_stat(20, 1, 1.0, pending=0, blocked=False) is Action.TRUNCATED
    t.truncated()
    assert t.files[0].read_off == 0
    assert t.on_head_stat(20, 1, 1.0, pending=0, blocked=False) is Action.READ


def test_deleted_file_is_read_to_end_then_released() -> None:
    t = tracker()
    t.add(F1, 0, 0.0)
    t.observe_path(None, 1.0)
    assert t.on_head_stat(100, 0, 1.0, pending=0, blocked=False) is Action.READ
    t.files[0].read_off = 100
    assert t.on_head_stat(100, 0, 1.5, pending=0, blocked=False) is Action.WAIT
    assert t.on_head_stat(100, 0, 2.0, pending=0, blocked=False) is Action.FINISH


def test_deleted_file_is_given_up_after_the_limit_while_the_spool_is_full() -> None:
    t = tracker()
    t.add(F1, 0, 0.0)
    assert t.on_head_stat(100, 0, 1.0, pending=0, blocked=True) is Action.READ  # the shell waits for room
    assert t.next_deadline(0) == 2.0  # rotate_wait timer, then the release limit
    assert t.on_head_stat(100, 0, 61.0, pending=0, blocked=True) is Action.GIVE_UP
    assert t.on_head_stat(100, 0, 61.0, pending=0, blocked=False) is Action.READ  # room again: keep reading


def test_recreated_file_and_partial_line_timeout() -> None:
    t = tracker()
    t.add(F1, 0, 0.0)
    t.files[0].read_off = 10
    assert t.on_head_stat(10, 1, 0.0, pending=3, blocked=False) is Action.IDLE
    assert t.next_deadline(3) == 5.0
    assert t.on_head_stat(10, 1, 5.0, pending=3, blocked=False) is Action.FLUSH_PARTIAL
    # deleted and recreated under the same name (a new inode, possibly a reused one of another file)
    assert t.observe_path(F3, 6.0)
    t.add(F3, 0, 6.0)
    assert [f.fid for f in t.files] == [F1, F3] and not t.files[0].at_path


def test_stream_names_are_safe() -> None:
    from headrace._names import check_stream

    for p in ["/var/log/app.log", "/tmp/x y/.hidden/a:b.log", "/a/../b/c.log", "/-x/+y"]:
        name = stream_name(p)
        try:
            check_stream(name)
        except InvalidInput as exc:  # pragma: no cover - the assertion message
            raise AssertionError(f"{p} -> {name}") from exc
    assert stream_name("/var/log/app.log") == "var/log/app.log"


def test_files_renamed_away_unseen_go_before_the_file_at_the_path() -> None:
    t = tracker()
    t.add(F1, 0, 0.0)
    F4 = FileId(1, 13)
    t.moved_away(F1, 1.0)  # rename event: F1 left the path
    t.add(F2, 0, 1.0, before_path=True)  # F2 was at the path and renamed away before any stat
    assert t.observe_path(F3, 1.0)
    t.add(F3, 0, 1.0)
    t.add(F4, 0, 1.0, before_path=True)  # a late rename event: still before the file at the path
    assert [f.fid for f in t.files] == [F1, F2, F4, F3]
    assert [f.at_path for f in t.files] == [False, False, False, True]
