"""Following the relay into the log store.

Theory of operation: a :class:`~headrace.relay.client.Subscriber` (the client library, like any
subscriber) long-polls the relays from ``log_scn``, failing over across them with backoff. Each
fetched batch of whole windows is written to the log store in one transaction together with the new
``log_scn`` (the SCN the relay scanned to). Writer schemas of new fingerprints are fetched from the
relay and stored before the windows that use them. Frames are stored exactly as served.

The follower follows one store generation (:mod:`._store`): the one being seeded if any — from the
seed's start SCN, while the seed reads — else the served one. When a relay answers ``scn_too_old``
for ``log_scn`` (its buffer or the source's log no longer reaches it, e.g. after a long outage) and
``bootstrap.seed`` is set, it asks the seeder for a new generation (:mod:`._seeder`) and follows
that one; the served snapshot stays served until the new one is complete. Subscribers of the old
generation are told to start their snapshot over when it is replaced.

Resume-state contract: the followed generation's ``log_scn`` in the store is the checkpoint; it
moves only in the transaction that stores the windows, so after kill -9 the follower asks the relay
again from it and no window is stored twice or missed (windows at or below ``log_scn`` are skipped
on insert). A batch for a generation that is no longer followed is refused, and the follower starts
over with the current one.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable

from .._logging import get_logger
from .._tls import as_context
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
        self,
        config: BootstrapConfig,
        store: Store,
        stop: threading.Event,
        positions: threading.Event | None = None,
        reseed: Callable[[str], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        #: how https:// relays are verified (and the client certificate presented)
        self.tls = tls or as_context(config.client_tls)
        #: set once seeding has settled which generation to follow (a restarted seed replaces one)
        self.positions = positions
        #: asks for a new generation (:meth:`~._seeder.Seeder.request`)
        self.reseed = reseed
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

    def _wait_start(self) -> tuple[int | None, int | None]:
        """The generation to follow and the SCN to follow it from (its ``log_scn``); (None, None)
        when the store is empty and nothing will seed it (:meth:`_init` starts it)."""
        while self.positions is not None and not self.positions.wait(0.2):
            if self.stop.is_set():
                return None, None
        while not self.stop.is_set():
            t = self.store.target()
            if t is not None and t["log_scn"] is not None:
                return t["gen"], t["log_scn"]
            if self.config.seed is None:
                return None, None
            self.stop.wait(0.2)
        return None, None

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # keep the server up and report it; follow again after a pause
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("follow_failed", error=self.error)
                self.stop.wait(2.0)

    def _await_new_generation(self, gen: int | None) -> None:
        """Wait until the store follows another generation than ``gen`` (a re-seed started one)."""
        while not self.stop.wait(0.2):
            t = self.store.target()
            if t is not None and t["gen"] != gen:
                return

    def _follow(self) -> None:
        cfg = self.config
        gen, start = self._wait_start()
        if self.stop.is_set():
            return
        sub = Subscriber(
            cfg.relays,
            cfg.sources,
            MemoryCheckpointStore(Checkpoint(start) if start is not None else None),
            token=cfg.relay_token,
            tls=self.tls,
            max_bytes=cfg.max_bytes,
            wait_ms=2_000,
            subscriber_id=f"bootstrap:{cfg.consumer}",
        )
        sub.stop_event = self.stop
        try:
            if start is None:
                start = self._init(sub)
                target = self.store.target()
                gen = target["gen"] if target is not None else None
                sub.checkpoint = Checkpoint(start)
            log.info("following", gen=gen, since=start)
            while not self.stop.is_set():
                try:
                    batch = sub.fetch()
                except ScnTooOld as exc:
                    self.too_old = exc
                    self.error = str(exc)
                    if cfg.seed is None or self.reseed is None:
                        log.error("relay_no_longer_has_log_scn", error=str(exc), detail="configure bootstrap.seed")
                        self.stop.wait(5.0)
                        continue
                    # The source's log moved past ours (a relay buffer shorter than an outage, a
                    # retention setting): a new generation is seeded while the current one is served,
                    # and followed from its own start while it is read.
                    log.warning("relay_no_longer_has_log_scn_reseeding", gen=gen, error=str(exc))
                    self.reseed("relay_no_longer_has_log_scn")
                    self._await_new_generation(gen)
                    self.error = None
                    return
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
                    if not self.store.append(windows, batch.scanned_scn, gen):
                        log.info("generation_replaced", gen=gen, detail="following the new one")
                        return
                    sub.checkpoint = Checkpoint(max(batch.scanned_scn, since))
                    LOGGED_WINDOWS.inc(len(windows))
                    LOGGED_EVENTS.inc(sum(w.events for w in windows))
                self.too_old = None
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
                sub.fail_over_relay()
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
