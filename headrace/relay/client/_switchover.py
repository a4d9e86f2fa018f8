"""Bootstrapping a subscriber: the switch to a bootstrap server and back to the relay.

Theory of operation (Databus's two phases). A subscriber bootstraps when the relay answered 410
``scn_too_old`` (it fell off the buffer) or when it has no checkpoint and asked to start from a
snapshot. The phases, each recorded in the checkpoint:

``snapshot``
    ``GET /v1/snapshot`` pages through every row of the subscriber's sources (filtered like the
    stream) in key order; each page is delivered as one window of ``r`` events. The first page fixes
    ``snapshot_scn`` (the SCN the store was applied to then); rows of later pages may be newer. The
    checkpoint after each page is ``{phase: snapshot, position: {snapshot_scn, after: cursor}}``.
``catchup``
    ``GET /v1/catchup?since=…`` replays the log's windows from ``snapshot_scn`` (or, after a
    ``scn_too_old`` from the relay, from the subscriber's own checkpoint) like the relay's stream.
    Replaying changes a snapshot row already showed rewrites the same final image, so once the
    catch-up passed the newest row version served, the subscriber's copy equals the source. A 410
    from the bootstrap server (its log was compacted past ``since``) restarts at ``snapshot``, and so
    does a ``410 snapshot_restarted`` to a snapshot page (the server re-seeded its snapshot, or the
    log the snapshot would catch up from is gone); either way the subscriber is told to replace its
    copy (:class:`SnapshotRestarted`) before the new snapshot's first page.
``relay``
    When a catch-up response is empty and reached the newest logged SCN, the subscriber asks the
    relay for ``since``; if the relay holds it, the bootstrap ends there (checkpoint phase ``relay``)
    and normal streaming goes on with no gap. If the relay still says too old, catch-up continues.

Snapshot pages are fetched one ahead: as soon as a page arrived, the request for the next one (its
cursor is in the page's headers) runs in a thread while the page is decoded and delivered. The
page fetched ahead is only used when the subscriber's position, once the current page is
delivered, is exactly the one it was asked for, on the same server; what its request raised (a 410
``snapshot_restarted``, the server gone) is raised at that point, where the request would have been
made without it. So a page is never delivered out of order or after a restart, and a checkpoint
only names delivered pages; at most one page is held beyond the one being delivered.

Resume-state contract: the checkpoint is saved after every delivered page or window; a subscriber
killed mid-bootstrap resumes in the same phase after the last page or window it finished.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..._backoff import Backoff
from ..._gcpause import gc_paused
from ..._logging import get_logger
from ...errors import InvalidInput, ScnTooOld, Unavailable
from .._event import Event, EventFields, check_whole_windows, frame_fields, iter_frames, split_windows
from .._protocol import SNAPSHOT_RESTARTED, read_snapshot_headers, snapshot_query
from ._checkpoint import Checkpoint
from ._decode import Window
from ._relay_client import Batch, RelayClient

if TYPE_CHECKING:
    from ._subscriber import Subscriber

__all__ = [
    "PHASE_CATCHUP",
    "PHASE_RELAY",
    "PHASE_SNAPSHOT",
    "BootstrapClient",
    "PageFields",
    "SnapshotPage",
    "SnapshotRestarted",
    "Switchover",
    "bootstrap_steps",
]

log = get_logger("relay.bootstrap_client")

PHASE_SNAPSHOT = "snapshot"
PHASE_CATCHUP = "catchup"
PHASE_RELAY = "relay"


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    """One ``/v1/snapshot`` response."""

    events: list[Event]
    snapshot_scn: int
    cursor: str | None
    done: bool


@dataclass(frozen=True, slots=True)
class PageFields:
    """One ``/v1/snapshot`` response with its frames parsed and checked (CRC, whole windows) into
    their fields, not yet into events: what a subscriber decodes a page from in one pass
    (:meth:`~headrace.relay.client.EventDecoder.decode_fields`)."""

    rows: list[EventFields]
    snapshot_scn: int
    cursor: str | None
    done: bool


class BootstrapClient(RelayClient):
    """A client of one bootstrap server (it speaks the relay's API plus snapshot and catch-up)."""

    def snapshot(
        self,
        sources: Sequence[str] | None,
        filter: str | None,
        after: str | None,
        limit: int,
        subscriber: str | None = None,
        snapshot_scn: int | None = None,
    ) -> SnapshotPage:
        params = snapshot_query(sources, filter, after, limit, subscriber, snapshot_scn)
        r = self._get("/v1/snapshot", params, timeout=self.timeout * 6)
        try:
            with gc_paused():  # thousands of acyclic events (see headrace._gcpause)
                events = list(iter_frames(r.content))
            if events and not events[-1].window_end:  # whole windows only
                list(split_windows(events))  # raises partial_window
        except InvalidInput as exc:
            raise Unavailable(f"{self.url}: bad snapshot response: {exc}") from exc
        pos = read_snapshot_headers(r.headers)
        return SnapshotPage(events, pos.snapshot_scn, pos.cursor, pos.done)

    def snapshot_fields(
        self,
        sources: Sequence[str] | None,
        filter: str | None,
        after: str | None,
        limit: int,
        subscriber: str | None = None,
        snapshot_scn: int | None = None,
    ) -> PageFields:
        """:meth:`snapshot` with the frames left as their fields (checked the same way, the same errors)."""
        params = snapshot_query(sources, filter, after, limit, subscriber, snapshot_scn)
        r = self._get("/v1/snapshot", params, timeout=self.timeout * 6)
        try:
            with gc_paused():  # thousands of acyclic tuples (see headrace._gcpause)
                rows = list(frame_fields(r.content))
            check_whole_windows(rows)
        except InvalidInput as exc:
            raise Unavailable(f"{self.url}: bad snapshot response: {exc}") from exc
        pos = read_snapshot_headers(r.headers)
        return PageFields(rows, pos.snapshot_scn, pos.cursor, pos.done)

    def catchup(
        self, since: int, sources: Sequence[str] | None, filter: str | None, max_bytes: int, subscriber: str | None
    ) -> Batch:
        return self.stream(since, sources, filter, max_bytes, 0, subscriber, path="/v1/catchup")


@dataclass(frozen=True, slots=True)
class SnapshotRestarted(Window):
    """Not a source window: the snapshot starts over, so **replace your copy** with what follows.

    Delivered (by :meth:`Subscriber.windows`; :meth:`Consumer.on_snapshot_restarted` in
    :meth:`Subscriber.run`) before the first page of a new snapshot that replaces a copy the
    subscriber already holds, in part or whole: rows deleted meanwhile are *not* sent as deletes, so
    a consumer that keeps a copy truncates it (or marks its rows and sweeps those not seen again by
    the end of the snapshot phase). ``reason``: ``catchup_too_old`` (the bootstrap log no longer
    reaches the subscriber's position) or ``snapshot_restarted`` (the bootstrap server re-seeded the
    snapshot being read). It has no events; its checkpoint is the empty snapshot start.
    """

    reason: str = ""
    detail: str = ""


#: the arguments of a snapshot page request (sources, filter, after, limit, subscriber, snapshot_scn)
PageArgs = tuple[Sequence[str] | None, str | None, str | None, int, str | None, int | None]


@dataclass(frozen=True, slots=True)
class _PageAhead:
    """A snapshot page request made ahead: where to, with what, and its answer to come."""

    server: BootstrapClient
    args: PageArgs
    result: Future[PageFields]

    def take(self) -> PageFields:
        """The page (waits for it); raises what its request raised."""
        return self.result.result()


class _Fetcher:
    """One daemon thread running the snapshot page requests made ahead, one at a time.

    It reads and parses the whole page (measured: leaving the body on the connection for the
    subscriber's thread to read after the headers came back waited as long for pages as no
    prefetch at all, on the loaded 2-core machine; reading it here waited a tenth of that).

    Nothing waits for it: :meth:`close` lets the thread end after the request it runs, if any (a
    restart, ``stop()``, the iteration closed), whose page or error then goes nowhere."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_PageAhead | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def fetch(self, server: BootstrapClient, args: PageArgs) -> _PageAhead:
        """Start ``server.snapshot_fields(*args)`` in the thread."""
        ahead = _PageAhead(server, args, Future())
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="headrace-snapshot-ahead", daemon=True)
            self._thread.start()
        self._queue.put(ahead)
        return ahead

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _run(self) -> None:
        while (ahead := self._queue.get()) is not None:
            try:
                page = ahead.server.snapshot_fields(*ahead.args)
            except BaseException as exc:  # handed to whoever takes the page, as if it had made the request
                ahead.result.set_exception(exc)
            else:
                ahead.result.set_result(page)


#: one step of a bootstrap: the window to deliver (None: nothing, only a checkpoint to save) and
#: the checkpoint to save after it
Step = tuple[list[Event] | PageFields | SnapshotRestarted | None, Checkpoint]


class Switchover:
    """One bootstrap of a subscriber: from ``start`` (phase ``snapshot`` or ``catchup``) through the
    bootstrap server back to the relay. It owns its position (``cp``), the count of failed requests
    and the backoff; the subscriber owns the servers and their failover (see the module docstring).
    """

    def __init__(self, sub: Subscriber, start: Checkpoint) -> None:
        self.sub = sub
        self.cp = start
        self.failures = 0
        self.backoff = Backoff(0.1, sub.backoff_max)
        self.finished = False  # the relay took over, or stop() was called during a wait
        #: fetch the next snapshot page while the current one is delivered
        self.prefetch = sub.snapshot_prefetch
        self._ahead: _PageAhead | None = None  # the next page's request, when one runs ahead
        self._fetcher = _Fetcher()

    def steps(self) -> Iterator[Step]:
        """The windows to deliver, each with the checkpoint to save after it (see :func:`bootstrap_steps`)."""
        try:
            yield from self._steps()
        finally:
            self._ahead = None  # stop(), the relay took over, or the caller left the iteration
            self._fetcher.close()

    def _steps(self) -> Iterator[Step]:
        while not self.finished and not self.sub.stop_event.is_set():
            server: BootstrapClient = self.sub.bootstrap_server
            try:
                if self.cp.phase == PHASE_SNAPSHOT:
                    yield from self._snapshot_page(server)
                else:
                    yield from self._catchup(server)
            except ScnTooOld as exc:
                log.warning("bootstrap_log_too_old_restarting_snapshot", since=self.cp.scn, oldest_scn=exc.oldest_scn)
                detail = f"the bootstrap log no longer reaches SCN {exc.since} (oldest: {exc.oldest_scn})"
                yield self._restart("catchup_too_old", detail)
            except InvalidInput as exc:
                if exc.reason != SNAPSHOT_RESTARTED:
                    raise
                log.warning("snapshot_restarted", server=server.url, detail=exc.detail)
                yield self._restart("snapshot_restarted", exc.detail)
            except Unavailable as exc:
                self._server_failed(server, exc)

    def _advance(self, events: list[Event] | PageFields | None, nxt: Checkpoint) -> Iterator[Step]:
        yield events, nxt
        self.cp = nxt

    def _succeeded(self) -> None:
        self.failures = 0
        self.backoff.succeeded()

    def _snapshot_page(self, server: BootstrapClient) -> Iterator[Step]:
        """One snapshot page; its checkpoint moves the cursor, or on to catch-up after the last page."""
        sub, pos = self.sub, self.cp.position
        args: PageArgs = (sub.sources, sub.filter, pos.get("after"), sub.snapshot_rows, sub.id, pos.get("snapshot_scn"))
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.server is server and ahead.args == args:
            page = ahead.take()  # raises here what the request raised: where it would have been made
        else:
            page = server.snapshot_fields(*args)
        s0 = int(pos.get("snapshot_scn", page.snapshot_scn))
        if page.done:
            nxt = Checkpoint(s0, PHASE_CATCHUP, {"snapshot_scn": s0})
        else:
            nxt = Checkpoint(s0, PHASE_SNAPSHOT, {"snapshot_scn": s0, "after": page.cursor})
            if self.prefetch:
                self._ahead = self._fetcher.fetch(server, (args[0], args[1], page.cursor, args[3], args[4], s0))
        self._succeeded()
        yield from self._advance(page if page.rows else None, nxt)

    def _catchup(self, server: BootstrapClient) -> Iterator[Step]:
        """One catch-up response's windows; once it is caught up, ask the relay to take over."""
        sub = self.sub
        batch = server.catchup(self.cp.scn, sub.sources, sub.filter, sub.max_bytes, sub.id)
        self._succeeded()
        for events in batch.windows:
            yield from self._advance(events, Checkpoint(events[-1].scn, PHASE_CATCHUP, {}))
        if batch.scanned_scn > self.cp.scn:
            self.cp = Checkpoint(batch.scanned_scn, PHASE_CATCHUP, {})
            yield None, self.cp
        if batch.windows or (batch.newest_scn is not None and self.cp.scn < batch.newest_scn):
            return
        if self._relay_takes_over():
            self.finished = True
            yield None, Checkpoint(self.cp.scn, PHASE_RELAY, {})

    def _relay_takes_over(self) -> bool:
        """Caught up with the bootstrap log: True when the relay holds ``cp`` (False: go on catching
        up, after a pause; ``finished`` is set when ``stop()`` came during it)."""
        sub = self.sub
        try:
            sub.relay.stream(self.cp.scn, sub.sources, sub.filter, 1, 0, sub.id)
            return True
        except ScnTooOld:
            self.finished = sub.stop_event.wait(0.2)
        except Unavailable as exc:
            log.warning("relay_unavailable_during_catchup", relay=sub.relay.url, error=str(exc))
            sub.fail_over_relay()
            self.finished = sub.stop_event.wait(self.backoff.failed())
        return False

    def _restart(self, reason: str, detail: str) -> Step:
        """The snapshot starts over: the subscriber's copy is to be replaced."""
        self._ahead = None  # (none runs: it was taken with the page whose request said so)
        self.cp = Checkpoint(0, PHASE_SNAPSHOT, {})
        return SnapshotRestarted(0, [], reason, detail), self.cp

    def _server_failed(self, server: BootstrapClient, exc: Unavailable) -> None:
        """Fail over to the next bootstrap server; wait after each full round of failures."""
        self.failures += 1
        log.warning("bootstrap_unavailable", server=server.url, error=str(exc))
        self.sub.fail_over_bootstrap()
        if self.failures % len(self.sub.bootstrap_clients) == 0:
            self.finished = self.sub.stop_event.wait(self.backoff.failed())


def bootstrap_steps(sub: Subscriber, start: Checkpoint) -> Iterator[Step]:
    """The windows to deliver during a bootstrap, each with the checkpoint to save after it.

    ``start`` is the checkpoint to begin from (phase ``snapshot`` or ``catchup``). The iteration ends
    when the relay can serve the last checkpoint (the final item carries phase ``relay``), or when
    ``sub.stop()`` is called. An item ``(SnapshotRestarted(…), Checkpoint(0, "snapshot", {}))`` means
    the snapshot starts over — the catch-up log no longer reached back far enough, or the bootstrap
    server re-seeded the snapshot being read — and the subscriber's copy is to be replaced by the
    rows that follow. A window is a list of events (catch-up) or a :class:`PageFields` (a snapshot
    page, its frames checked and left as fields for the subscriber to decode in one pass).
    """
    return Switchover(sub, start).steps()
