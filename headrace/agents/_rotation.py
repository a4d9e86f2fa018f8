"""Which file of a stream to read, and when to move on: the rotation state machine (sans-io).

A *stream* is one watched path (``/var/log/app/web.log``). Over time several files hold that path:
rename rotation moves the file away and a new one appears; ``copytruncate`` keeps the file but cuts
it to 0; deletion unlinks it; a file may be recreated under the same name. The tracker keeps the
files of one stream in a queue, oldest first, and only the head is read, so the stream's bytes are
read in order and stream offsets stay contiguous.

Theory of operation. The shell reports what ``stat(path)`` shows (:meth:`StreamTracker.observe_path`)
and what ``fstat`` of the head's open descriptor shows (:meth:`StreamTracker.on_head_stat`); the
tracker answers with an :class:`Action`:

* a path now holding a file identity (device, inode) that is not tracked is a new file: it is queued
  behind the others and every older file is marked *gone from the path* (renamed or replaced);
* ``READ`` while the head has bytes past the read offset;
* ``TRUNCATED`` when the head is shorter than the read offset (copytruncate): the shell releases the
  held tail, and reading restarts at file offset 0 while stream offsets keep counting, so acked
  bytes are never sent again;
* at the end of a head that is gone from the path (renamed away, replaced, deleted): ``FINISH``
  once ``rotate_wait`` seconds passed since it left the path and since it last grew (a writer may
  still finish a line into a file that was just renamed), then the next file is read;
* at the end of the file at the path: ``FLUSH_PARTIAL`` once the file did not grow for
  ``partial_timeout`` seconds and a tail is held (an unterminated last line), else ``IDLE``;
* ``GIVE_UP`` when a deleted head could not be read to its end within ``deleted_release`` seconds
  (the spool is full because collectors are down): the descriptor is released so the disk space is
  freed; the unread rest is lost and reported.

Inode reuse cannot fool the running tracker: the agent holds every tracked file open, so its inode
cannot be reused; a later file with the same inode after a release is new. Across restarts the shell
checks the fingerprint of the first bytes as well (see :mod:`headrace.agents._resume_plan`). The
shell never changes a track's fields: it reports facts through the methods below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Action", "FileId", "FileTrack", "StreamTracker"]


@dataclass(frozen=True, slots=True)
class FileId:
    dev: int
    ino: int


class Action(enum.Enum):
    READ = "read"
    TRUNCATED = "truncated"
    FLUSH_PARTIAL = "flush_partial"
    FINISH = "finish"
    GIVE_UP = "give_up"
    IDLE = "idle"
    WAIT = "wait"  # gone from the path, waiting for rotate_wait before finishing


@dataclass(slots=True)
class FileTrack:
    """One file of a stream; ``read_off`` is the next byte to read."""

    fid: FileId
    read_off: int
    changed_at: float
    at_path: bool = True
    deleted: bool = False
    gone_at: float | None = None
    last_size: int = -1


class StreamTracker:
    """The files of one stream and the decision what to do next. Times are plain floats (injected clock)."""

    def __init__(self, rotate_wait: float = 1.0, partial_timeout: float = 5.0, deleted_release: float = 300.0) -> None:
        self.rotate_wait = rotate_wait
        self.partial_timeout = partial_timeout
        self.deleted_release = deleted_release
        self.files: list[FileTrack] = []

    @property
    def head(self) -> FileTrack | None:
        return self.files[0] if self.files else None

    def observe_path(self, fid: FileId | None, now: float) -> bool:
        """Record what the path holds now; True when it is a file not tracked yet (queue it with :meth:`add`)."""
        known = False
        for f in self.files:
            here = fid is not None and f.fid == fid
            if f.at_path and not here:
                f.at_path = False
                f.gone_at = now if f.gone_at is None else f.gone_at
            if here:
                known = True
        return fid is not None and not known

    def moved_away(self, fid: FileId, now: float) -> None:
        """A rename event says this tracked file left the path."""
        for f in self.files:
            if f.fid == fid and f.at_path:
                f.at_path = False
                f.gone_at = now

    def add(self, fid: FileId, read_off: int, now: float, *, before_path: bool = False) -> FileTrack:
        """Queue a new file behind the others (it is the one at the path now).

        With ``before_path``: a file that was renamed away from the path before the tracker ever saw
        it (known from a rename event, or found rotated on start: see :mod:`._resume_plan`); it goes
        just before the file at the path, which it preceded.
        """
        if before_path:
            track = FileTrack(fid=fid, read_off=read_off, changed_at=now, at_path=False, gone_at=now)
            at = next((i for i, f in enumerate(self.files) if f.at_path), len(self.files))
            self.files.insert(at, track)
            return track
        for f in self.files:
            if f.at_path:
                f.at_path = False
                f.gone_at = now
        track = FileTrack(fid=fid, read_off=read_off, changed_at=now)
        self.files.append(track)
        return track

    def on_head_stat(self, size: int, nlink: int, now: float, *, pending: int, blocked: bool) -> Action:
        """Decide what to do with the head file given its ``fstat`` and whether the spool is full."""
        h = self.files[0]
        if size != h.last_size:
            h.last_size = size
            h.changed_at = now
        if nlink == 0 and not h.deleted:
            h.deleted = True
            h.at_path = False
            h.gone_at = now if h.gone_at is None else h.gone_at
        if size < h.read_off:
            return Action.TRUNCATED
        gone = not h.at_path or h.deleted or len(self.files) > 1
        if size > h.read_off:
            if blocked and h.deleted and h.gone_at is not None and now - h.gone_at >= self.deleted_release:
                return Action.GIVE_UP
            return Action.READ
        if gone:
            return Action.FINISH if now - self._quiet_since(h) >= self.rotate_wait else Action.WAIT
        if pending and now - h.changed_at >= self.partial_timeout:
            return Action.FLUSH_PARTIAL
        return Action.IDLE

    def next_deadline(self, pending: int) -> float | None:
        """When the head needs a look even without a filesystem event (a timer), or None."""
        h = self.head
        if h is None:
            return None
        if not h.at_path or h.deleted or len(self.files) > 1:
            times = [self._quiet_since(h) + self.rotate_wait]
            if h.deleted and h.gone_at is not None:
                times.append(h.gone_at + self.deleted_release)
            return min(times)
        if pending:
            return h.changed_at + self.partial_timeout
        return None

    @staticmethod
    def _quiet_since(h: FileTrack) -> float:
        """Since when a file gone from the path neither grew nor moved: rotate_wait counts from there."""
        return max(h.changed_at, h.gone_at if h.gone_at is not None else h.changed_at)

    def consumed(self, nbytes: int) -> None:
        """``nbytes`` more of the head were read (the shell read them at ``head.read_off``)."""
        self.files[0].read_off += nbytes

    def truncated(self) -> None:
        """The head was cut (copytruncate): read it again from 0."""
        self.files[0].read_off = 0
        self.files[0].last_size = -1

    def pop_head(self) -> FileTrack:
        """The head is finished (or given up); the next file becomes the head."""
        return self.files.pop(0)
