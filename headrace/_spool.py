"""A bounded on-disk spool of chunks waiting for an ack (Scribe's buffer store).

Used by the agent (chunks read from files, waiting for a collector's ack) and by a collector that
forwards upstream. One writer appends, one shipper peeks a batch from the head and acks it; the two
may run in different threads (every method takes the spool's lock).

Layout under ``directory``::

    000000000001.sealed    full segments, fsynced before the rename that sealed them
    000000000002.open      the one segment being appended to (always the newest)
    head.json              the ack position: {"segment": n, "offset": bytes}, replaced atomically

Segment files are states: a segment is ``.open`` while appended to, renamed (atomically, after an
fsync) to ``.sealed`` when it reaches ``segment_bytes``, and deleted once every record in it is
acked. A record is ``len:u32 | crc32:u32 | payload`` (big-endian) with payload
``cursor_len:u32 | cursor | encode_batch([chunk])``. The *cursor* is opaque bytes the writer
attaches to a chunk (the agent stores its file position there); the spool gives it back.

Resume-state contract:

* Saved: every appended record, durable once :meth:`Spool.sync` returns (the writer calls it after a
  group of appends, before it records anything that depends on them); the ack position, written
  atomically by every :meth:`Spool.ack`.
* On open: segments are scanned; a torn tail (a record cut by kill -9 or a bad CRC) is truncated
  away, with a warning, and everything before it is kept. A record whose CRC is right but whose
  payload cannot be read back as a chunk is not a torn tail: it is copied to ``dead/`` (a log line
  naming the file, ``headrace_spool_dead_records_total``) and skipped, and the records after it
  stay. The spool reads records back structurally only (no name or tag rules): whether a chunk may
  be shipped is decided by the writer before :meth:`Spool.append` and by the shipper. Records
  before the saved ack position are not offered again; every record after it is offered again by
  :meth:`Spool.peek`, so a batch that was in flight at the crash is re-sent. Receivers
  de-duplicate by chunk identity ``(source, stream, seq_end)``, so re-sending is harmless.
* :meth:`Spool.last_cursors` gives, per ``(source, stream)``, the cursor of the newest record still
  waiting: a writer resumes reading after it (anything older is covered by the writer's own
  checkpoint of acked data, which it must save *before* calling :meth:`Spool.ack`).

Bounded: :meth:`Spool.append` raises :class:`SpoolFull` when the record would take the spool past
``cap_bytes``; a writer checks :meth:`Spool.room` (or waits with :meth:`Spool.wait_room`) and stops
reading meanwhile (backpressure). Nothing is ever dropped.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter

from ._atomic import fsync_dir, write_atomic
from ._chunk import Chunk, chunk_parts
from ._logging import get_logger
from .errors import InvalidInput, TransientError, UsageError

__all__ = ["Spool", "SpoolDiskFull", "SpoolEntry", "SpoolFull"]

_REC = struct.Struct(">II")
_U32 = struct.Struct(">I")
_MAX_RECORD = 1 << 30
log = get_logger("spool")
DEAD_RECORDS = Counter("headrace_spool_dead_records_total", "Spool records with a good CRC that could not be read back")
_BATCH_HEAD = struct.Struct(">4sBI")


class SpoolFull(TransientError):
    """The spool is at its byte cap; wait until acks release room (backpressure)."""


class SpoolDiskFull(SpoolFull):
    """The spool's filesystem is full (``ENOSPC``/``EDQUOT``): nothing was appended; retry when space returns."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled chunk as :meth:`Spool.peek` returns it."""

    chunk: Chunk
    cursor: bytes
    size: int  # bytes this record takes on disk
    #: the chunk as it stands in a batch (:func:`headrace._chunk.encode_chunk`), read from the record
    encoded: bytes | memoryview = b""


@dataclass(slots=True)
class _Rec:
    segment: int
    offset: int
    size: int
    key: tuple[str, str]
    cursor: bytes


class Spool:
    """A FIFO of chunks on disk, bounded by ``cap_bytes``. See the module docstring for the contract."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        cap_bytes: int = 256 << 20,
        segment_bytes: int = 16 << 20,
    ) -> None:
        if cap_bytes <= 0 or segment_bytes <= 0:
            raise UsageError("spool cap_bytes and segment_bytes must be positive")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cap_bytes = cap_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Condition()
        self._ack_lock = threading.Lock()
        self._reserved = 0  # head records handed out by peek(reserve=True), not yet acked
        self._recs: deque[_Rec] = deque()
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._head_offset = 0  # acked bytes at the start of the oldest segment
        self._fd: int | None = None  # the open segment
        self._open_seg = 0
        self._dirty = False
        self._closed = False
        self._disk_full: tuple[str, int] | None = None  # (why, bytes of the record refused)
        self._unlink_later: list[int] = []  # acked segments waiting for a saved head.json
        self._recover()

    # -- recovery -----------------------------------------------------------------------------

    def _path(self, seg: int, state: str) -> Path:
        return self.dir / f"{seg:012d}.{state}"

    def _recover(self) -> None:
        segs: dict[int, str] = {}
        for p in self.dir.iterdir():
            stem, _, state = p.name.partition(".")
            if state in ("open", "sealed") and stem.isdigit():
                segs[int(stem)] = state
        head_seg, head_off = 0, 0
        head = self.dir / "head.json"
        if head.exists():
            h = json.loads(head.read_text())
            head_seg, head_off = int(h["segment"]), int(h["offset"])
        for seg in sorted(segs):
            if seg < head_seg:  # fully acked, deletion was cut short
                self._path(seg, segs[seg]).unlink()
                continue
            path = self._path(seg, segs[seg])
            start = head_off if seg == head_seg else 0
            size = self._scan(seg, path, start)
            self._sizes[seg] = size
            if seg == head_seg:
                self._head_offset = min(head_off, size)
        opens = [s for s, st in segs.items() if st == "open" and s in self._sizes]
        for seg in opens[:-1]:  # only the newest may stay open
            self._seal(seg)
        if opens and opens[-1] == max(self._sizes):
            self._open_seg = opens[-1]
            self._fd = os.open(self._path(self._open_seg, "open"), os.O_WRONLY | os.O_APPEND)
        self._drop_empty_head()

    def _scan(self, seg: int, path: Path, start: int) -> int:
        """Index the records of one segment from ``start``; cut a torn tail. Returns the valid size."""
        data = path.read_bytes()
        pos = start
        while pos < len(data):
            if pos + _REC.size > len(data):
                break
            length, crc = _REC.unpack_from(data, pos)
            end = pos + _REC.size + length
            if length > _MAX_RECORD or end > len(data):
                break
            payload = data[pos + _REC.size : end]
            if zlib.crc32(payload) != crc:
                break
            try:
                cursor, chunk = _decode_payload(payload)
            except InvalidInput as exc:
                self._move_aside(seg, pos, payload, exc)
                pos = end
                continue
            self._recs.append(_Rec(seg, pos, end - pos, (chunk.source, chunk.stream), cursor))
            pos = end
        if pos < len(data):
            log.warning("spool_torn_tail_cut", segment=str(path), kept=pos, cut=len(data) - pos)
            with open(path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        return pos

    def _move_aside(self, seg: int, pos: int, payload: bytes, exc: InvalidInput) -> None:
        dead = self.dir / "dead"
        dead.mkdir(exist_ok=True)
        target = dead / f"{seg:012d}_{pos}.record"
        write_atomic(target, payload)
        DEAD_RECORDS.inc()
        log.error("spool_record_moved_aside", file=str(target), reason=exc.reason, detail=exc.detail)

    # -- writing --------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes on disk not yet released by acks."""
        with self._lock:
            return sum(self._sizes.values()) - self._head_offset

    def disk_full(self) -> str | None:
        """Why the last append failed for lack of disk space, until space for it returns (else None).

        Checked against the filesystem's free space (``statvfs``) on every call, so it clears as soon as
        space is back even if nothing tries to append meanwhile.
        """
        full = self._disk_full
        if full is None:
            return None
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return full[0]
        if st.f_bavail * st.f_frsize >= full[1] + (64 << 10):
            self._disk_full = None
            return None
        return full[0]

    def room(self) -> int:
        """Bytes that may still be appended before the cap."""
        with self._lock:
            return self.cap_bytes - (sum(self._sizes.values()) - self._head_offset)

    def append(self, chunk: Chunk, cursor: bytes = b"") -> None:
        """Append one chunk (durable after the next :meth:`sync`); raise :class:`SpoolFull` over the cap."""
        # The record is written from its pieces (writev): the chunk's data is not copied into a
        # joined record first. Byte for byte it is _REC | cursor_len | cursor | encode_batch([chunk]).
        pieces = [_U32.pack(len(cursor)) + cursor + _BATCH_HEAD.pack(b"HRCB", 1, 1), *chunk_parts(chunk)]
        length = crc = 0
        for piece in pieces:
            length += len(piece)
            crc = zlib.crc32(piece, crc)
        pieces.insert(0, _REC.pack(length, crc))
        size = _REC.size + length
        with self._lock:
            if self._closed:
                raise UsageError("spool is closed")
            used = sum(self._sizes.values()) - self._head_offset
            if used + size > self.cap_bytes:
                raise SpoolFull(f"spool at {used} of {self.cap_bytes} bytes; cannot add {size}")
            try:
                if self._fd is None or self._sizes[self._open_seg] >= self.segment_bytes:
                    self._roll()
                assert self._fd is not None
                offset = self._sizes[self._open_seg]
                try:
                    done = os.writev(self._fd, pieces)
                    if done < size:  # a short write: the rest from a joined copy
                        view = memoryview(b"".join(pieces))[done:]
                        while view:
                            view = view[os.write(self._fd, view) :]
                except OSError:
                    # Cut what part of the record reached the file: the next append lands where the
                    # index says it does, and a restart finds no torn record in the middle.
                    os.ftruncate(self._fd, offset)
                    raise
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self._disk_full = (f"{exc.strerror} ({self.dir})", size)
                    raise SpoolDiskFull(f"the spool's disk is full ({self.dir}): {exc.strerror}") from exc
                raise
            self._disk_full = None
            self._sizes[self._open_seg] = offset + size
            self._recs.append(_Rec(self._open_seg, offset, size, (chunk.source, chunk.stream), cursor))
            self._dirty = True
            self._lock.notify_all()

    def sync(self) -> None:
        """Make every appended record durable (fsync of the open segment).

        The fsync runs outside the spool's lock (on a duplicate descriptor), so the shipper is not
        held up meanwhile.
        """
        with self._lock:
            if self._fd is None or not self._dirty:
                return
            fd = os.dup(self._fd)
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _roll(self) -> None:
        if self._fd is not None:
            self._seal(self._open_seg)
        seg = max(self._sizes, default=self._open_seg) + 1
        self._fd = os.open(self._path(seg, "open"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._open_seg = seg
        self._sizes[seg] = 0
        fsync_dir(self.dir)  # if this fails the segment is still ours (and empty): no state is lost

    def _seal(self, seg: int) -> None:
        if self._fd is not None and seg == self._open_seg:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._dirty = False
        else:
            with open(self._path(seg, "open"), "rb") as f:
                os.fsync(f.fileno())
        os.replace(self._path(seg, "open"), self._path(seg, "sealed"))
        fsync_dir(self.dir)

    # -- reading and acking ----------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._recs)

    def peek(self, max_chunks: int = 1000, max_bytes: int = 4 << 20, *, reserve: bool = False) -> list[SpoolEntry]:
        """The oldest waiting chunks, in append order (at least one if any wait, even if it is large).

        Peeking does not remove anything; :meth:`ack` does. Peeking twice returns the same entries,
        unless ``reserve`` is set: then the entries returned are marked in flight, and the next
        reserving peek starts after them (a shipper sends batch N+1 while batch N's ack is being
        recorded). Acks release reserved entries first; :meth:`unreserve` forgets reservations.
        Reservations live in memory only: after a restart everything un-acked is offered again.
        """
        with self._lock:
            start = self._reserved if reserve else 0
            picked: list[_Rec] = []
            total = 0
            for rec in itertools.islice(self._recs, start, None):
                if picked and (len(picked) >= max_chunks or total + rec.size > max_bytes):
                    break
                picked.append(rec)
                total += rec.size
            if reserve:
                self._reserved += len(picked)
            files: dict[int, int] = {}
            try:
                # Opened under the lock (a segment may be sealed, i.e. renamed, right after); read outside.
                for rec in picked:
                    if rec.segment not in files:
                        state = "open" if rec.segment == self._open_seg and self._fd is not None else "sealed"
                        files[rec.segment] = os.open(self._path(rec.segment, state), os.O_RDONLY)
            except BaseException:
                for fd in files.values():
                    os.close(fd)
                raise
        out: list[SpoolEntry] = []
        try:
            for rec in picked:
                raw = os.pread(files[rec.segment], rec.size, rec.offset)
                payload = memoryview(raw)[_REC.size :]
                cursor, chunk = _decode_payload(payload)
                out.append(SpoolEntry(chunk, cursor, rec.size, payload[4 + len(cursor) + _BATCH_HEAD.size :]))
        finally:
            for fd in files.values():
                os.close(fd)
        return out

    def unreserve(self) -> None:
        """Forget every reservation (the shipper stopped): reserving peeks start at the oldest again."""
        with self._lock:
            self._reserved = 0
            self._lock.notify_all()

    def ack(self, count: int) -> None:
        """Release the ``count`` oldest entries (the ones the last :meth:`peek` returned, or a prefix).

        The caller saves whatever depends on the ack (the agent's file checkpoint) *before* this call.
        Room is released at once; the ack position is then saved and emptied segments are deleted
        outside the lock (one acker at a time).
        """
        with self._ack_lock:
            with self._lock:
                if count > len(self._recs):
                    raise UsageError(f"cannot ack {count} entries; only {len(self._recs)} are waiting")
                if count <= 0:
                    return
                for _ in range(count):
                    last = self._recs.popleft()
                self._reserved = max(0, self._reserved - count)
                head_seg, head_off = last.segment, last.offset + last.size
                if self._recs:
                    head_seg, head_off = self._recs[0].segment, self._recs[0].offset
                dead = [s for s in self._sizes if s < head_seg]
                for seg in dead:
                    if seg == self._open_seg and self._fd is not None:
                        self._seal(seg)
                    del self._sizes[seg]
                self._head_offset = head_off if head_seg in self._sizes else 0
                self._lock.notify_all()
            # Emptied segments are deleted only once head.json says they are behind the head; if that
            # write fails (a full disk) they are deleted after the next ack that saves it.
            self._unlink_later.extend(dead)
            write_atomic(self.dir / "head.json", json.dumps({"segment": head_seg, "offset": head_off}).encode())
            dead, self._unlink_later = self._unlink_later, []
            for seg in dead:
                self._path(seg, "sealed").unlink(missing_ok=True)
            with self._lock:
                self._drop_empty_head()

    def _drop_empty_head(self) -> None:
        """Delete the oldest sealed segment once all of it is acked."""
        while self._sizes:
            first = min(self._sizes)
            sealed = first != self._open_seg or self._fd is None
            if sealed and self._head_offset >= self._sizes[first] and not any(r.segment == first for r in self._recs):
                self._path(first, "sealed").unlink(missing_ok=True)
                self._path(first, "open").unlink(missing_ok=True)
                del self._sizes[first]
                self._head_offset = 0
            else:
                break

    def last_cursors(self) -> dict[tuple[str, str], bytes]:
        """Per ``(source, stream)``, the cursor of the newest chunk still waiting for its ack."""
        with self._lock:
            return {rec.key: rec.cursor for rec in self._recs}

    def wait_nonempty(
        self, timeout: float | None, *, unreserved: bool = False, until: Callable[[], bool] | None = None
    ) -> bool:
        """Block until some chunk waits (True) or ``timeout`` seconds pass (False; None: no timeout).

        With ``unreserved``, only chunks not yet handed out by a reserving :meth:`peek` count.
        ``until``: also return (False unless a chunk waits) once it is true; whoever makes it true
        calls :meth:`wake`.
        """
        with self._lock:

            def ready() -> bool:
                return len(self._recs) > (self._reserved if unreserved else 0)

            def done() -> bool:
                return ready() or self._closed or (until is not None and until())

            return self._lock.wait_for(done, timeout) and ready()

    def wake(self) -> None:
        """Wake every waiter so it looks again (after setting what a waiter's ``until`` checks)."""
        with self._lock:
            self._lock.notify_all()

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        """Block until ``nbytes`` fit under the cap (True) or ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(
                lambda: self._closed or self.cap_bytes - (sum(self._sizes.values()) - self._head_offset) >= nbytes,
                timeout,
            )

    def close(self) -> None:
        """fsync and close; wakes every waiter."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            self._closed = True
            self._lock.notify_all()


def _decode_payload(payload: bytes | memoryview) -> tuple[bytes, Chunk]:
    """Read back what :meth:`Spool.append` wrote: structure only, no name or tag rules (see the module doc)."""
    try:
        (clen,) = _U32.unpack_from(payload, 0)
        cursor = bytes(payload[4 : 4 + clen])
        pos = 4 + clen
        magic, _version, count = _BATCH_HEAD.unpack_from(payload, pos)
        pos += _BATCH_HEAD.size
        (hlen,) = _U32.unpack_from(payload, pos)
        header = bytes(payload[pos + 4 : pos + 4 + hlen])
        pos += 4 + hlen
        (dlen,) = _U32.unpack_from(payload, pos)
        data = bytes(payload[pos + 4 : pos + 4 + dlen])
        pos += 4 + dlen + 4
        if magic != b"HRCB" or count != 1 or len(cursor) != clen or len(data) != dlen or pos != len(payload):
            raise ValueError("spool record does not hold exactly one chunk")
        h = json.loads(header)
        chunk = Chunk(
            source=h["source"],
            stream=h["stream"],
            data_type=h["data_type"],
            seq_start=h["seq_start"],
            seq_end=h["seq_end"],
            data=data,
            tags=dict(h.get("tags") or {}),
        )
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput("malformed", f"spool record unreadable: {exc!r}") from exc
    return cursor, chunk
