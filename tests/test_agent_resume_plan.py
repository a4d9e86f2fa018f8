"""The agent's restart planner (sans-io): which files a stream opens on start, at which offsets.

Table-driven cases name each situation (renames, copytruncate, inode reuse, deletion while down,
several rotations while down); a property test replays generated histories of a log folder on a
model filesystem and checks that what the plan reads is the stream's bytes after the checkpoint, in
order, never an earlier byte, and all of them when nothing was deleted or truncated while down.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.agents._checkpoint import Cursor
from headrace.agents._fingerprint import fingerprint_of
from headrace.agents._resume_plan import MoveStep, OpenAt, ResumePlan, SeenFile, plan_moves, plan_resume
from headrace.agents._rotation import FileId

LOG = "/var/log/app/web.log"


def fid(ino: int) -> FileId:
    return FileId(1, ino)


def seen(name: str, ino: int, mtime: int, content: bytes = b"", fp_of: bytes | None = None) -> SeenFile:
    """A file as the shell reports it; ``fp_of`` is the content whose fingerprint it carries (if taken)."""
    return SeenFile(f"/var/log/app/{name}", fid(ino), len(content), mtime, fingerprint_of(fp_of) if fp_of else None)


CK = Cursor(seq=500, dev=1, ino=1, fpl=4, fp=fingerprint_of(b"w001")[1], off=120)
CK_FP = b"w001"

CASES: list[tuple[str, Cursor | None, SeenFile | None, list[SeenFile], set[FileId], ResumePlan]] = [
    (
        "new stream: the file at the path from 0",
        None,
        seen("web.log", 1, 5, b"abc"),
        [],
        set(),
        ResumePlan((OpenAt(LOG, fid(1), 0, True),)),
    ),
    ("new stream, nothing at the path yet", None, None, [seen("web.log.1", 2, 1)], set(), ResumePlan(())),
    (
        "checkpoint's file still at the path",
        CK,
        seen("web.log", 1, 9, b"x" * 200, CK_FP),
        [],
        set(),
        ResumePlan((OpenAt(LOG, fid(1), 120, True),)),
    ),
    (
        "renamed once while down: its rest, then the new file",
        CK,
        seen("web.log", 2, 20),
        [seen("web.log", 2, 20), seen("web.log.1", 1, 10, fp_of=CK_FP)],
        set(),
        ResumePlan((OpenAt(LOG + ".1", fid(1), 120, False, True), OpenAt(LOG, fid(2), 0, True))),
    ),
    (
        "rotated three times while down: oldest first by modification time, whatever the names",
        CK,
        seen("web.log", 4, 40),
        [
            seen("web.log.1", 3, 30),
            seen("web.log", 4, 40),
            seen("web.log.3", 1, 10, fp_of=CK_FP),
            seen("web.log.2", 2, 20),
            seen("other.log", 9, 25),  # not a rotated name of this stream
            seen("web.log.0", 8, 5),  # older than the checkpoint's file: read before it
        ],
        set(),
        ResumePlan(
            (
                OpenAt(LOG + ".3", fid(1), 120, False, True),
                OpenAt(LOG + ".2", fid(2), 0, False, True),
                OpenAt(LOG + ".1", fid(3), 0, False, True),
                OpenAt(LOG, fid(4), 0, True),
            )
        ),
    ),
    (
        "a rotated file already read to its end (released) is not read again",
        CK,
        seen("web.log", 3, 30),
        [seen("web.log.2", 1, 10, fp_of=CK_FP), seen("web.log.1", 2, 20)],
        {fid(2)},
        ResumePlan((OpenAt(LOG + ".2", fid(1), 120, False, True), OpenAt(LOG, fid(3), 0, True))),
    ),
    (
        "copytruncate while down: same inode at the path, other first bytes: lost, the path from 0",
        CK,
        seen("web.log", 1, 30, b"w900", b"w900"),
        [seen("web.log", 1, 30, b"w900", b"w900"), seen("web.log.1", 5, 20)],
        set(),
        ResumePlan((OpenAt(LOG, fid(1), 0, True),), lost=True),
    ),
    (
        "inode reuse: the checkpoint's inode now holds another file in the folder",
        CK,
        seen("web.log", 2, 30),
        [seen("web.log.1", 1, 20, fp_of=b"w777")],
        set(),
        ResumePlan((OpenAt(LOG, fid(2), 0, True),), lost=True),
    ),
    (
        "deleted while down: lost; rotated files after it cannot be ordered and are not read",
        CK,
        seen("web.log", 3, 30),
        [seen("web.log.1", 2, 20), seen("web.log", 3, 30)],
        set(),
        ResumePlan((OpenAt(LOG, fid(3), 0, True),), lost=True),
    ),
    (
        "rotated while down and nothing at the path yet",
        CK,
        None,
        [seen("web.log.1", 1, 10, fp_of=CK_FP)],
        set(),
        ResumePlan((OpenAt(LOG + ".1", fid(1), 120, False, True),)),
    ),
    (
        "a cursor without a file (dev and inode 0) is not reported lost",
        Cursor(seq=7),
        seen("web.log", 2, 20),
        [],
        set(),
        ResumePlan((OpenAt(LOG, fid(2), 0, True),)),
    ),
]


@pytest.mark.parametrize(
    ("checkpoint", "at_path", "folder", "released", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan_resume_table(
    checkpoint: Cursor | None,
    at_path: SeenFile | None,
    folder: list[SeenFile],
    released: set[FileId],
    expected: ResumePlan,
) -> None:
    assert plan_resume(LOG, checkpoint, at_path, folder, released) == expected


def test_start_at_end_and_already_tracked() -> None:
    at_path = seen("web.log", 1, 5, b"0123456789")
    assert plan_resume(LOG, None, at_path, [], start_at_end=True) == ResumePlan((OpenAt(LOG, fid(1), 10, True),))
    assert plan_resume(LOG, None, at_path, [], tracked={fid(1)}) == ResumePlan(())


def test_folder_is_not_listed_when_the_checkpoint_file_is_at_the_path() -> None:
    def folder() -> Iterator[SeenFile]:
        raise AssertionError("listed")
        yield

    at_path = seen("web.log", 1, 9, b"x" * 200, CK_FP)
    assert plan_resume(LOG, CK, at_path, folder()) == ResumePlan((OpenAt(LOG, fid(1), 120, True),))


def test_plan_moves_table() -> None:
    moves = [("/l/a.1", fid(1)), ("/l/b.1", fid(2)), ("/l/c.1", fid(3)), ("/l/watched.log", fid(4)), ("/l/d.1", fid(5))]
    moves.append(("/l/d.2", fid(5)))  # the same unseen file reported twice: queued once
    steps = plan_moves(moves, tracked={fid(2)}, released={fid(3)}, watched={"/l/watched.log"})
    assert steps == [
        MoveStep("/l/a.1", fid(1), unseen=True),
        MoveStep("/l/b.1", fid(2), unseen=False),
        MoveStep("/l/d.1", fid(5), unseen=True),
        MoveStep("/l/d.2", fid(5), unseen=False),
    ]


# -- generated histories -------------------------------------------------------------------------

FPB = 8  # the agent's fingerprint_bytes in the model


@dataclass
class _File:
    ino: int
    data: bytes
    mtime: int
    truncated: bool = False


@dataclass
class _Folder:
    """A log folder: the path ``web.log`` written by an application, rotated by a logrotate."""

    files: dict[str, _File] = field(default_factory=dict)
    t: int = 0
    next_ino: int = 1
    free: list[int] = field(default_factory=list)  # deleted inodes, reused first (inode reuse)
    lines: int = 0
    rotations: int = 0

    def _new_ino(self) -> int:
        if self.free:
            return self.free.pop(0)
        self.next_ino += 1
        return self.next_ino

    def apply(self, op: str, arg: int) -> None:
        self.t += 1
        cur = self.files.get("web.log")
        rotated = sorted(n for n in self.files if n != "web.log")
        if op == "write":
            for _ in range(arg % 3 + 1):
                self.lines += 1
                line = f"w{self.lines:03d}\n".encode()
                if cur is None:
                    cur = self.files["web.log"] = _File(self._new_ino(), b"", self.t)
                cur.data += line
                cur.mtime = self.t
        elif op == "rename" and cur is not None:
            self.rotations += 1
            self.files[f"web.log.{self.rotations}"] = self.files.pop("web.log")
        elif op == "copytruncate" and cur is not None:
            self.rotations += 1
            self.files[f"web.log.{self.rotations}"] = _File(self._new_ino(), cur.data, self.t)
            cur.data, cur.mtime, cur.truncated = b"", self.t, True
        elif op == "delete" and rotated:
            gone = self.files.pop(rotated[arg % len(rotated)])
            self.free.append(gone.ino)
        elif op == "delete_path" and cur is not None:
            self.free.append(self.files.pop("web.log").ino)

    def seen(self, name: str, c: Cursor) -> SeenFile:
        f = self.files[name]
        fp = fingerprint_of(f.data[: c.fpl]) if fid(f.ino) == FileId(c.dev, c.ino) else None
        return SeenFile(f"/var/log/app/{name}", fid(f.ino), len(f.data), f.mtime, fp)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "write", "rename", "copytruncate", "delete", "delete_path"]), st.integers(0, 9)
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(before=OPS, at=st.integers(0, 99), after=OPS, listing=st.randoms(use_true_random=False))
def test_plan_reads_the_stream_after_the_checkpoint_in_order(
    before: list[tuple[str, int]], at: int, after: list[tuple[str, int]], listing: object
) -> None:
    fs = _Folder()
    for op, arg in [("write", 0), *before]:
        fs.apply(op, arg)
    cur = fs.files.get("web.log")
    if cur is None or not cur.data:
        fs.apply("write", 0)
        cur = fs.files["web.log"]
    # The checkpoint: a line boundary in the file at the path, fingerprinted as the tailer does.
    lines = cur.data.splitlines(keepends=True)
    k = at % len(lines) + 1
    off = len(b"".join(lines[:k]))
    fpl = min(FPB, len(cur.data))
    c = Cursor(seq=off, dev=1, ino=cur.ino, fpl=fpl, fp=fingerprint_of(cur.data[:fpl])[1], off=off)
    last_acked = int(lines[k - 1][1:4])
    ck_file = cur
    ck_file.truncated = False
    for op, arg in after:
        fs.apply(op, arg)

    names = list(fs.files)
    listing.shuffle(names)  # type: ignore[attr-defined]
    at_path = fs.seen("web.log", c) if "web.log" in fs.files else None
    plan = plan_resume(LOG, c, at_path, [fs.seen(n, c) for n in names])

    read: list[int] = []
    for o in plan.files:
        f = fs.files[o.path.rsplit("/", 1)[1]]
        assert fid(f.ino) == o.fid
        read += [int(line[1:4]) for line in f.data[o.offset :].splitlines()]
    # Never a byte from before the checkpoint, never one twice, always in the order written.
    assert read == sorted(set(read)) and all(n > last_acked for n in read)
    assert [o.at_path for o in plan.files].count(True) <= 1 and all(o.at_path for o in plan.files[-1:] if at_path)
    # Lost exactly when the checkpoint's file was deleted (its inode maybe reused) or truncated while down.
    assert plan.lost == (ck_file.truncated or all(f is not ck_file for f in fs.files.values()))
    if not any(op in ("copytruncate", "delete", "delete_path") for op, _ in after):
        assert read == list(range(last_acked + 1, fs.lines + 1)) and not plan.lost
