"""The archive builder: closed sink files → per data type and day, sorted, de-duplicated Avro archives.

Resume-state contract
---------------------
State lives in the archive itself: one ``MANIFEST.json`` per ``archive_dir/data_type=T/date=D/``
(see ``_archive_manifest``) naming the part files and the byte ranges they hold. The sink files in
``sink_dir/done/`` are the input queue. Nothing else is saved.

Theory of operation (one run, holding an exclusive ``fcntl`` lock; a second run refuses to start):

1. Take a batch of sink files (oldest first, up to ``run_bytes``) and read their chunks, checking
   each chunk's CRC. Group chunks by data type and UTC day of ``received_ms``.
2. For each (data type, day), in order: load the manifest, delete files it does not name (leftovers
   of a killed run), trim the new chunks against the bytes already covered — by this day and its
   neighbours, so a re-send received after midnight is still recognised — and merge what is left into
   the last part (or start a new part once ``part_bytes`` is reached). The merged part is written under
   a new generation name, then the manifest is replaced atomically (the commit point), then the
   superseded generation is deleted.
3. Only when every group of the batch is committed are the batch's sink files deleted.

A run killed at any instant leaves either the old manifest (the new part is an orphan the next run
deletes, the sink files are still there) or the new one (the sink files are still there, and merging
them again adds nothing because their bytes are covered). Either way a re-run ends with every chunk
exactly once in the archives. A sink file that cannot be read is reported, left in place, and the run
exits non-zero.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import posixpath
import zlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.fs as pafs

from .._chunk import SINK_SCHEMA
from .._container import BlockEncoder, decode_block, iter_blocks
from .._logging import get_logger
from .._storage import Store, resolve
from ..errors import TransientError
from ._config import ArchiveConfig
from ._layout import day_dir
from ._manifest import MANIFEST, Manifest, Part
from ._merge import Coverage, Record, sort_key, trim_new
from ._runreport import Summary, progress

__all__ = ["ArchiveBusy", "read_manifest", "run_archive"]

log = get_logger("archive")


class ArchiveBusy(TransientError):
    """Another archive run holds the lock."""


def utc_day(received_ms: int) -> str:
    return dt.datetime.fromtimestamp(received_ms / 1000, dt.UTC).date().isoformat()


def read_manifest(store: Store, data_type: str, date: str) -> Manifest | None:
    path = store.path(day_dir(data_type, date), MANIFEST)
    try:
        return Manifest.from_bytes(store.read_bytes(path))
    except FileNotFoundError:
        return None


def read_chunks(raw: bytes) -> Iterator[Record]:
    """The chunk records of an Avro sink or archive file (any codec of ``_block_codecs``)."""
    for block in iter_blocks(raw):
        yield from decode_block(block)


#: compression level of archive parts, per codec: they are kept, so worth more CPU than sink files
PART_LEVEL = {"null": 0, "deflate": 6, "zstandard": 3}


def encode_part(records: list[Record], codec: str) -> bytes:
    """An Avro container file of ``records`` in blocks of about 1 MiB of chunk data (``BlockEncoder.blocks``)."""
    enc = BlockEncoder(SINK_SCHEMA, codec, level=PART_LEVEL[codec])
    return b"".join([enc.header, *enc.blocks(records)])


@contextmanager
def _lock(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveBusy(
                f"another headrace archive run holds {path}; wait for it to finish (runs must not overlap)"
            ) from None
        yield
    finally:
        os.close(fd)


class _Archiver:
    def __init__(self, cfg: ArchiveConfig, summary: Summary) -> None:
        self.cfg = cfg
        self.summary = summary
        self.sinks = resolve(cfg.sink_dir)
        self.archive = resolve(cfg.archive_dir)
        self.manifests: dict[tuple[str, str], Manifest] = {}

    def manifest(self, data_type: str, date: str) -> Manifest:
        key = (data_type, date)
        if key not in self.manifests:
            self.manifests[key] = read_manifest(self.archive, data_type, date) or Manifest(data_type, date)
        return self.manifests[key]

    def pending(self) -> list[tuple[str, int]]:
        done = self.sinks.path("done")
        sel = [
            (i.path, i.size or 0)
            for i in self.sinks.fs.get_file_info(pafs.FileSelector(done, allow_not_found=True))
            if i.is_file and i.base_name.endswith(".avro") and not i.base_name.startswith(".")
        ]
        return sorted(sel)

    def still_open(self) -> int:
        """How many sink files a collector still has open (``sink_dir/open/``)."""
        sel = pafs.FileSelector(self.sinks.path("open"), allow_not_found=True)
        return sum(1 for i in self.sinks.fs.get_file_info(sel) if i.is_file and i.base_name.endswith(".avro"))

    def run(self) -> None:
        files = self.pending()
        if not files and (n_open := self.still_open()):
            self.summary.idle = (
                f"no closed sink files in {self.sinks.path('done')}, and {n_open} still open in "
                f"{self.sinks.path('open')}: a collector closes its file after collector.roll_seconds or "
                "roll_bytes; to close it now, POST /v1/roll to the collector (or stop it), then run archive again"
            )
            log.info("archive_nothing_closed", open_files=n_open)
        with progress("archive", sum(s for _, s in files)) as bar:
            batch: list[tuple[str, int]] = []
            size = 0
            for path, n in files:
                if batch and size + n > self.cfg.run_bytes:
                    self.merge_batch(batch, bar)
                    batch, size = [], 0
                batch.append((path, n))
                size += n
            if batch:
                self.merge_batch(batch, bar)

    def merge_batch(self, batch: list[tuple[str, int]], bar: Any) -> None:
        groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
        sink_of: dict[tuple[str, str], set[str]] = defaultdict(set)
        readable: list[str] = []
        for path, size in batch:
            name = posixpath.basename(path)
            try:
                records = list(read_chunks(self.sinks.read_bytes(path)))
                for r in records:
                    if zlib.crc32(r["data"]) != r["crc"]:
                        raise ValueError(f"chunk {r['source']}/{r['stream']}@{r['seq_start']}: CRC mismatch")
            except (ValueError, OSError, EOFError, KeyError) as exc:
                msg = f"sink file {path}: cannot read it ({exc}); left in place, move it aside to go on"
                log.error("sink_unreadable", path=path, error=str(exc))
                self.summary.failures.append(msg)
                self.summary.errors += 1
                bar.advance(size)
                continue
            readable.append(path)
            for r in records:
                key = (r["data_type"], utc_day(r["received_ms"]))
                groups[key].append(r)
                sink_of[key].add(name)
            self.summary.files += 1
            self.summary.bytes += size
            bar.advance(size)
        for key in sorted(groups):
            self.merge_group(key[0], key[1], groups[key], sorted(sink_of[key]))
        if self.cfg.delete_sinks:
            for path in readable:
                self.sinks.delete(path)
            if self.sinks.is_local and readable:
                from .._atomic import fsync_dir

                fsync_dir(self.sinks.path("done"))

    def neighbours_coverage(self, data_type: str, date: str) -> Coverage:
        day = dt.date.fromisoformat(date)
        cov = Coverage()
        for delta in (-1, 1):
            other = (day + dt.timedelta(days=delta)).isoformat()
            cov.update(self.manifest(data_type, other).covered)
        return cov

    def merge_group(self, data_type: str, date: str, records: list[Record], sink_names: list[str]) -> None:
        m = self.manifest(data_type, date)
        folder = self.archive.path(day_dir(data_type, date))
        named = {p.name for p in m.parts} | {MANIFEST}
        for leftover in self.archive.list_files(folder):
            if posixpath.basename(leftover) not in named:
                log.info("leftover_deleted", path=leftover)
                self.archive.delete(leftover)
        covered = self.neighbours_coverage(data_type, date)
        covered.update(m.covered)
        new = sorted(trim_new(records, covered), key=sort_key)
        if not new:
            log.info("nothing_new", data_type=data_type, date=date, chunks=len(records))
            return
        limit = self.cfg.part_bytes
        parts = list(m.parts)
        writes: list[tuple[Part, list[Record]]] = []
        superseded: str | None = None
        rest = new
        last = parts[-1] if parts else None
        if last is not None and last.bytes < limit:
            take, size = _fill(rest, limit - last.bytes)
            if take:
                old = list(read_chunks(self.archive.read_bytes(posixpath.join(folder, last.name))))
                merged = sorted(old + rest[:take], key=sort_key)
                parts[-1] = Part(last.index, last.gen + 1, len(merged), last.bytes + size)
                writes.append((parts[-1], merged))
                superseded = last.name
                rest = rest[take:]
        while rest:
            take, size = _fill(rest, limit)
            take = max(take, 1)  # a chunk bigger than part_bytes gets a part of its own
            size = max(size, len(rest[0]["data"]))
            parts.append(Part(parts[-1].index + 1 if parts else 0, 1, take, size))
            writes.append((parts[-1], rest[:take]))
            rest = rest[take:]
        for part, records_ in writes:
            self.archive.write_atomic(posixpath.join(folder, part.name), encode_part(records_, self.cfg.codec))
        for r in new:
            m.covered.add((r["source"], r["stream"]), r["seq_start"], r["seq_end"])
        m.parts = parts
        m.sinks = sorted(set(m.sinks) | set(sink_names))
        self.archive.write_atomic(posixpath.join(folder, MANIFEST), m.to_bytes())  # the commit point
        if superseded:
            self.archive.delete(posixpath.join(folder, superseded))
        self.summary.chunks += len(new)
        self.summary.records += sum(r["data"].count(b"\n") for r in new)
        log.info("archived", data_type=data_type, date=date, parts=[p.name for p, _ in writes], new_chunks=len(new))


def _fill(records: list[Record], room: int) -> tuple[int, int]:
    """How many of ``records`` (and how many bytes) fit in ``room`` bytes."""
    size = 0
    for i, r in enumerate(records):
        if size + len(r["data"]) > room:
            return i, size
        size += len(r["data"])
    return len(records), size


def run_archive(cfg: ArchiveConfig) -> Summary:
    """Merge every closed sink file into the archives; see the module docstring for the guarantees.

    Raises :class:`ArchiveBusy` if another run holds the lock. Problems with single sink files do not
    raise: they are listed in ``Summary.failures`` (and the CLI exits non-zero).
    """
    summary = Summary("archive")
    archiver = _Archiver(cfg, summary)
    lock_file = cfg.lock_file
    if lock_file is None:
        if not archiver.sinks.is_local:
            from ..errors import UsageError

            raise UsageError("archive.lock_file: set it to a local path when sink_dir is not a local folder")
        lock_file = os.path.join(archiver.sinks.base, ".archive.lock")
    with _lock(lock_file):
        archiver.run()
    return summary
