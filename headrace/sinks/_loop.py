"""The supervised subscriber loop of ``headrace sink``.

Theory of operation: a :class:`~headrace.relay.client.Subscriber` (relays, bootstrap switchover,
``from_snapshot``) whose checkpoint store is the *target*: :meth:`TargetStore.load` reads the
checkpoint the target holds, and :meth:`TargetStore.save`, which the subscriber calls after each
window it delivered, stages that window with its checkpoint. Staged windows are committed together
with the newest staged checkpoint by :meth:`Target.commit` — when ``batch_windows`` or ``batch_rows``
is reached, ``batch_seconds`` passed, at the end of each relay response (before the next long-poll),
at a checkpoint-only save (end of a scanned range, a bootstrap phase switch), and on a clean stop.
A window the subscriber yielded but did not checkpoint yet is never committed.

Supervision: any failure (a relay or bootstrap server down for good, the target unreachable, a
statement refused) discards what is staged, closes everything, waits (exponential backoff) and starts
over from the checkpoint the target holds, so nothing uncommitted is assumed. Configuration errors
and ``scn_too_old`` without a bootstrap server end the process.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from .._logging import get_logger
from .._tls import ClientTLS
from ..errors import ScnTooOld, TransientError, UsageError
from ..relay.client import Batch, Checkpoint, SnapshotRestarted, Subscriber, Window
from ._config import SinkConfig
from ._health import HealthServer, SinkMetrics
from ._target import MarkedTarget, Target

__all__ = ["SinkSubscriber", "TargetStore", "make_target", "run_once", "run_sink"]

log = get_logger("sink")


class TargetStore:
    """The subscriber's checkpoint store: the target itself, with windows staged until a commit."""

    def __init__(
        self,
        target: Target,
        batch_windows: int,
        batch_rows: int,
        batch_seconds: float,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.target = target
        self.metrics = metrics
        self.batch_windows = batch_windows
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self._unsaved: list[Window | SnapshotRestarted] = []  # yielded, not yet checkpointed
        self._staged: list[Window | SnapshotRestarted] = []
        #: (number of staged items, the checkpoint saved after them), for targets that skip replays per window
        self._marks: list[tuple[int, Checkpoint]] = []
        self._rows = 0
        self._pending: Checkpoint | None = None
        self._since = time.monotonic()
        self.committed: Checkpoint | None = None
        self.commits = 0
        self.rows_written = 0

    def load(self) -> Checkpoint | None:
        self.committed = self.target.load()
        if self.metrics is not None:
            self.metrics.loaded(self.committed.scn if self.committed is not None else None)
        return self.committed

    def stage(self, item: Window | SnapshotRestarted) -> None:
        """An item the subscriber yielded; it is committed with the checkpoint saved after it."""
        self._unsaved.append(item)

    def save(self, checkpoint: Checkpoint) -> None:
        fresh = bool(self._unsaved)
        for item in self._unsaved:
            self._staged.append(item)
            self._rows += len(item.events)
        self._unsaved = []
        self._marks.append((len(self._staged), checkpoint))
        if self._pending is None:
            self._since = time.monotonic()
        self._pending = checkpoint
        if (
            not fresh
            or len(self._staged) >= self.batch_windows
            or self._rows >= self.batch_rows
            or time.monotonic() - self._since >= self.batch_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Commit what is staged with the newest staged checkpoint (nothing to do without one)."""
        cp = self._pending
        if cp is None:
            return
        if self.committed is not None and not self._staged and cp == self.committed:
            self._pending = None
            self._marks = []
            return
        if isinstance(self.target, MarkedTarget):
            n = self.target.commit_marked(self._staged, self._marks, cp)
        else:
            n = self.target.commit(self._staged, cp)
        self.commits += 1
        self.rows_written += n
        if self.metrics is not None:
            windows = [w for w in self._staged if isinstance(w, Window)]
            newest = max((e.ts_ms for e in windows[-1].events), default=None) if windows else None
            self.metrics.committed(cp.scn, cp.phase, len(windows), n, newest)
        log.debug("sink_committed", scn=cp.scn, phase=cp.phase, windows=len(self._staged), rows=n)
        self.committed = cp
        self._staged = []
        self._marks = []
        self._rows = 0
        self._pending = None


class SinkSubscriber(Subscriber):
    """A subscriber that commits what its store staged before each long-poll (the end of a relay response)."""

    def fetch(self, wait_ms: int | None = None) -> Batch | None:
        if isinstance(self.store, TargetStore):
            self.store.flush()
        batch = super().fetch(wait_ms)
        if batch is not None and isinstance(self.store, TargetStore) and self.store.metrics is not None:
            self.store.metrics.relay_head(batch.newest_scn)
        return batch


#: the subscriber of the run in progress (a signal stops it)
_ACTIVE: list[Subscriber] = []


def _on_signal(stop: threading.Event) -> None:
    stop.set()
    for sub in list(_ACTIVE):
        sub.stop()


def make_target(cfg: SinkConfig) -> Target:
    """Open the configured target."""
    if cfg.target.type == "sql":
        from ._sql import SqlSinkTarget

        return SqlSinkTarget(cfg.target, cfg.name)
    if cfg.target.type == "lake":
        from ._lake import LakeSinkTarget

        lake_target: Target = LakeSinkTarget(cfg.target, cfg.name)
        return lake_target
    from ._nats import NatsSinkTarget

    nats_target: Target = NatsSinkTarget(cfg.target, cfg.name)
    return nats_target


def _batching(cfg: SinkConfig) -> tuple[int, int, float]:
    t: Any = cfg.target
    if cfg.target.type in ("sql", "lake"):
        return t.batch_windows, t.batch_rows, t.batch_seconds
    return 1_000_000, t.max_pending, 0.2  # nats: publishes are acked per commit; a commit per response or 0.2 s


def run_once(
    cfg: SinkConfig,
    stop: threading.Event,
    idle_exit: float | None,
    tls: ClientTLS | None,
    metrics: SinkMetrics | None = None,
) -> str | None:
    """One supervised run: open the target, resume from its checkpoint, deliver until idle or stop.

    Returns when it ended (idle exit or stop): None, or why no relay answered when an idle exit came
    while the relays were failing (not "caught up"); raises on failure.
    """
    target = make_target(cfg)
    sub: SinkSubscriber | None = None
    try:
        store = TargetStore(target, *_batching(cfg), metrics=metrics)
        bootstrap = list(cfg.bootstrap)
        sub = SinkSubscriber(
            cfg.relays,
            cfg.sources,
            store,
            cfg.filter,
            token=cfg.token,
            wait_ms=5_000,
            subscriber_id=f"sink-{cfg.name}",
            bootstrap=bootstrap,
            from_snapshot=cfg.from_snapshot and bool(bootstrap),
            snapshot_rows=cfg.snapshot_rows,
            tls=tls,
        )
        log.info("sink_started", name=cfg.name, target=cfg.target.type, checkpoint=_cp(store.committed))
        decoder = sub.decoder

        def schema_of(fp: str, table: str) -> dict[str, Any]:
            return decoder.codec(fp, table).version.schema

        _ACTIVE.append(sub)
        if stop.is_set():
            sub.stop()
        for item in sub.windows(idle_exit=idle_exit):
            if not isinstance(item, SnapshotRestarted):
                target.prepare(item, schema_of)
            store.stage(item)
        store.flush()
        done = _cp(store.committed)
        log.info("sink_stopped", name=cfg.name, checkpoint=done, commits=store.commits, rows=store.rows_written)
        if sub.last_error is not None and not stop.is_set():
            log.warning("sink_idle_while_relays_fail", error=sub.last_error)
            return sub.last_error
        return None
    finally:
        if sub is not None:
            _ACTIVE.remove(sub)
            sub.close()
        target.close()


def _cp(cp: Checkpoint | None) -> dict[str, Any] | None:
    return cp.to_json() if cp is not None else None


def run_sink(cfg: SinkConfig, idle_exit: float | None = None, tls: ClientTLS | None = None) -> None:
    """Run ``headrace sink`` until SIGTERM/SIGINT or ``idle_exit`` seconds without events.

    Failures restart the run from the target's checkpoint after a backoff; :class:`ScnTooOld` (no
    bootstrap server configured) and configuration errors end it, and so does an idle exit while no
    relay answered (:class:`~headrace.errors.TransientError`, exit 1).
    """
    metrics = SinkMetrics(cfg.name)
    server = HealthServer(cfg.listen, metrics) if cfg.listen else None  # bound first: a port in use stops here
    if server is not None:
        server.start()
    try:
        _supervise(cfg, idle_exit, tls, metrics)
    finally:
        if server is not None:
            server.stop()


def _supervise(cfg: SinkConfig, idle_exit: float | None, tls: ClientTLS | None, metrics: SinkMetrics) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _on_signal(stop))
    backoff = cfg.backoff_seconds
    while not stop.is_set():
        started = time.monotonic()
        try:
            failed = run_once(cfg, stop, idle_exit, tls or cfg.client_tls, metrics)
        except (ScnTooOld, UsageError):
            raise
        except Exception as exc:  # supervised: start over from the target's checkpoint
            metrics.failed(repr(exc)[:500])
            log.warning("sink_failed_restarting", error=repr(exc)[:500], backoff_seconds=round(backoff, 2))
            if time.monotonic() - started > 60:
                backoff = cfg.backoff_seconds
            if stop.wait(backoff):
                return
            backoff = min(backoff * 2, cfg.backoff_max_seconds)
            continue
        if failed is not None:  # an idle exit while the relays failed is not "caught up"
            raise TransientError(f"idle exit while no relay answered; the last error: {failed}")
        return
