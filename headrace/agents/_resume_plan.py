"""Which files a stream opens when the agent (re)starts, and at which offsets (sans-io).

The I/O shell (:mod:`headrace.agents._tailer`) reports what it sees — the file at the stream's path,
the files in its folder (path, device and inode, size, modification time, and the fingerprint of the
first ``checkpoint.fpl`` bytes of a file that has the checkpoint's identity), the files already read
to their end (*released*) — and :func:`plan_resume` answers with the files to open, oldest first.
:func:`plan_moves` does the same for renames away from the path that filesystem events reported.
Neither touches the filesystem, so both are tested with tables and generated histories
(``tests/test_agent_resume_plan.py``).

Rules of :func:`plan_resume` (the resume-state contract is in :mod:`headrace.agents._checkpoint`):

* no checkpoint: open the file at the path from 0, or from its end when the source says
  ``start: end`` and the source was never scanned before;
* the file at the path is the checkpoint's (same device and inode *and* fingerprint): read it on
  from the checkpoint's offset;
* else the checkpoint's file was rotated while the agent was down: the first file of the folder
  with its identity and fingerprint is read on from the checkpoint's offset, then the files rotated
  after it (named ``<name>.*``, not released, modified at or after it; oldest first), then the file
  now at the path from 0;
* else the checkpoint's file is gone (deleted, or its inode reused by another file: the fingerprint
  differs): it is reported *lost* and the file at the path is read from 0. Files rotated after a
  lost file cannot be ordered and are not read.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

from ._checkpoint import Cursor
from ._fingerprint import Fingerprint
from ._rotation import FileId

__all__ = ["MoveStep", "OpenAt", "ResumePlan", "SeenFile", "plan_moves", "plan_resume"]


@dataclass(frozen=True, slots=True)
class SeenFile:
    """One regular file as the shell saw it.

    ``fp`` is the fingerprint of its first ``checkpoint.fpl`` bytes; the shell takes it only for a
    file with the checkpoint's identity (None otherwise, or when it could not be read).
    """

    path: str
    fid: FileId
    size: int
    mtime_ns: int
    fp: Fingerprint | None = None


@dataclass(frozen=True, slots=True)
class OpenAt:
    """Open ``path`` (which must still hold ``fid``) and read it from ``offset``.

    ``at_path`` is False for a file rotated away from the stream's path; ``rotated`` says it was
    found rotated while the agent was down (counted and logged by the shell).
    """

    path: str
    fid: FileId
    offset: int
    at_path: bool
    rotated: bool = False


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """The files to open, oldest first, and whether the checkpoint's file was lost."""

    files: tuple[OpenAt, ...]
    lost: bool = False


def _matches(f: SeenFile, c: Cursor) -> bool:
    return f.fid == FileId(c.dev, c.ino) and f.fp == (c.fpl, c.fp)


def plan_resume(
    path: str,
    checkpoint: Cursor | None,
    at_path: SeenFile | None,
    folder: Iterable[SeenFile],
    released: Container[FileId] = frozenset(),
    *,
    start_at_end: bool = False,
    tracked: Container[FileId] = frozenset(),
) -> ResumePlan:
    """The files a stream opens on its first look (see the module docstring).

    ``at_path`` is the regular file at ``path`` (None when there is none); ``folder`` the regular
    files of its folder in listing order (it may include the one at the path; it is read only when
    the checkpoint's file is not at the path, so the shell may pass a lazy iterable);
    ``tracked`` the files the stream already holds (never planned twice).
    """
    if checkpoint is None:
        if at_path is None or at_path.fid in tracked:
            return ResumePlan(())
        return ResumePlan((OpenAt(path, at_path.fid, at_path.size if start_at_end else 0, True),))
    current = (OpenAt(path, at_path.fid, 0, True),) if at_path is not None else ()
    if at_path is not None and _matches(at_path, checkpoint):
        return ResumePlan((OpenAt(path, at_path.fid, checkpoint.off, True),))
    seen = list(folder)
    ref = next((f for f in seen if _matches(f, checkpoint)), None)
    if ref is None:
        return ResumePlan(current, lost=bool(checkpoint.dev or checkpoint.ino))
    first = OpenAt(ref.path, ref.fid, checkpoint.off, False, rotated=True)
    after = _rotated_after(path, ref, at_path.fid if at_path else None, seen, released)
    return ResumePlan((first, *after, *current))


def _rotated_after(
    path: str, ref: SeenFile, current: FileId | None, seen: Sequence[SeenFile], released: Container[FileId]
) -> list[OpenAt]:
    """Rotated siblings (``<name>.*``) written after the checkpoint's file ``ref``, oldest first.

    While the agent was down, the file at the checkpoint may have been rotated more than once; the
    files in between are found by name prefix and ordered by last modification time.
    """
    base = os.path.basename(path) + "."
    found = sorted(
        (f.mtime_ns, f.path, f.fid)
        for f in seen
        if os.path.basename(f.path).startswith(base)
        and f.path not in (ref.path, path)
        and f.fid not in (current, ref.fid)
        and f.fid not in released
        and f.mtime_ns >= ref.mtime_ns
    )
    return [OpenAt(p, fid, 0, False, rotated=True) for _, p, fid in found]


@dataclass(frozen=True, slots=True)
class MoveStep:
    """One rename away from the stream's path, decided: ``unseen`` files are queued (located and
    opened by the shell, before the file at the path); the others are tracked files that left it."""

    dest: str
    fid: FileId
    unseen: bool


def plan_moves(
    moves: Iterable[tuple[str, FileId]],
    tracked: Container[FileId],
    released: Container[FileId],
    watched: Container[str],
) -> list[MoveStep]:
    """Which renames away from the path (``(new path, identity)``, oldest first) matter, in order.

    A tracked file that was renamed away is marked gone (later unseen ones queue after it); a file
    read to its end before (released) is skipped; so is one renamed to a path a source watches
    (it is read there, as its own stream); any other is a file the stream never saw, to be read.
    """
    steps: list[MoveStep] = []
    queued: set[FileId] = set()
    for dest, fid in moves:
        if fid in tracked or fid in queued:
            steps.append(MoveStep(dest, fid, unseen=False))
        elif fid not in released and dest not in watched:
            steps.append(MoveStep(dest, fid, unseen=True))
            queued.add(fid)
    return steps
