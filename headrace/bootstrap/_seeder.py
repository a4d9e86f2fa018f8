"""The seeding thread: seeds a new store generation when one is needed, while the old one is served.

Theory of operation. A seed is needed when nothing is served or being built yet (``initial``), when
a generation's seed was cut by a crash (``seed_interrupted``: SQLite resumes it; PostgreSQL and
MariaDB/MySQL start a new generation because their snapshot dies with its session), and when the follower asks for
one (``relay_no_longer_has_log_scn``: the relay's buffer no longer reaches the log's position, so the
log has a gap). A seed always fills a *new* generation (:meth:`~._store.Store.begin_generation`):
the served snapshot stays served — with its log, for subscribers already bootstrapping — until the
new generation is complete and applied, when the applier promotes it. The follower follows the new
generation from the seed's start SCN *while* the seed runs, so a seed that takes longer than the
relay's buffer covers still lands: its log is already in the store when it finishes. A request that
arrives while a seed runs (its own start position was already gone) abandons that seed and starts
another. Every re-seed is counted in the store (``reseeds``: count, last reason and time, shown by
``/healthz`` and ``/v1/status``), logged (``reseeding``) and counted in
``headrace_bootstrap_reseeds_total{reason}``.

Resume-state contract: the decision is made from the store's state alone (a generation being built
with ``seed.done = false`` is an interrupted seed), so a restart after kill -9 picks up where the
store says; a pending re-seed request lost by a crash is asked again by the follower, which finds
the relay still too old for the log.
"""

from __future__ import annotations

import ssl
import threading
import time

from .._backoff import Backoff
from .._logging import get_logger
from .._tls import as_context
from ._config import BootstrapConfig
from ._metrics import RESEEDS
from ._seed import seed, seed_needed
from ._seed_progress import SeedProgress
from ._store import Store

__all__ = ["Seeder"]

log = get_logger("bootstrap.seeder")


class _Either:
    """Set when either event is: the daemon stops, or the seed in progress is abandoned."""

    def __init__(self, a: threading.Event, b: threading.Event) -> None:
        self.a, self.b = a, b

    def is_set(self) -> bool:
        return self.a.is_set() or self.b.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            self.b.wait(left)
        return True


class Seeder:
    """Runs seeds in a background thread (see the module docstring)."""

    def __init__(
        self, config: BootstrapConfig, store: Store, stop: threading.Event, tls: ssl.SSLContext | None = None
    ) -> None:
        self.config = config
        #: how https:// relays are verified when MySQL/MariaDB seeding asks them
        self.tls = tls or as_context(config.client_tls)
        self.store = store
        self.stop = stop
        #: set once the generation to follow is settled (the follower waits for it on start)
        self.settled = threading.Event()
        self.error: str | None = None
        #: rows seeded per table of the seed in hand (or the last one), for /v1/status and seed_progress lines
        self.progress = SeedProgress()
        self._lock = threading.Lock()
        self._request: str | None = None
        self._wake = threading.Event()
        self._abandon = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bootstrap-seed", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def request(self, reason: str) -> None:
        """Seed a new generation (abandoning a seed in progress)."""
        with self._lock:
            if self._request is None:
                log.warning("reseed_requested", reason=reason)
            self._request = reason
            self._abandon.set()
            self._wake.set()

    def halt(self) -> None:
        self._abandon.set()
        self._wake.set()

    def _next(self) -> str | None:
        with self._lock:
            reason, self._request = self._request, None
            self._abandon.clear()
            self._wake.clear()
        return reason or seed_needed(self.store.state())

    def _run(self) -> None:
        cfg = self.config
        if cfg.seed is None:
            self.settled.set()
            return
        backoff = Backoff(1.0, 30.0)
        while not self.stop.is_set():
            reason: str | None = None
            try:
                reason = self._next()
                if reason is None:
                    self.settled.set()
                    self._wake.wait(1.0)
                    continue
                if reason not in ("initial", "seed_interrupted"):
                    self._log_reseed(reason)
                seed(
                    self.store,
                    cfg.seed,
                    cfg.sources,
                    cfg.seed_page_rows,
                    _Either(self.stop, self._abandon),
                    relay_slot=cfg.seed_slot,
                    publication=cfg.seed_publication,
                    positions=self.settled,
                    reason=reason,
                    relays=cfg.relays,
                    relay_token=cfg.relay_token,
                    relay_tls=self.tls,
                    progress=self.progress,
                )
                self.error = None
                backoff.succeeded()
            except Exception as exc:  # report it (health), retry with backoff; the old snapshot is still served
                with self._lock:
                    if self._request is None and reason is not None:
                        self._request = reason  # (a requested re-seed must still happen)
                self.error = f"{type(exc).__name__}: {exc}"
                self.progress.end(False)
                log.exception("seed_failed", error=self.error)
                self.settled.set()
                self.stop.wait(backoff.failed())

    def _log_reseed(self, reason: str) -> None:
        st = self.store.state()
        RESEEDS.labels(reason).inc()
        log.warning(
            "reseeding",
            reason=reason,
            previous_count=st["reseeds"].get("count", 0),
            serving_gen=st["gen"],
            detail="seeding a new generation; the current snapshot is served until it is complete",
        )
