"""The DataSink: rolling Avro container files of chunk records under ``sink_dir`` (blocking file I/O).

Layout::

    sink_dir/.lock              flock'ed by the one collector using this folder
    sink_dir/index.json         the dedupe index (see ``_dedupe``), saved at each roll
    sink_dir/open/NNNNNNNNNN-NAME.avro   the file being written (at most one, plus crash remains)
    sink_dir/done/NNNNNNNNNN-NAME.avro   closed files: whole and valid, for the archive builder
    sink_dir/torn/…             bytes cut off crashed files, kept for inspection, never read back
                                (at most ``torn_max_bytes``: the oldest go first; none on a full disk)

``NNNNNNNNNN`` is a sequence number that only grows (it continues after the highest number in the
index, ``open/`` and ``done/``); ``NAME`` is the collector's name, so several collectors can share
one ``done/`` area.

Resume-state contract: every append ends with ``fdatasync`` of the file (and of ``open/`` when the file
is new) before the caller acks; that is the only durability the acks rely on. Rolling a file is:
fsync, save the dedupe index with ``through`` = its number, rename into ``done/`` and fsync
both folders. On start, :meth:`SinkFiles.recover` takes every file left in ``open/`` in number
order, keeps its longest prefix of whole blocks (everything acked is in it; the cut tail goes to
``torn/``), folds its records into the dedupe index if the index does not cover it yet, and moves it
into ``done/`` (or deletes it if no whole block is left). A crash during recovery is recovered by
the next start the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import fsync_dir, move_atomic, write_atomic
from .._chunk import SINK_SCHEMA
from .._container import BlockEncoder, scan_container
from .._dirlock import lock_dir, unlock_dir
from .._logging import get_logger
from . import _metrics as m
from ._dedupe import DedupeIndex, IndexCorrupt

__all__ = ["RecoveryReport", "SinkFiles"]

log = get_logger("collector.sink")
_NAME = re.compile(r"^(\d{10})-(.+)\.avro$")
_TEMP = re.compile(r"^\..+\.tmp-\d+$")


def _seq_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


@dataclass(slots=True)
class RecoveryReport:
    """What :meth:`SinkFiles.recover` did."""

    recovered: list[str] = field(default_factory=list)  # moved into done/
    removed: list[str] = field(default_factory=list)  # held no whole block
    torn_bytes: int = 0
    index_rebuilt: bool = False


class SinkFiles:
    """Owns ``sink_dir``: the open sink file, rolling into ``done/``, recovery and the saved index."""

    def __init__(
        self, sink_dir: str | os.PathLike[str], name: str, codec: str = "null", *, torn_max_bytes: int = 64 << 20
    ) -> None:
        self.root = Path(sink_dir)
        self.torn_max_bytes = torn_max_bytes
        self.name = name
        self.codec = codec
        self.open_dir = self.root / "open"
        self.done_dir = self.root / "done"
        self.torn_dir = self.root / "torn"
        self.index_path = self.root / "index.json"
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._fd: int | None = None
        self._encoder = BlockEncoder(SINK_SCHEMA, codec, {"headrace.collector": name})
        self._path: Path | None = None
        self._seq = 0
        self.size = 0
        self.records = 0
        self.opened_at: float | None = None  # monotonic time of the first write
        self.files_closed = 0

    # -- start and stop ------------------------------------------------------------------------

    def lock(self) -> None:
        """Create the folders and take the folder lock; refuse if another collector holds it."""
        self._lock_fd = lock_dir(self.root, "sink_dir", "collector")
        for d in (self.open_dir, self.done_dir, self.torn_dir):
            d.mkdir(parents=True, exist_ok=True)

    def unlock(self) -> None:
        unlock_dir(self._lock_fd)
        self._lock_fd = None

    def load_index(self) -> tuple[DedupeIndex, int, bool]:
        """The saved index and its ``through``; an empty one (through 0, rebuilt=True) if missing or bad."""
        try:
            index, through = DedupeIndex.loads(self.index_path.read_bytes())
            return index, through, False
        except FileNotFoundError:
            return DedupeIndex(), 0, True
        except IndexCorrupt as exc:
            log.warning("dedupe index unreadable, rebuilding it from the sink files", error=str(exc))
            return DedupeIndex(), 0, True

    def _remove_temps(self) -> None:
        """Delete temporary files a failed or interrupted atomic write left (``.NAME.tmp-PID``)."""
        for d in (self.root, self.torn_dir, self.done_dir):
            for p in d.glob(".*.tmp-*"):
                if _TEMP.match(p.name):
                    log.warning("removed a leftover temporary file", file=str(p))
                    p.unlink(missing_ok=True)

    def _keep_torn(self, name: str, tail: bytes) -> bool:
        """Copy a cut tail into ``torn/`` within ``torn_max_bytes`` (oldest removed first); False if not kept.

        The tail was never acked (acks follow the fsync of whole blocks), so it is kept for inspection
        only: a tail already there (same name and size: the same cut, recovered again) is not copied
        twice, a tail larger than the cap is not kept, and a full disk skips the copy (logged).
        """
        target = self.torn_dir / name
        with contextlib.suppress(FileNotFoundError):
            if target.stat().st_size == len(tail):
                return True
        if len(tail) > self.torn_max_bytes:
            m.TORN_NOT_KEPT.inc()
            log.warning("torn tail not kept: larger than torn_max_bytes", file=name, bytes=len(tail))
            return False
        kept = sorted(
            ((p.stat().st_mtime_ns, p.name, p.stat().st_size) for p in self.torn_dir.iterdir() if p.is_file()),
        )
        total = sum(size for _, _, size in kept)
        while kept and total + len(tail) > self.torn_max_bytes:
            _, old, size = kept.pop(0)
            (self.torn_dir / old).unlink(missing_ok=True)
            total -= size
            log.info("removed the oldest torn tail (torn_max_bytes)", file=old, bytes=size)
        try:
            write_atomic(target, tail)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            m.TORN_NOT_KEPT.inc()
            log.warning("torn tail not kept: disk full", file=name, bytes=len(tail), error=exc.strerror)
            return False
        return True

    def recover(self) -> tuple[DedupeIndex, RecoveryReport]:
        """Load the index, recover every file left in ``open/``, and return the index of what is written.

        Safe to call again after it failed (a full disk: ``OSError`` ENOSPC) or after :meth:`abandon`:
        each step is redone from what is on disk.
        """
        self._remove_temps()
        index, through, rebuilt = self.load_index()
        report = RecoveryReport(index_rebuilt=rebuilt)
        # Files in done/ that the index does not cover (all of them without a saved index, or any
        # newer than an index restored from an old copy) are folded in: the index is then stale.
        max_seq = through
        stale = False
        for path in sorted(self.done_dir.glob("*.avro"), key=lambda p: (_seq_of(p) or 0, p.name)):
            seq = _seq_of(path)
            if seq is None or (seq <= through and not rebuilt):
                continue
            for src, stream, start, end, ms in scan_container(path.read_bytes()).spans:
                index.add(src, stream, start, end, ms)
            max_seq = max(max_seq, seq)
            stale = True
        through = max_seq
        if stale and not report.index_rebuilt:
            log.warning("dedupe index was stale; folded in newer files from done/", through=through)
            report.index_rebuilt = True
        for path in sorted(self.open_dir.glob("*.avro"), key=lambda p: (_seq_of(p) or 0, p.name)):
            seq = _seq_of(path)
            if seq is None:
                continue
            max_seq = max(max_seq, seq)
            data = path.read_bytes()
            scan = scan_container(data)
            if scan.valid_end < len(data):
                tail = data[scan.valid_end :]
                self._keep_torn(f"{path.name}.{scan.valid_end}.tail", tail)
                report.torn_bytes += len(tail)
                log.warning(
                    "cut the torn tail of a sink file",
                    file=path.name,
                    kept_bytes=scan.valid_end,
                    cut_bytes=len(tail),
                    problem=scan.problem,
                )
            if scan.blocks == 0:
                path.unlink()
                fsync_dir(self.open_dir)
                report.removed.append(path.name)
                continue
            # After a process crash the page cache may hold blocks that were written but never
            # fsynced; they are about to count as written (re-sends of them will be duplicates),
            # so make them durable first.
            with open(path, "r+b") as f:
                if scan.valid_end < len(data):
                    f.truncate(scan.valid_end)
                os.fsync(f.fileno())
            if seq > through or report.index_rebuilt:
                for src, stream, start, end, ms in scan.spans:
                    index.add(src, stream, start, end, ms)
                through = max(through, seq)
                write_atomic(self.index_path, index.dumps(through))
            move_atomic(path, self.done_dir / path.name)
            report.recovered.append(path.name)
        if report.index_rebuilt and not report.recovered:
            write_atomic(self.index_path, index.dumps(through))
        self._next_seq = max_seq + 1
        return index, report

    # -- writing -------------------------------------------------------------------------------

    @property
    def open_name(self) -> str | None:
        return self._path.name if self._path else None

    def _open_new(self, now: float) -> None:
        self._seq = self._next_seq
        self._next_seq += 1
        self._path = self.open_dir / f"{self._seq:010d}-{self.name}.avro"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self.size = 0
        self.records = 0
        self.opened_at = now
        self._write(self._encoder.header)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def append(self, records: list[dict[str, Any]], now: float) -> float:
        """Write ``records`` as whole blocks and fsync; return the seconds the fsync(s) took."""
        if not records:
            return 0.0
        new = self._fd is None
        if new:
            self._open_new(now)
        assert self._fd is not None
        for block in self._encoder.blocks(records):
            self._write(block)
        t0 = time.perf_counter()
        # fdatasync also makes the new file size durable (it is needed to read the data back);
        # only timestamps are left out.
        os.fdatasync(self._fd)
        if new:
            fsync_dir(self.open_dir)
        self.records += len(records)
        return time.perf_counter() - t0

    def roll(self, index_bytes: Callable[[int], bytes]) -> str | None:
        """Close the open file into ``done/`` (saving ``index_bytes(through)`` first); its name, if any."""
        if self._fd is None or self._path is None:
            return None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        write_atomic(self.index_path, index_bytes(self._seq))
        name = self._path.name
        move_atomic(self._path, self.done_dir / name)
        self._path = None
        self.opened_at = None
        self.size = 0
        self.records = 0
        self.files_closed += 1
        return name

    def abandon(self) -> None:
        """Close the file descriptor without rolling (after a write error; the next start recovers it)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._path = None
        self.opened_at = None
