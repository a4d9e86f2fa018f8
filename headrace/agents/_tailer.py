"""The reader: discovered files → record-aligned chunks in the spool (the agent's I/O shell).

One thread runs :meth:`Tailer.run`. It sleeps until a filesystem event, a timer of a stream's
rotation state machine (:mod:`headrace.agents._rotation`), the rescan (every ``verify_seconds``
while filesystem events can be trusted, every ``rescan_seconds`` otherwise, at once when events were
lost: see :mod:`headrace.agents._discover`), or room in a full spool wakes it; then it polls the
streams that need a look: ``stat`` the path, ``fstat`` the open head file, read large blocks
(``read_block_bytes``) with ``pread``, cut them at record boundaries (:mod:`headrace.agents._chunker`)
and append each block's records as one chunk to the spool, with the cursor of the chunk's end. One
``fsync`` of the spool per pass (group commit). An idle agent with working filesystem events sleeps
(no timer) until the next ``verify_seconds`` rescan.

Streams and offsets: a stream is a watched path; its offsets (``seq_start``/``seq_end``) count the
bytes read from every file that held the path, in order, since the agent first saw the stream. A
rotated file's bytes come first, then the new file's; after a copytruncate the file is read again
from 0 and the stream offset keeps growing. So ``(source, stream, seq_end)`` never repeats for
different bytes.

Resume-state contract: see :mod:`headrace.agents._checkpoint`. On start each stream resumes at the
newer of its acked checkpoint and its newest spooled chunk. The file there is found by device and
inode *and* a fingerprint of its first bytes (hash of ``fpl`` bytes, so inode reuse by another file
is detected), at the path or, when it was rotated while the agent was down, in the same folder; its
rest is read first, then the file now at the path from 0. A file that cannot be found is reported as
lost (``headrace_agent_lost_files_total``). Files rotated away *and* gone while the agent was down,
beyond the one at the checkpoint, cannot be recovered.

Backpressure: a stream is read only while the spool has room; a full spool leaves the rest in the
file (nothing dropped) until acks free room and wake the reader. The one exception is a deleted file
held open longer than ``deleted_release_seconds`` while the spool is full: it is released to free
its disk space (reported, counted).
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client import Counter, Gauge

from .._chunk import Chunk, validate_chunk
from .._logging import get_logger
from .._spool import Spool, SpoolDiskFull, SpoolEntry, SpoolFull
from ..errors import InvalidInput
from ._checkpoint import Checkpoints, Cursor, StreamCheckpoint
from ._chunker import Chunker
from ._config import AgentConfig, SourceConfig
from ._discover import expand, stream_name
from ._fingerprint import fingerprint, fingerprint_path
from ._resume_plan import SeenFile, plan_moves, plan_resume
from ._rotation import Action, FileId, FileTrack, StreamTracker
from ._stream_status import StreamStatus

__all__ = ["Tailer"]

log = get_logger("agent.tailer")

READ_BYTES = Counter("headrace_agent_read_bytes_total", "Bytes read from tailed files")
SPOOLED_CHUNKS = Counter("headrace_agent_spooled_chunks_total", "Chunks appended to the spool")
ROTATIONS = Counter("headrace_agent_file_events_total", "File lifecycle events", ["kind"])
LOST_BYTES = Counter("headrace_agent_lost_bytes_total", "Bytes given up (deleted file released while spool full)")
LOST_FILES = Counter("headrace_agent_lost_files_total", "Checkpointed files not found again on start")
STREAMS = Gauge("headrace_agent_streams", "Streams being tailed")
UNREADABLE = Gauge("headrace_agent_unreadable_files", "Files a source matches that the agent cannot open")
REFUSED = Counter("headrace_agent_refused_files_total", "Files never tailed: their chunks could not be valid")
BLOCKED = Gauge("headrace_agent_blocked_streams", "Streams waiting for spool room (backpressure)")

_OVERHEAD = 1024  # spool record header + chunk header + cursor, generously
_POLL_BUDGET = 16 << 20  # bytes per stream per pass, for fairness between streams


@dataclass(slots=True)
class _Open:
    fd: int
    done_off: int  # file offset just after the last record handed to the spool
    chunker: Chunker  # per file: bytes held back belong to this file
    fpl: int = 0
    fp: str = ""


@dataclass
class _Stream:
    name: str
    path: str
    source: SourceConfig
    tracker: StreamTracker
    seq: int = 0  # stream offset of the next chunk
    files: dict[FileId, _Open] = field(default_factory=dict)
    resume: Cursor | None = None
    first_scan: bool = False  # found by the first scan of a never-seen source (start: end applies)
    started: bool = False
    truncations: int = 0
    rotations: int = 0


class _StatusSnap(NamedTuple):
    """What :meth:`Tailer.status` copies of one stream under the lock (plain values, no system calls;
    a tuple: cheap to build, the lock is held while 1,000 of them are)."""

    name: str
    path: str
    source: SourceConfig
    seq: int
    files: list[tuple[int, FileId, int, bool]]  # (fd, identity, read offset, at the path) per tracked file
    pending: int
    files_open: int
    blocked: bool
    error: str | None
    truncations: int
    rotations: int


class Tailer:
    """Discovers, reads and spools every stream of the configured sources (see the module docstring)."""

    def __init__(
        self,
        cfg: AgentConfig,
        spool: Spool,
        checkpoints: Checkpoints,
        sources: Iterable[SourceConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.checkpoints = checkpoints
        self.clock = clock
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.sources: dict[str, SourceConfig] = {s.id: s for s in sources}
        self.streams: dict[str, _Stream] = {}
        self.by_path: dict[str, str] = {}
        self.dirty: set[str] = set()
        self.blocked: set[str] = set()
        self.deadlines: dict[str, float] = {}
        self.scan_needed = True
        self._save_needed = False
        self._room_freed = False
        self._spooled: dict[tuple[str, str], bytes] | None = None  # spool.last_cursors(), per scan
        # Files read to their end, by identity: a glob that also matches rotated names must not
        # start them again as new streams. Bounded; oldest forgotten first.
        self.released: dict[FileId, Cursor] = {}
        # Renames away from watched paths, from events: path -> [(new path, identity)], oldest first.
        self.moves: dict[str, list[tuple[str, FileId]]] = {}
        # Paths whose chunks could never pass the collector's check (stream name, tags): never read.
        self.refused: dict[str, tuple[SourceConfig, str]] = {}
        #: path -> why it could not be opened (permission denied, …); cleared when it opens
        self.unreadable: dict[str, str] = {}
        #: set by the agent: why a file a source matched may not be opened (outside allowed_paths), or None
        self.confine: Callable[[SourceConfig, str], str | None] | None = None
        #: set by the agent: whether filesystem events can be trusted now (then rescans are rare)
        self.events_reliable: Callable[[], bool] = lambda: False
        self._rescan_now = False

    # -- control ----------------------------------------------------------------------------------

    def add_source(self, src: SourceConfig) -> None:
        with self.lock:
            self.sources[src.id] = src
            self.scan_needed = True
        self.wake.set()

    def remove_source(self, source_id: str) -> bool:
        with self.lock:
            if self.sources.pop(source_id, None) is None:
                return False
            for st in [s for s in self.streams.values() if s.source.id == source_id]:
                self._drop_stream(st)
            self.refused = {p: v for p, v in self.refused.items() if v[0].id != source_id}
        return True

    def patterns(self) -> list[str]:
        with self.lock:
            return [s.path for s in self.sources.values()]

    def on_paths(self, paths: list[str]) -> None:
        """Filesystem-event hint: these paths changed (the truth is still a stat)."""
        with self.lock:
            for p in paths:
                name = self.by_path.get(p)
                if name is not None:
                    self.dirty.add(name)
                elif self._watched(p):
                    self.scan_needed = True
        self.wake.set()

    def rescan_soon(self) -> None:
        """Events may have been missed (queue overflow, a watched folder gone, the watcher restarted):
        glob every source and look at every stream on the next pass."""
        with self.lock:
            self._rescan_now = True
        self.wake.set()

    def on_moved(self, src: str, dest: str) -> None:
        """Filesystem-event hint: ``src`` was renamed to ``dest``. Remembered (with the file's identity)
        so a file renamed away from a watched path before the reader ever looked at it is still read."""
        with self.lock:
            watched = self._watched(src)
        if not watched:
            return
        found = self._stat_path(dest)
        if found is None:
            return
        with self.lock:
            moves = self.moves.setdefault(src, [])
            moves.append((dest, found[0]))
            del moves[:-100]
            name = self.by_path.get(src)
            if name is not None:
                self.dirty.add(name)
        self.wake.set()

    def _watched(self, path: str) -> bool:
        """True for a path that is a stream or that a source's glob matches."""
        globs = (os.path.abspath(s.path) for s in self.sources.values())
        return path in self.by_path or any(fnmatch.fnmatch(path, g) for g in globs)

    def _take_moves(self, st: _Stream, now: float) -> None:
        """Queue files renamed away from the stream's path that the stream never saw (oldest first);
        which renames matter is decided by :func:`plan_moves`."""
        moves = self.moves.pop(st.path, [])
        watched = {dest for dest, _ in moves if self._watched(dest)}
        for step in plan_moves(moves, st.files, self.released, watched):
            if not step.unseen:  # a file the stream knows was renamed away: later unseen ones come after it
                st.tracker.moved_away(step.fid, now)
                continue
            path = self._locate(step.dest, step.fid)
            if path and self._open(st, path, step.fid, 0, now, before_path=True):
                ROTATIONS.labels("rotated_unseen").inc()
                log.info("file_rotated_unseen", stream=st.name, file=path, inode=step.fid.ino)

    def _locate(self, dest: str, fid: FileId) -> str:
        """Where the file renamed to ``dest`` is now: there, or (renamed again since) in the same folder; "" if gone."""
        here = self._stat_path(dest)
        if here is not None and here[0] == fid:
            return dest
        folder = os.path.dirname(dest)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return ""
        for n in names:
            found = self._stat_path(os.path.join(folder, n))
            if found is not None and found[0] == fid:
                return os.path.join(folder, n)
        return ""

    def on_acked(self, entries: list[SpoolEntry]) -> None:
        """Record acked cursors (call before the spool releases ``entries``) and save the checkpoint file.

        Runs in the shipper's thread; it does not wait for the reader's lock.
        """
        last: dict[str, Cursor] = {}
        for e in entries:
            last[e.chunk.stream] = Cursor.decode(e.cursor)
        self.checkpoints.advance(last)
        self.checkpoints.save()
        self._room_freed = True
        self.wake.set()

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Read until ``stop`` is set; then the spool is synced and the thread returns."""
        next_rescan = 0.0
        while not stop.is_set():
            now = self.clock()
            with self.lock:
                due = min([next_rescan, *self.deadlines.values()])
                busy = bool(self.dirty) or self.scan_needed or (self._room_freed and bool(self.blocked))
                busy = busy or self._rescan_now
            if not busy and due > now:
                self.wake.wait(due - now)
                self.wake.clear()
                if stop.is_set():
                    break
                now = self.clock()
            rescan = now >= next_rescan or self._rescan_now
            # Outside the lock: it may (re)schedule watches. Files that could not be opened are
            # retried at the short interval (a permission can change without an event: group membership).
            reliable = rescan and not self.unreadable and self.events_reliable()
            with self.lock:
                if self._room_freed:
                    self._room_freed = False
                    self.dirty |= self.blocked
                if rescan:
                    self._rescan_now = False
                    self.scan_needed = True
                    next_rescan = now + (self.cfg.verify_seconds if reliable else self.cfg.rescan_seconds)
                    self.dirty |= set(self.streams)
                if self.scan_needed:
                    self._scan()
                for name, t in list(self.deadlines.items()):
                    if t <= now:
                        self.dirty.add(name)
                        del self.deadlines[name]
                todo, self.dirty = self.dirty, set()
                for name in sorted(todo):
                    st = self.streams.get(name)
                    if st is not None and not stop.is_set():
                        self._poll(st)
                # Blocked streams are not polled again until an ack frees room (on_acked wakes us).
                BLOCKED.set(len(self.blocked))
                if self._save_needed:
                    self._save_needed = False
                    self.checkpoints.save()
            self.spool.sync()
        self.spool.sync()

    # -- discovery --------------------------------------------------------------------------------

    def _scan(self) -> None:
        self.scan_needed = False
        self._spooled = None
        new_seen = False
        self._save_needed = False
        claimed = {fid for st in self.streams.values() for fid in st.files}
        for src in list(self.sources.values()):
            first = src.id not in self.checkpoints.seen_sources
            for path in expand(src.path):
                if path not in self.by_path and not self._confined(src, path) and not self._claimed(path, claimed):
                    self._new_stream(path, src, first_scan=first)
            # Checkpointed streams whose path is gone right now may still have a rotated file to finish.
            with self.checkpoints.lock:
                known = list(self.checkpoints.streams.items())
            for name, cp in known:
                pending = cp.path and name not in self.streams and cp.path not in self.by_path
                if pending and fnmatch.fnmatch(cp.path, os.path.abspath(src.path)):
                    self._new_stream(cp.path, src, first_scan=False)
            if first:
                with self.checkpoints.lock:
                    self.checkpoints.seen_sources.add(src.id)
                new_seen = True
        STREAMS.set(len(self.streams))
        if new_seen or self._save_needed:
            # Before anything of a new stream is spooled, so a restart knows its path.
            self._save_needed = False
            self.checkpoints.save()

    def _new_stream(self, path: str, src: SourceConfig, *, first_scan: bool) -> None:
        name = stream_name(path)
        if name in self.streams or path in self.refused or self._confined(src, path):
            return
        try:  # the check every chunk of the stream gets when it leaves the spool, before any is read
            validate_chunk(Chunk(self.cfg.name, name, src.data_type, 0, 0, b"", dict(src.tags)), 1)
        except InvalidInput as exc:
            self.refused[path] = (src, f"{exc.reason}: {exc.detail}")
            REFUSED.inc()
            log.error("file_refused", path=path, stream=name, source=src.id, reason=exc.reason, detail=exc.detail)
            return
        cfg = self.cfg
        st = _Stream(
            name=name,
            path=path,
            source=src,
            tracker=StreamTracker(cfg.rotate_wait_seconds, cfg.partial_line_seconds, cfg.deleted_release_seconds),
            first_scan=first_scan,
        )
        cp = self.checkpoints.streams.get(name)
        candidates = [c for c in (cp.acked if cp else None, self._resume_from_spool(name)) if c is not None]
        if candidates:
            st.resume = max(candidates, key=lambda c: c.seq)
            st.seq = st.resume.seq
        if cp is None:
            with self.checkpoints.lock:
                self.checkpoints.streams[name] = StreamCheckpoint(path, src.data_type)
            self._save_needed = True
        self.streams[name] = st
        self.by_path[path] = name
        self.dirty.add(name)
        log.info("stream_found", stream=name, path=path, data_type=src.data_type, resume=st.seq)

    def _confined(self, src: SourceConfig, path: str) -> bool:
        """True (and the path refused, never opened) when ``confine`` says the file is out of bounds."""
        if path in self.refused:
            return True
        why = self.confine(src, path) if self.confine is not None else None
        if why is None:
            return False
        self.refused[path] = (src, f"outside_allowed_paths: {why}")
        REFUSED.inc()
        log.error("file_refused", path=path, source=src.id, reason="outside_allowed_paths", detail=why)
        return True

    def _claimed(self, path: str, claimed: set[FileId]) -> bool:
        """True for a file another stream reads or has read (a rotated name the glob also matches)."""
        found = self._stat_path(path)
        if found is None:
            return True
        fid = found[0]
        if fid in claimed:
            return True
        prior = self.released.get(fid)
        return prior is not None and fingerprint_path(path, prior.fpl) == (prior.fpl, prior.fp)

    def _resume_from_spool(self, name: str) -> Cursor | None:
        if self._spooled is None:  # fresh for each scan: a source removed and added back resumes right
            self._spooled = self.spool.last_cursors()
        raw = self._spooled.get((self.cfg.name, name))
        return Cursor.decode(raw) if raw else None

    def _drop_stream(self, st: _Stream) -> None:
        for of in st.files.values():
            os.close(of.fd)
        st.files.clear()
        self.streams.pop(st.name, None)
        self.by_path.pop(st.path, None)
        self.dirty.discard(st.name)
        self.blocked.discard(st.name)
        self.deadlines.pop(st.name, None)
        STREAMS.set(len(self.streams))

    # -- reading one stream -----------------------------------------------------------------------

    def _stat_path(self, path: str) -> tuple[FileId, os.stat_result] | None:
        try:
            s = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(s.st_mode):
            return None
        return FileId(s.st_dev, s.st_ino), s

    def _open(
        self, st: _Stream, path: str, fid: FileId, read_off: int, now: float, *, before_path: bool = False
    ) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            why = exc.strerror or str(exc)
            if self.unreadable.get(path) != why:  # said once per path and reason, not every pass
                log.warning("open_failed", path=path, error=why)
            self.unreadable[path] = why
            UNREADABLE.set(len(self.unreadable))
            return False
        if self.unreadable.pop(path, None) is not None:
            log.info("open_recovered", path=path)
            UNREADABLE.set(len(self.unreadable))
        s = os.fstat(fd)
        if FileId(s.st_dev, s.st_ino) != fid:  # replaced between stat and open: look again next pass
            os.close(fd)
            self.dirty.add(st.name)
            return False
        fpl, fp = fingerprint(fd, self.cfg.fingerprint_bytes)
        st.files[fid] = _Open(fd, read_off, Chunker(st.source.multiline_start, self.cfg.max_record_bytes), fpl, fp)
        st.tracker.add(fid, read_off, now, before_path=before_path)
        return True

    def _start(self, st: _Stream, at_path: tuple[FileId, os.stat_result] | None, now: float) -> None:
        """First look at a stream: resume at its cursor, or start per the source's ``start``
        (the files to open are planned by :func:`plan_resume`; this opens them)."""
        st.started = True
        c, st.resume = st.resume, None
        start_at_end = c is None and st.first_scan and st.source.start == "end"
        if c is None and not start_at_end:
            self._take_moves(st, now)
        plan = plan_resume(
            st.path,
            c,
            self._seen(st.path, at_path, c),
            self._folder(st.path, c),
            self.released,
            start_at_end=start_at_end,
            tracked=st.files,
        )
        if plan.lost:
            assert c is not None
            LOST_FILES.inc()
            log.warning("checkpointed_file_gone", stream=st.name, path=st.path, offset=c.off)
        for f in plan.files:
            if not self._open(st, f.path, f.fid, f.offset, now, before_path=not f.at_path):
                continue
            if f.rotated:
                ROTATIONS.labels("rotated_while_down").inc()
                log.info("rotated_while_down", stream=st.name, file=f.path, offset=f.offset)
            if c is None and f.offset:
                # Remember the starting point, so a restart does not read the skipped part.
                of = st.files[f.fid]
                self.checkpoints.advance({st.name: Cursor(0, f.fid.dev, f.fid.ino, of.fpl, of.fp, f.offset)})
                self._save_needed = True

    @staticmethod
    def _seen(path: str, found: tuple[FileId, os.stat_result] | None, c: Cursor | None) -> SeenFile | None:
        """What the shell knows of one file for the planner (its fingerprint only when it may be ``c``'s)."""
        if found is None:
            return None
        fid, s = found
        fp = fingerprint_path(path, c.fpl) if c is not None and fid == FileId(c.dev, c.ino) else None
        return SeenFile(path, fid, s.st_size, s.st_mtime_ns, fp)

    def _folder(self, path: str, c: Cursor | None) -> Iterator[SeenFile]:
        """The regular files in the stream's folder, listed only when the planner asks (lazily)."""
        folder = os.path.dirname(path)
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for n in names:
            p = os.path.join(folder, n)
            seen = self._seen(p, self._stat_path(p), c)
            if seen is not None:
                yield seen

    def _poll(self, st: _Stream) -> None:
        now = self.clock()
        at_path = self._stat_path(st.path)
        if not st.started:
            self._start(st, at_path, now)
        else:
            if st.path in self.moves:
                self._take_moves(st, now)
            self._observe(st, at_path, now)
        self._read(st)

    def _observe(self, st: _Stream, at_path: tuple[FileId, os.stat_result] | None, now: float) -> None:
        if st.tracker.observe_path(at_path[0] if at_path else None, now):
            assert at_path is not None
            ROTATIONS.labels("new_file").inc()
            st.rotations += 1
            log.info("file_new", stream=st.name, path=st.path, inode=at_path[0].ino)
            self._open(st, st.path, at_path[0], 0, now)

    def _read(self, st: _Stream) -> None:
        now = self.clock()
        self.blocked.discard(st.name)
        budget = _POLL_BUDGET
        while (h := st.tracker.head) is not None:
            of = st.files[h.fid]
            s = os.fstat(of.fd)
            ch = of.chunker
            room = self.spool.room() - ch.pending - 2 * _OVERHEAD
            act = st.tracker.on_head_stat(s.st_size, s.st_nlink, now, pending=ch.pending, blocked=room <= 0)
            if act is Action.READ:
                if room <= 0:
                    self.blocked.add(st.name)
                    break
                if budget <= 0:
                    self.dirty.add(st.name)
                    break
                n = min(self.cfg.read_block_bytes, room, s.st_size - h.read_off)
                data = os.pread(of.fd, n, h.read_off)
                if not data:
                    break
                st.tracker.consumed(len(data))
                budget -= len(data)
                READ_BYTES.inc(len(data))
                self._emit(st, h, of, ch.feed(data))
                continue
            if act in (Action.TRUNCATED, Action.FINISH, Action.FLUSH_PARTIAL) and ch.pending:
                if self.spool.room() < ch.pending + _OVERHEAD:
                    self.blocked.add(st.name)
                    break
                self._emit(st, h, of, ch.flush())
            if act is Action.TRUNCATED:
                ROTATIONS.labels("truncated").inc()
                log.info("file_truncated", stream=st.name, path=st.path, at=h.read_off, size=s.st_size)
                st.tracker.truncated()
                st.truncations += 1
                of.done_off = 0
                of.fpl, of.fp = fingerprint(of.fd, self.cfg.fingerprint_bytes)
                continue
            if act in (Action.FINISH, Action.GIVE_UP):
                if act is Action.GIVE_UP:
                    lost = s.st_size - h.read_off + ch.pending
                    LOST_BYTES.inc(lost)
                    log.error("deleted_file_released_unread", stream=st.name, lost_bytes=lost)
                    ch.reset()
                ROTATIONS.labels("finished").inc()
                log.info("file_done", stream=st.name, inode=h.fid.ino, deleted=h.deleted, size=s.st_size)
                self.released[h.fid] = Cursor(st.seq, h.fid.dev, h.fid.ino, of.fpl, of.fp, of.done_off)
                while len(self.released) > 100_000:
                    del self.released[next(iter(self.released))]
                os.close(of.fd)
                del st.files[h.fid]
                st.tracker.pop_head()
                continue
            break
        head = st.tracker.head
        deadline = st.tracker.next_deadline(st.files[head.fid].chunker.pending if head else 0)
        if deadline is not None and st.name not in self.blocked:  # a blocked stream waits for an ack instead
            self.deadlines[st.name] = deadline
        else:
            self.deadlines.pop(st.name, None)

    def _emit(self, st: _Stream, h: FileTrack, of: _Open, data: bytes) -> None:
        if not data:
            return
        end = st.seq + len(data)
        of.done_off += len(data)
        if of.fpl < self.cfg.fingerprint_bytes and of.done_off > of.fpl:
            of.fpl, of.fp = fingerprint(of.fd, self.cfg.fingerprint_bytes)
        cursor = Cursor(end, h.fid.dev, h.fid.ino, of.fpl, of.fp, of.done_off)
        chunk = Chunk(self.cfg.name, st.name, st.source.data_type, st.seq, end, data, dict(st.source.tags))
        try:
            self.spool.append(chunk, cursor.encode())
        except SpoolDiskFull:
            raise  # the reader dies and is rebuilt from disk once space returns (see agents/_agent.py)
        except SpoolFull:  # room was checked first; only a concurrent /v1/log writer can take it
            self.spool.wait_room(len(data) + _OVERHEAD, 30.0)
            self.spool.append(chunk, cursor.encode())
        st.seq = end
        SPOOLED_CHUNKS.inc()

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Every stream's :class:`StreamStatus` line (plus refused paths), for ``/v1/status``.

        Only a snapshot of the reader's state is taken under :attr:`lock` (plain values, no system
        calls); the ``fstat`` of each open file and the building of the lines happen after it is
        released, so a status request never holds up tailing (with 1,000 files the ``fstat`` calls
        alone took milliseconds, and a client polling status kept the reader waiting). A file the
        reader closed meanwhile is skipped; its descriptor reused by another file is recognised by
        device and inode and skipped too.
        """
        with self.lock:
            snap = [
                _StatusSnap(
                    st.name,
                    st.path,
                    st.source,
                    st.seq,
                    [(st.files[h.fid].fd, h.fid, h.read_off, h.at_path) for h in st.tracker.files if h.fid in st.files],
                    sum([o.chunker.pending for o in st.files.values()]),
                    len(st.files),
                    st.name in self.blocked,
                    self.unreadable.get(st.path),
                    st.truncations,
                    st.rotations,
                )
                for st in self.streams.values()
            ]
            refused = list(self.refused.items())
        out = []
        for sn in snap:
            cp = self.checkpoints.streams.get(sn.name)
            acked = cp.acked.seq if cp and cp.acked else 0
            unread = 0
            size = 0
            for fd, fid, read_off, at_path in sn.files:
                try:
                    s = os.fstat(fd)
                except OSError:  # closed by the reader since the snapshot
                    continue
                if FileId(s.st_dev, s.st_ino) != fid:  # the descriptor now belongs to another file
                    continue
                unread += max(0, s.st_size - read_off)
                if at_path:
                    size = s.st_size
            line = StreamStatus(
                sn.name,
                sn.path,
                sn.source.id,
                sn.source.data_type,
                acked_offset=acked,
                read_offset=sn.seq,
                file_size=size,
                files_open=sn.files_open,
                lag_bytes=max(0, sn.seq - acked) + unread + sn.pending,
                blocked=sn.blocked,
            )
            out.append(line.as_dict(error=sn.error, truncations=sn.truncations, new_files=sn.rotations))
        for path, (src, why) in refused:
            out.append(StreamStatus(None, path, src.id, src.data_type).as_dict(refused=why))
        return out

    def close(self) -> None:
        with self.lock:
            for st in list(self.streams.values()):
                self._drop_stream(st)
