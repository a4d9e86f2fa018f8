"""Group commit: many concurrent requests, one write and one fsync, then every one of them is acked.

Theory of operation: a request hands its decoded chunks to :meth:`GroupCommit.submit` and waits.
One background task loops: it takes every batch waiting at that moment and hands them, in arrival
order, to the store's ``commit`` in a worker thread (so the event loop keeps taking requests, which
form the next group). The store makes all of them durable with one fsync and returns one answer
per batch; only then is each waiting request resolved. Between groups, and on the store's timer
(``deadline``), the store's ``maintain`` runs (the sink rolls its file there).

A store that raises leaves what is on disk unknown: the committer then fails every waiting and
later request (HTTP 503, nothing acked), marks itself failed and calls ``on_failure`` (the process
shuts down and exits non-zero); the next start recovers from disk. Resume state lives in the store.

A full disk (``ENOSPC``/``EDQUOT`` from the store, when a ``reopen`` function is given) is not a
failure: the store is abandoned (its in-memory state, e.g. the dedupe index, may say more than
the disk holds), every waiting and later request gets 503 ``disk_full`` (nothing acked), and
``reopen`` — the same recovery a process start runs — is retried with backoff (1 s doubling to
5 s) until it succeeds; then requests are taken (and tried) again, while :meth:`GroupCommit.disk_full`
keeps reporting the full disk until a write succeeds or ``free_bytes()`` shows room for the write
that failed. A committer can
also start without a store (the recovery at start already hit a full disk) and wait the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .._chunk import Chunk
from .._logging import get_logger
from .._supervise import is_disk_full
from ..errors import TransientError
from . import _metrics as m

__all__ = ["Ack", "DiskFull", "GroupCommit", "Refused", "SinkFailed", "Store"]

log = get_logger("collector.commit")


class Refused(TransientError):
    """A store did not take a batch (nothing of it is acked); ``reason`` is the HTTP error code to answer."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class DiskFull(Refused):
    """The store's disk is full; nothing of the request is acked (503 ``disk_full``, retry later)."""

    def __init__(self, detail: str) -> None:
        super().__init__("disk_full", detail)


class SinkFailed(Refused):
    """The store could not write or fsync, or is stopping; nothing of the request is acked."""

    def __init__(self, detail: str) -> None:
        super().__init__("unavailable", detail)


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to one batch: every chunk is durable (``duplicates`` of them were already)."""

    acked: int
    duplicates: int


class Store(Protocol):
    """Where accepted batches go: the sink files, or the forwarding spool. Called from one thread at a time."""

    def commit(self, batches: list[list[Chunk]]) -> list[Ack | Refused]:
        """Make the batches durable together; per batch its ack or why it was not taken (nothing of it kept)."""
        ...

    def deadline(self) -> float | None:
        """Monotonic time at which :meth:`maintain` must run even without traffic (None: no timer)."""
        ...

    def maintain(self) -> None:
        """Periodic work between commits (rolling files)."""
        ...

    def close(self) -> None:
        """Finish cleanly (roll the open file); called once, after the last commit."""
        ...

    def abandon(self) -> None:
        """Drop open handles after a failure without touching the files (the next start recovers)."""
        ...

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/status`` shows of the store."""
        ...


@dataclass(slots=True)
class _Waiting:
    chunks: list[Chunk]
    future: asyncio.Future[Ack]


class GroupCommit:
    """Serialises batches into a :class:`Store`; see the module docstring."""

    def __init__(
        self,
        store: Store | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
        reopen: Callable[[], Store] | None = None,
        unavailable: str | None = None,
        retry_seconds: tuple[float, float] = (1.0, 5.0),
        free_bytes: Callable[[], int] | None = None,
    ) -> None:
        if store is None and reopen is None:
            raise ValueError("a GroupCommit without a store needs reopen")
        self.store = store
        self.clock = clock
        self.on_failure = on_failure
        self.reopen = reopen
        self.retry_seconds = retry_seconds
        self.failed: str | None = None
        #: why there is no store (a full disk), while there is none
        self.unavailable: str | None = None if store is not None else (unavailable or "store not open")
        m.STORE_UNAVAILABLE.set(0 if store is not None else 1)
        self.free_bytes = free_bytes
        #: (why, bytes the failed write needed) after a full disk, until a write succeeds or that much is free
        self._full: tuple[str, int] | None = None if self.unavailable is None else (self.unavailable, 0)
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._rolls: list[asyncio.Future[str | None]] = []  # POST /v1/roll requests waiting
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """The committer loop must not end before :meth:`close`: if it does, the collector is dead."""
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        self._fail(f"the group-commit loop ended: {exc!r}" if exc else "the group-commit loop ended")
        for w in self._waiting:
            if not w.future.done():
                w.future.set_exception(SinkFailed(self.failed or ""))
        self._waiting = []

    async def close(self) -> None:
        """Commit what is waiting, close the store, stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def submit(self, chunks: list[Chunk]) -> Ack:
        """Wait until every chunk is durable (or was already); raise :class:`Refused` if not possible."""
        if self.failed is not None or self._closing:
            raise SinkFailed(self.failed or "the collector is shutting down")
        if self.store is None:
            raise DiskFull(self.unavailable or "store not open")
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(chunks, fut))
        self._wake.set()
        return await fut

    async def roll(self) -> str | None:
        """Close the store's open file now (between groups, in the commit thread); the closed file's
        name, or None when none was open. Raises :class:`Refused` when the store cannot (failed, full
        disk) and ``NotImplementedError`` for a store without files (a forwarder)."""
        if self.failed is not None or self._closing:
            raise SinkFailed(self.failed or "the collector is shutting down")
        if self.store is None:
            raise DiskFull(self.unavailable or "store not open")
        if not hasattr(self.store, "roll_now"):
            raise NotImplementedError("this collector forwards; it has no sink files to roll")
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._rolls.append(fut)
        self._wake.set()
        return await fut

    async def _do_rolls(self, store: Store) -> None:
        rolls, self._rolls = self._rolls, []
        try:
            name = await asyncio.to_thread(store.roll_now)  # type: ignore[attr-defined]
        except Exception as exc:
            if self.reopen is not None and is_disk_full(exc):
                self._lose_store(f"roll: {exc}")
            else:
                self._fail(f"roll failed: {exc!r}")
            for fut in rolls:
                if not fut.done():
                    fut.set_exception(SinkFailed(self.failed or self.unavailable or str(exc)))
            return
        for fut in rolls:
            if not fut.done():
                fut.set_result(name)

    async def _run(self) -> None:
        while True:
            if self._rolls and (self.store is None or self.failed is not None):
                rolls, self._rolls = self._rolls, []
                for fut in rolls:
                    if not fut.done():
                        fut.set_exception(SinkFailed(self.failed or self.unavailable or "store not open"))
            if self.store is None:
                self._refuse_waiting()
                if self._closing or self.failed is not None:
                    return
                await self._reopen()
                continue
            store = self.store
            if not self._waiting and not self._closing and not self._rolls:
                deadline = store.deadline()
                timeout = None if deadline is None else max(0.0, deadline - self.clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            group, self._waiting = self._waiting, []
            if group:
                await self._commit(group)
            if self._rolls and self.store is not None and self.failed is None:
                await self._do_rolls(self.store)
            if self.failed is not None:
                if self._closing:
                    return
                continue
            if self.store is None:
                continue
            if self._closing and not self._waiting:
                await self._call(store.close)
                return
            await self._call(store.maintain)  # a close() meanwhile is handled on the next turn

    def _refuse_waiting(self) -> None:
        group, self._waiting = self._waiting, []
        for w in group:
            if not w.future.done():
                w.future.set_exception(DiskFull(self.unavailable or "store not open"))

    async def _reopen(self) -> None:
        """Try the store's recovery once; on a full disk, wait (woken early by close) before the next turn."""
        assert self.reopen is not None
        attempt = 0
        while self.store is None and not self._closing:
            try:
                store = await asyncio.to_thread(self.reopen)
            except Exception as exc:
                if not is_disk_full(exc):
                    self._fail(f"recovery failed: {exc!r}")
                    return
                self.unavailable = f"disk full, waiting for space: {exc}"
                self._full = (f"disk full: {exc}", self._full[1] if self._full else 0)
                lo, hi = self.retry_seconds
                delay = min(lo * 2**attempt, hi)
                attempt += 1
                log.warning("store still waiting for disk space", error=str(exc), retry_in_s=delay)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._refuse_waiting()
                continue
            self.store = store
            self.unavailable = None
            m.STORE_UNAVAILABLE.set(0)
            log.warning("store reopened: taking requests again")

    def disk_full(self) -> str | None:
        """Why writes failed for lack of space, until space is back (a write succeeded, or the free
        space reported by ``free_bytes`` covers the failed write); None when not full."""
        if self.unavailable is not None:
            return self.unavailable
        full = self._full
        if full is None:
            return None
        if self.free_bytes is not None:
            try:
                free = self.free_bytes()
            except OSError:
                return full[0]
            if free >= full[1] + (64 << 10):
                self._full = None
                return None
        return full[0]

    def _lose_store(self, reason: str, needed: int = 0) -> None:
        """Disk full: drop the store (its memory may be ahead of the disk) and wait for space."""
        assert self.store is not None
        self.unavailable = f"disk full, waiting for space: {reason}"
        self._full = (f"disk full: {reason}", needed)
        m.STORE_UNAVAILABLE.set(1)
        log.error("disk full: refusing writes (503 disk_full) until space returns", reason=reason)
        store, self.store = self.store, None
        store.abandon()

    async def _call(self, fn: Callable[[], Any]) -> None:
        try:
            await asyncio.to_thread(fn)
        except Exception as exc:
            if self.reopen is not None and is_disk_full(exc):
                self._lose_store(f"{fn.__name__}: {exc}")
                return
            self._fail(f"{fn.__name__} failed: {exc!r}")

    async def _commit(self, group: list[_Waiting]) -> None:
        results: list[Ack | Refused]
        if self.failed is not None:
            results = [SinkFailed(self.failed) for _ in group]
        elif self.store is None:
            results = [DiskFull(self.unavailable or "") for _ in group]
        else:
            try:
                results = await asyncio.to_thread(self.store.commit, [w.chunks for w in group])
            except Exception as exc:
                if self.reopen is not None and is_disk_full(exc):
                    self._lose_store(f"write: {exc}", sum(len(c.data) for w in group for c in w.chunks))
                    results = [DiskFull(self.unavailable or "") for _ in group]
                else:
                    self._fail(f"write failed: {exc!r}")
                    results = [SinkFailed(self.failed or "") for _ in group]
        m.COMMIT_REQUESTS.observe(len(group))
        self.commits += 1
        for w, result in zip(group, results, strict=True):
            if w.future.done():  # the request was cancelled
                continue
            if isinstance(result, Ack):
                self._full = None  # a write went through: space is back
                m.ACKED_BATCHES.inc()
                w.future.set_result(result)
            else:
                w.future.set_exception(result)

    def _fail(self, reason: str) -> None:
        if self.failed is not None:
            return
        self.failed = reason
        log.error("store failed; refusing writes and shutting down", reason=reason)
        if self.store is not None:
            self.store.abandon()
        if self.on_failure is not None:
            self.on_failure()
