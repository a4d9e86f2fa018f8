"""Group commit: many concurrent requests, one write and one fsync, then every one of them is acked.

Theory of operation: a request hands its decoded chunks to :meth:`GroupCommitter.submit` and waits.
One background task loops: it takes every batch waiting at that moment, cuts each chunk against the
dedupe index (in arrival order, so two concurrent copies of one chunk are written once), writes all
new pieces as Avro blocks and fsyncs once (in a worker thread, so the event loop keeps taking requests
that will form the next group), and only then resolves every waiting request with its ack. Between
groups it rolls the open file when the roll policy says so (size after a commit, age on a timer).

A write or fsync error leaves what is on disk unknown: the committer then fails every waiting and
later request (HTTP 503, nothing acked), marks itself failed and the process exits non-zero; the next
start recovers the file from disk. Resume state lives in the sink (see ``_sink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._chunk import Chunk, chunk_to_record
from .._logging import get_logger
from ..errors import TransientError
from . import _metrics as m
from ._dedupe import DedupeIndex
from ._roll import RollPolicy
from ._sink import SinkFiles

__all__ = ["Ack", "GroupCommitter", "SinkFailed"]

log = get_logger("collector.commit")


class SinkFailed(TransientError):
    """The sink could not write or fsync; nothing of the request is acked (retry elsewhere or later)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to one batch: every chunk is durable (``duplicates`` of them were already)."""

    acked: int
    duplicates: int


@dataclass(slots=True)
class _Waiting:
    chunks: list[Chunk]
    future: asyncio.Future[Ack]


class GroupCommitter:
    """Serialises writes into the sink; see the module docstring."""

    def __init__(
        self,
        sink: SinkFiles,
        index: DedupeIndex,
        policy: RollPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.index = index
        self.policy = policy
        self.clock = clock
        self.wall_ms = wall_ms
        self.on_failure = on_failure
        self.failed: str | None = None
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.last_commit_requests = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Commit what is waiting, roll the open file into ``done/``, stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def submit(self, chunks: list[Chunk]) -> Ack:
        """Wait until every chunk is durable (or was already); raise :class:`SinkFailed` if not possible."""
        if self.failed is not None or self._closing:
            raise SinkFailed(self.failed or "the collector is shutting down")
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(chunks, fut))
        self._wake.set()
        return await fut

    async def _run(self) -> None:
        while True:
            if not self._waiting and not self._closing:
                deadline = self.policy.deadline(self.sink.opened_at)
                timeout = None if deadline is None else max(0.0, deadline - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            group, self._waiting = self._waiting, []
            if group:
                await self._commit(group)
            if self.failed is not None:
                if self._closing:
                    return
                continue
            done = self._closing and not self._waiting
            if done or self.policy.due(self.sink.size, self.sink.opened_at, self.clock()):
                await self._roll()
            if done:
                return

    async def _commit(self, group: list[_Waiting]) -> None:
        if self.failed is not None:
            for w in group:
                if not w.future.done():
                    w.future.set_exception(SinkFailed(self.failed))
            return
        now_ms = self.wall_ms()
        records: list[dict[str, Any]] = []
        acks = []
        nbytes = 0
        for w in group:
            dups = 0
            for c in w.chunks:
                a = self.index.admit(c)
                dups += a.duplicate
                nbytes += len(c.data)
                if a.trimmed_bytes:
                    m.TRIMMED_BYTES.inc(a.trimmed_bytes)
                records.extend(chunk_to_record(p, now_ms) for p in a.pieces)
            acks.append(Ack(len(w.chunks), dups))
        try:
            fsync_s = await asyncio.to_thread(self.sink.append, records, self.clock())
        except Exception as exc:
            self._fail(f"sink write failed: {exc!r}")
            for w in group:
                if not w.future.done():
                    w.future.set_exception(SinkFailed(self.failed or ""))
            return
        if records:
            m.FSYNC_SECONDS.observe(fsync_s)
        m.SINK_OPEN_BYTES.set(self.sink.size)
        m.COMMIT_REQUESTS.observe(len(group))
        self.commits += 1
        self.last_commit_requests = len(group)
        for w, ack in zip(group, acks, strict=True):
            m.CHUNKS_IN.inc(ack.acked)
            m.DUPLICATES.inc(ack.duplicates)
            m.ACKED_BATCHES.inc()
            if not w.future.done():
                w.future.set_result(ack)
        m.BYTES_IN.inc(nbytes)

    async def _roll(self) -> None:
        try:
            name = await asyncio.to_thread(self.sink.roll, self.index.dumps)
        except Exception as exc:
            self._fail(f"rolling the sink file failed: {exc!r}")
            return
        if name is not None:
            m.SINK_FILES.inc()
            m.SINK_OPEN_BYTES.set(0)
            log.info("sink file closed", file=name)

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("sink failed; refusing writes and shutting down", reason=reason)
        self.sink.abandon()
        if self.on_failure is not None:
            self.on_failure()

    def status(self) -> dict[str, Any]:
        """The open file and the commit counters, for ``GET /v1/status``."""
        opened = self.sink.opened_at
        return {
            "open_file": self.sink.open_name,
            "open_bytes": self.sink.size,
            "open_records": self.sink.records,
            "open_age_seconds": None if opened is None else round(self.clock() - opened, 3),
            "files_closed": self.sink.files_closed,
            "commits": self.commits,
            "waiting_requests": len(self._waiting),
            "streams_tracked": len(self.index),
            "failed": self.failed,
        }
