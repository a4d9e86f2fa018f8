"""The subscriber: pull windows from relays, decode them, hand them to the application, checkpoint.

Theory of operation: the subscriber holds one SCN, the checkpoint (the end of the last window the
application finished). It long-polls ``/v1/stream?since=<checkpoint>`` on the current relay. Each
window is delivered whole; only after the application finished it is the checkpoint moved and
saved (atomically, by the store). When the application raises, the same window is delivered again
(after ``on_error``, with backoff): a window is never skipped. When a relay fails (connection
refused, timeout, 5xx, corrupt response) the next relay in the list is tried, with exponential
backoff once every relay has failed in a row. A 410 ``scn_too_old`` raises
:class:`~headrace.errors.ScnTooOld` — unless bootstrap servers are configured: then the subscriber
switches to one by itself and comes back to the relay when caught up
(:mod:`headrace.relay.client._switchover`); ``from_snapshot=True`` makes a subscriber without a
checkpoint start with a snapshot from the bootstrap server. https:// URLs are verified with ``tls``
(a :class:`~headrace._tls.ClientTLS`: a private CA, and a client certificate for mTLS) or, without
it, httpx's default (``SSL_CERT_FILE``, else certifi's bundle).

Resume-state contract: see :mod:`headrace.relay.client._checkpoint`. Without a stored checkpoint
the subscriber starts at ``start_scn`` if given, else at the oldest SCN the relay holds.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from ..._backoff import Backoff, Failover
from ..._gcpause import gc_paused
from ..._logging import get_logger
from ..._tls import ClientTLS, as_context
from ...errors import InvalidInput, ScnTooOld, Unavailable, UsageError
from .._filter import parse_filter
from ._checkpoint import Checkpoint, CheckpointStore, MemoryCheckpointStore
from ._decode import ChangeEvent, EventDecoder, Window
from ._relay_client import Batch, RelayClient
from ._switchover import (
    PHASE_CATCHUP,
    PHASE_RELAY,
    PHASE_SNAPSHOT,
    BootstrapClient,
    PageFields,
    SnapshotRestarted,
    bootstrap_steps,
)

__all__ = ["Consumer", "Subscriber"]

log = get_logger("relay.subscriber")


class Consumer:
    """Callbacks of :meth:`Subscriber.run`; override what you need.

    ``on_error`` is called when a callback raised while processing ``window``; return normally to get
    the same window again (after a backoff), raise to stop :meth:`Subscriber.run` (the checkpoint
    stays before the window).
    """

    def on_start_window(self, window: Window) -> None:
        """A window begins."""

    def on_event(self, event: ChangeEvent) -> None:
        """One event of the current window."""

    def on_end_window(self, window: Window) -> None:
        """The window is complete; after this returns it is checkpointed."""

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        """The checkpoint was saved."""

    def on_start_bootstrap(self, checkpoint: Checkpoint) -> None:
        """The subscriber switches to a bootstrap server, starting (or resuming) from ``checkpoint``.

        ``checkpoint.phase == "snapshot"`` with an empty position: a full snapshot starts; a consumer
        keeping a copy should replace it (rows deleted meanwhile are not sent as deletes).
        """

    def on_snapshot_restarted(self, restart: SnapshotRestarted) -> None:
        """The snapshot starts over: **replace your copy** with the rows that follow.

        Called before the first page of a new snapshot that replaces a copy this subscriber already
        has (its bootstrap log position was compacted away, or the bootstrap server re-seeded the
        snapshot it was reading). Rows deleted meanwhile are not sent as deletes: truncate the copy,
        or mark its rows and sweep those not seen again by the end of the snapshot phase. If this
        raises, :meth:`Subscriber.run` stops with the checkpoint unchanged, and the next run tells
        you again.
        """

    def on_end_bootstrap(self, checkpoint: Checkpoint) -> None:
        """The bootstrap is over; streaming from the relay goes on after ``checkpoint``."""

    def on_error(self, error: BaseException, window: Window) -> None:
        """A callback raised; return to retry the window, raise to stop."""
        log.warning("consumer_failed_window_will_be_retried", scn=window.scn, error=repr(error))


class Subscriber:
    """Consume whole windows from a list of relays, with checkpoints and failover."""

    def __init__(
        self,
        relays: Sequence[str],
        sources: Sequence[str] | None = None,
        checkpoint_store: CheckpointStore | None = None,
        filter: str | None = None,
        *,
        reader_schemas: Mapping[str, dict[str, Any]] | None = None,
        token: str | None = None,
        start_scn: int | None = None,
        max_bytes: int = 1 << 20,
        wait_ms: int = 10_000,
        timeout: float = 10.0,
        backoff_max: float = 5.0,
        subscriber_id: str | None = None,
        transport: httpx.BaseTransport | None = None,
        bootstrap: Sequence[str] | None = None,
        from_snapshot: bool = False,
        snapshot_rows: int = 5_000,
        snapshot_prefetch: bool = True,
        tls: ClientTLS | ssl.SSLContext | None = None,
    ) -> None:
        if not relays:
            raise UsageError("give at least one relay URL")
        parse_filter(filter)  # fail early on a bad filter, with the reason
        ctx = as_context(tls)  # one context (trust store, client certificate) for every relay and bootstrap server
        self.clients = [RelayClient(u, token=token, timeout=timeout, transport=transport, tls=ctx) for u in relays]
        self.sources = list(sources) if sources else None
        self.filter = filter
        self.store: CheckpointStore = checkpoint_store or MemoryCheckpointStore()
        self.max_bytes = max_bytes
        self.wait_ms = wait_ms
        self.backoff_max = backoff_max
        self.id = subscriber_id or f"sub-{uuid.uuid4().hex[:8]}"
        self._relays = Failover(self.clients)
        self._backoff = Backoff(0.1, backoff_max)
        self.decoder = EventDecoder(self._fetch_schema, reader_schemas)
        loaded = self.store.load()
        self.checkpoint: Checkpoint | None = loaded
        self._start_scn = start_scn
        self.stop_event = threading.Event()
        self.last_event_time = time.monotonic()
        self.bootstrap_clients = [
            BootstrapClient(u, token=token, timeout=timeout, transport=transport, tls=ctx) for u in bootstrap or ()
        ]
        self._bootstrap_servers: Failover[BootstrapClient] | None = (
            Failover(self.bootstrap_clients) if self.bootstrap_clients else None
        )
        self.from_snapshot = from_snapshot
        #: set by :meth:`windows`/:meth:`run`: their long-polls take the body undecoded and decode it
        #: straight into events (:meth:`EventDecoder.decode_body`); a caller of :meth:`fetch` outside
        #: them gets :class:`Event` windows as before
        self._bodies = False
        self.snapshot_rows = snapshot_rows
        #: fetch the next snapshot page while the current one is delivered (see ``_switchover``)
        self.snapshot_prefetch = snapshot_prefetch
        self._too_old: ScnTooOld | None = None
        #: why the last relay request failed (None after a success), e.g. ``TLS: certificate verify failed for …``
        self.last_error: str | None = None
        if from_snapshot and not self.bootstrap_clients:
            raise UsageError("from_snapshot needs at least one bootstrap server URL")

    # -- relays ----------------------------------------------------------------------------------

    @property
    def relay(self) -> RelayClient:
        """The relay requests go to now (the one that answered last)."""
        return self._relays.current

    def fail_over_relay(self) -> None:
        """The current relay failed: the next request goes to the next one in the list."""
        self._relays.failed()

    @property
    def bootstrap_server(self) -> BootstrapClient:
        """The bootstrap server requests go to now."""
        if self._bootstrap_servers is None:
            raise UsageError("no bootstrap server configured")
        return self._bootstrap_servers.current

    def fail_over_bootstrap(self) -> None:
        """The current bootstrap server failed: the next request goes to the next one."""
        if self._bootstrap_servers is not None:
            self._bootstrap_servers.failed()

    def _fetch_schema(self, fingerprint: str) -> Any:
        last: Exception | None = None
        for c in [*self._relays.in_order(), *self.bootstrap_clients]:
            try:
                return c.schema(fingerprint)
            except (Unavailable, InvalidInput) as exc:
                last = exc
        raise Unavailable(f"no relay could give schema {fingerprint}: {last}")

    def _since(self) -> int | None:
        if self.checkpoint is not None:
            return self.checkpoint.scn
        return self._start_scn

    def fetch(self, wait_ms: int | None = None) -> Batch | None:
        """One long-poll, failing over across relays with backoff.

        Returns None when every relay failed and ``wait_ms`` was given (the caller checks its idle
        time), or on ``stop()``. Called on its own, the batch holds :class:`Event` windows; once
        :meth:`windows` or :meth:`run` has started, the body undecoded (:attr:`Batch.body`), which
        they decode in one pass.
        """
        failures = 0
        while True:
            try:
                batch = self.relay.stream(
                    self._since(),
                    self.sources,
                    self.filter,
                    self.max_bytes,
                    self.wait_ms if wait_ms is None else wait_ms,
                    self.id,
                    events=not self._bodies,
                )
                self._backoff.succeeded()
                self.last_error = None
                return batch
            except Unavailable as exc:
                failures += 1
                self.last_error = str(exc)
                log.warning("relay_unavailable", relay=self.relay.url, error=str(exc))
                self.fail_over_relay()
                if failures % len(self.clients) == 0:
                    if self.stop_event.wait(self._backoff.failed()):
                        return None
                    if wait_ms is not None:
                        return None

    def _decode_batch(self, batch: Batch | None) -> list[Window] | None:
        """Decode a response's windows; None (after a backoff) when no relay could give a schema."""
        if batch is None:
            return None
        since = self._since()
        try:
            # An event at or below the checkpoint was delivered already. A relay that regrouped its
            # windows after a restart (SQLite: window ends saved about once a second) can serve one
            # that spans the checkpoint; only its newer events are new, so only those are delivered.
            if batch.body is not None:
                try:
                    windows = self.decoder.decode_body(batch.body, since)
                except InvalidInput as exc:
                    if exc.reason not in _BAD_BODY:
                        raise
                    self._bad_response(exc)
                    return None
                return [Window(events[-1].scn, events) for events in windows]
            fresh = [[e for e in events if since is None or e.scn > since] for events in batch.windows]
            return [self._decode(events) for events in fresh if events]
        except Unavailable as exc:
            log.warning("schema_unavailable", error=str(exc))
            self.stop_event.wait(self._backoff.failed())
            return None

    def _bad_response(self, exc: InvalidInput) -> None:
        """A corrupt or cut stream body: what :meth:`fetch` does when a relay fails (the next one, and a
        backoff)."""
        error = f"{self.relay.url}: bad stream response: {exc}"
        self.last_error = error
        log.warning("relay_unavailable", relay=self.relay.url, error=error)
        self.fail_over_relay()
        self.stop_event.wait(self._backoff.failed())

    def _decode_retrying(self, events: list[Any] | PageFields) -> Window:
        """Decode a bootstrap window, backing off while no server can give a schema."""
        backoff = Backoff(0.1, self.backoff_max)
        while True:
            try:
                with gc_paused():  # a page makes thousands of acyclic objects (see headrace._gcpause)
                    return self._decode(events)
            except Unavailable as exc:
                log.warning("schema_unavailable", error=str(exc))
                self.stop_event.wait(backoff.failed())

    def _decode(self, events: list[Any] | PageFields) -> Window:
        if isinstance(events, PageFields):  # a snapshot page: decoded from its frames' fields in one pass
            return Window(events.rows[-1][0], self.decoder.decode_fields(events.rows))
        return Window(events[-1].scn, self.decoder.decode_many(events))

    def commit(self, scn: int) -> Checkpoint:
        """Save ``scn`` (a window end) as the checkpoint."""
        prev = self.checkpoint
        cp = Checkpoint(scn, prev.phase if prev else "relay", prev.position if prev else {})
        self.store.save(cp)
        self.checkpoint = cp
        return cp

    def stop(self) -> None:
        """Make :meth:`run` / :meth:`windows` return after the current window."""
        self.stop_event.set()

    def close(self) -> None:
        for c in [*self.clients, *self.bootstrap_clients]:
            c.close()

    # -- bootstrap (see _switchover) -------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> Checkpoint:
        """Save ``checkpoint`` (phase and position included) as it is."""
        self.store.save(checkpoint)
        self.checkpoint = checkpoint
        return checkpoint

    def _bootstrap_start(self) -> Checkpoint | None:
        """Where a bootstrap must start or resume now, or None to stream from the relay."""
        cp = self.checkpoint
        if cp is not None and cp.phase in (PHASE_SNAPSHOT, PHASE_CATCHUP) and self.bootstrap_clients:
            return cp
        if self._too_old is not None:
            self._too_old = None
            return Checkpoint(cp.scn if cp is not None else 0, PHASE_CATCHUP, {})
        if cp is None and self.from_snapshot:
            return Checkpoint(0, PHASE_SNAPSHOT, {})
        return None

    def _fetch_or_switch(self, wait_ms: int | None) -> Batch | None:
        try:
            return self.fetch(wait_ms)
        except ScnTooOld as exc:
            if not self.bootstrap_clients:
                raise
            log.warning("scn_too_old_switching_to_bootstrap", since=exc.since, oldest_scn=exc.oldest_scn)
            self._too_old = exc
            return None

    def _idle_wait(self, idle_exit: float | None) -> int | None:
        if idle_exit is None:
            return None
        left = idle_exit - (time.monotonic() - self.last_event_time)
        return max(0, min(self.wait_ms, int(left * 1000)))

    def _idle_over(self, idle_exit: float | None) -> bool:
        return idle_exit is not None and time.monotonic() - self.last_event_time >= idle_exit

    # -- the two consuming styles ----------------------------------------------------------------

    def windows(self, idle_exit: float | None = None) -> Iterator[Window]:
        """Iterate over whole windows; a window is checkpointed when the loop asks for the next one.

        During a bootstrap, an item may be a :class:`SnapshotRestarted` (no events): the snapshot
        starts over and a copy kept from earlier windows is to be replaced by what follows.

        Leaving the loop (``break``, an exception) leaves the checkpoint before the current window, so
        it is delivered again next time. Ends after ``idle_exit`` seconds without events, or ``stop()``.
        """
        self._bodies = True
        while not self.stop_event.is_set() and not self._idle_over(idle_exit):
            start = self._bootstrap_start()
            if start is not None:
                for evs, cp in bootstrap_steps(self, start):
                    if isinstance(evs, SnapshotRestarted):
                        yield evs  # not a source window: replace your copy
                    elif evs:
                        w = self._decode_retrying(evs)
                        self.last_event_time = time.monotonic()
                        yield w
                    self.save(cp)
                continue
            batch = self._fetch_or_switch(self._idle_wait(idle_exit))
            decoded = self._decode_batch(batch)
            if batch is None or decoded is None:
                continue
            for w in decoded:
                self.last_event_time = time.monotonic()
                yield w
                self.commit(w.scn)
            since = self._since()
            scanned = _scanned(batch, decoded)
            if since is None or scanned > since:
                self.commit(scanned)

    def run(self, consumer: Consumer, idle_exit: float | None = None) -> None:
        """Deliver windows to ``consumer`` until ``stop()``, idle exit, or an error it does not absorb."""
        self._bodies = True
        while not self.stop_event.is_set() and not self._idle_over(idle_exit):
            start = self._bootstrap_start()
            if start is not None:
                consumer.on_start_bootstrap(start)
                for evs, cp in bootstrap_steps(self, start):
                    if isinstance(evs, SnapshotRestarted):
                        consumer.on_snapshot_restarted(evs)
                    elif evs:
                        w = self._decode_retrying(evs)
                        self.last_event_time = time.monotonic()
                        self._deliver(consumer, w)
                    consumer.on_checkpoint(self.save(cp))
                    if cp.phase == PHASE_RELAY:
                        consumer.on_end_bootstrap(cp)
                    elif cp.phase == PHASE_SNAPSHOT and not cp.position:
                        consumer.on_start_bootstrap(cp)  # starting over from a new snapshot
                continue
            batch = self._fetch_or_switch(self._idle_wait(idle_exit))
            decoded = self._decode_batch(batch)
            if batch is None or decoded is None:
                continue
            for w in decoded:
                self.last_event_time = time.monotonic()
                self._deliver(consumer, w)
                consumer.on_checkpoint(self.commit(w.scn))
            since = self._since()
            scanned = _scanned(batch, decoded)
            if since is None or scanned > since:
                consumer.on_checkpoint(self.commit(scanned))

    def _deliver(self, consumer: Consumer, w: Window) -> None:
        backoff = Backoff(0.05, self.backoff_max)
        while True:
            try:
                consumer.on_start_window(w)
                for e in w.events:
                    consumer.on_event(e)
                consumer.on_end_window(w)
                return
            except Exception as exc:
                consumer.on_error(exc, w)
                time.sleep(backoff.failed())


#: the reasons :meth:`EventDecoder.decode_body` gives to a corrupt or cut body (not to a bad event in a sound one)
_BAD_BODY = frozenset({"truncated", "bad_version", "bad_frame", "bad_crc", "bad_op", "partial_window"})


def _scanned(batch: Batch, decoded: list[Window]) -> int:
    """How far the relay scanned: its header, or the last window delivered if that is further (a
    :attr:`Batch.body` batch's ``scanned_scn`` is the header's alone; a window whose events were all
    at or below the checkpoint left out changes nothing: the checkpoint is past it)."""
    return max(batch.scanned_scn, decoded[-1].scn) if decoded else batch.scanned_scn
