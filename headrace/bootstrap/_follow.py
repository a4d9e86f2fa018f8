"""Following the relay into the log store.

Theory of operation: a :class:`~headrace.relay.client.Subscriber` (the client library, like any
subscriber) long-polls the relays from ``log_scn``, failing over across them with backoff. Each
fetched batch of whole windows is written to the log store in one transaction together with the new
``log_scn`` (the SCN the relay scanned to). Writer schemas of new fingerprints are fetched from the
relay and stored before the windows that use them. Frames are stored exactly as served.

When a relay answers ``scn_too_old`` for ``log_scn`` (the source's log was pruned past it, e.g. by a
retention setting or a long outage) and ``bootstrap.seed`` is set, the stores are emptied and seeded
again; subscribers in the middle of a bootstrap get 410 from catch-up and start their snapshot over.

Resume-state contract: ``log_scn`` in the store is the checkpoint; it moves only in the transaction
that stores the windows, so after kill -9 the follower asks the relay again from it and no window
is stored twice or missed (windows at or below ``log_scn`` are skipped on insert).
"""

from __future__ import annotations

import threading
import time

from .._logging import get_logger
from ..errors import InvalidInput, ScnTooOld, Unavailable
from ..relay import Event, encode_event
from ..relay.client import Checkpoint, MemoryCheckpointStore, Subscriber
from ._config import BootstrapConfig
from ._metrics import LOGGED_EVENTS, LOGGED_WINDOWS
from ._store import LogWindow, Store

__all__ = ["Follower"]

log = get_logger("bootstrap.follow")


def log_window(events: list[Event]) -> LogWindow:
    """A whole window as the log store keeps it."""
    return LogWindow(
        scn=events[-1].scn,
        first_scn=events[0].scn,
        ts_ms=events[-1].ts_ms,
        events=len(events),
        tables=frozenset(e.source for e in events),
        data=b"".join(encode_event(e) for e in events),
    )


class Follower:
    """Relay → log store, in a background thread."""

    def __init__(
        self, config: BootstrapConfig, store: Store, stop: threading.Event, positions: threading.Event | None = None
    ) -> None:
        #: set once seeding has settled the store's positions (a restarted PostgreSQL seed replaces them)
        self.positions = positions
        self.config = config
        self.store = store
        self.stop = stop
        self.error: str | None = None
        self.too_old: ScnTooOld | None = None
        self.relay_newest: int | None = None
        self._known: set[str] = set(store.schemas())
        self.thread = threading.Thread(target=self._run, name="bootstrap-follow", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _wait_start(self) -> int | None:
        """The SCN to follow from: the store's ``log_scn`` (set by seeding or by :meth:`_init`)."""
        while self.positions is not None and not self.positions.wait(0.2):
            if self.stop.is_set():
                return None
        while not self.stop.is_set():
            st = self.store.state()
            if st["log_scn"] is not None:
                return int(st["log_scn"])
            if self.config.seed is None:
                return None
            self.stop.wait(0.2)
        return None

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # keep the server up and report it; follow again after a pause
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("follow_failed", error=self.error)
                self.stop.wait(2.0)

    def _follow(self) -> None:
        cfg = self.config
        start = self._wait_start()
        if self.stop.is_set():
            return
        sub = Subscriber(
            cfg.relays,
            cfg.sources,
            MemoryCheckpointStore(Checkpoint(start) if start is not None else None),
            token=cfg.relay_token,
            max_bytes=cfg.max_bytes,
            wait_ms=2_000,
            subscriber_id=f"bootstrap:{cfg.consumer}",
        )
        sub.stop_event = self.stop
        try:
            if start is None:
                start = self._init(sub)
                sub.checkpoint = Checkpoint(start)
            while not self.stop.is_set():
                try:
                    batch = sub.fetch()
                except ScnTooOld as exc:
                    self.too_old = exc
                    self.error = str(exc)
                    seeding = (self.store.state()["seed"] or {}).get("done") is False
                    if cfg.seed is None or seeding:  # (a seed in progress restarts on the next server start)
                        log.error("relay_no_longer_has_log_scn", error=str(exc), detail="configure bootstrap.seed")
                        self.stop.wait(5.0)
                        continue
                    # the source's log moved past ours (retention, a long outage): seed again from scratch
                    log.warning("relay_no_longer_has_log_scn_reseeding", error=str(exc))
                    from ._seed import seed

                    self.store.reset()
                    seed(
                        self.store,
                        cfg.seed,
                        cfg.sources,
                        cfg.seed_page_rows,
                        self.stop,
                        relay_slot=cfg.seed_slot,
                        publication=cfg.seed_publication,
                    )
                    sub.checkpoint = Checkpoint(int(self.store.state()["log_scn"]))
                    continue
                except InvalidInput as exc:
                    self.error = str(exc)
                    log.error("relay_refused", error=str(exc))
                    self.stop.wait(5.0)
                    continue
                if batch is None:
                    continue
                self.relay_newest = batch.newest_scn
                windows = [log_window(evs) for evs in batch.windows]
                new_fps = {e.fingerprint for evs in batch.windows for e in evs} - self._known
                if new_fps:
                    self._fetch_schemas(sub, new_fps)
                since = sub.checkpoint.scn if sub.checkpoint else -1
                if windows or batch.scanned_scn > since:
                    self.store.append(windows, batch.scanned_scn)
                    sub.checkpoint = Checkpoint(max(batch.scanned_scn, since))
                    LOGGED_WINDOWS.inc(len(windows))
                    LOGGED_EVENTS.inc(sum(w.events for w in windows))
                self.error = None
        finally:
            sub.close()

    def _init(self, sub: Subscriber) -> int:
        """No seeding and an empty store: start at the oldest SCN a relay holds."""
        while not self.stop.is_set():
            try:
                oldest = int(sub.relay.status()["oldest_scn"])
            except (Unavailable, InvalidInput) as exc:
                log.warning("relay_status_unavailable", error=str(exc))
                sub._current = (sub._current + 1) % len(sub.clients)
                self.stop.wait(1.0)
                continue
            if oldest > 0:
                log.warning(
                    "log_starts_after_history",
                    oldest_scn=oldest,
                    detail="rows changed before this SCN are missing; configure bootstrap.seed",
                )
            self.store.init_positions(oldest)
            return oldest
        return 0

    def _fetch_schemas(self, sub: Subscriber, fps: set[str]) -> None:
        deadline = time.monotonic() + 60
        versions = []
        for fp in sorted(fps):
            while True:
                try:
                    versions.append(sub._fetch_schema(fp))
                    break
                except Unavailable:
                    if time.monotonic() > deadline or self.stop.wait(0.5):
                        raise
        self.store.put_schemas(versions)
        self._known |= fps
