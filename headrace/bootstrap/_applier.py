"""The applier: log store → snapshot store, compaction, and acknowledgement to the relays.

Theory of operation: each pass reads up to ``apply_batch_windows`` log windows after
``applied_scn``, folds them into one operation per key (:func:`~._apply.merge`, sans-io) and writes
those with the new ``applied_scn`` in one transaction. When the log holds nothing newer,
``applied_scn`` moves up to ``log_scn`` (the relay scanned that far with nothing for us). After
each pass that moved it, ``applied_scn`` is acknowledged to every relay (``POST /v1/ack`` as
``bootstrap.consumer``), which lets the relay's source discard its log only up to what the
snapshot store durably holds. Compaction deletes log windows at or below ``applied_scn`` whose
commit time is older than ``retention_seconds`` and raises ``log_floor``.

Each store generation (:mod:`._store`) is applied on its own, bounded by its own ``log_scn``: the
served one, and one being seeded once its seed is done (windows after the seed's start SCN are
applied only over a finished seed, see :mod:`._seed`). A generation being built is promoted — served
from then on — as soon as its log is applied up to the seed's ``high_scn``; rows of replaced
generations are then deleted in batches. Updates that left a TOASTed value unchanged are merged
with the stored value filled in (:mod:`._toast`). Acknowledgements carry the served generation's
``applied_scn``.

Resume-state contract: ``applied_scn`` moves in the same transaction as the rows, so a pass cut by
kill -9 is simply done again. Acknowledgements are re-sent after every restart and periodically.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import httpx

from .._logging import get_logger
from .._tls import as_context
from ..errors import InvalidInput, Unavailable
from ..relay import iter_frames, split_windows
from ..relay.client import RelayClient
from ._apply import merge, sort_key
from ._config import BootstrapConfig
from ._metrics import APPLIED_SCN, APPLIED_WINDOWS, COMPACTED_WINDOWS, LOG_SCN
from ._sessions import Sessions
from ._store import Store
from ._store_state import GenState, StoreState
from ._toast import SchemaCache, ToastFiller

__all__ = ["Applier", "apply_once", "compact_once", "lag"]

log = get_logger("bootstrap.apply")


def seeding_blocks(state: StoreState | GenState) -> bool:
    """True while the served generation's seed is in progress (the applier must wait)."""
    seed = state.get("seed")
    return seed is not None and not seed.get("done")


def generation_ready(g: GenState) -> bool:
    """A generation's seed is done and its log applied up to the seed's newest page SCN."""
    seed = g.get("seed")
    if seed is None:
        return g.get("applied_scn") is not None
    return bool(seed.get("done")) and g["applied_scn"] is not None and g["applied_scn"] >= seed["high_scn"]


def _apply_gen(store: Store, g: StoreState | GenState, max_windows: int, schemas: SchemaCache) -> int:
    """One pass over one generation's log: windows after its ``applied_scn`` up to its ``log_scn``."""
    applied, head, gen = g["applied_scn"], g["log_scn"], g["gen"]
    if applied is None or gen is None:  # not started: nothing to apply
        return 0
    windows = store.log_windows(applied, max_windows, upto=head)
    if not windows:
        if head is not None and head > applied:
            store.apply([], int(head), expect=applied, gen=gen)
        return 0
    events = list(split_windows(iter_frames(b"".join(w.data for w in windows))))
    schemas.new_pass()
    marked = {(e.source, sort_key(e.key)) for evs in events for e in evs if schemas.is_marked(e.fingerprint)}
    stored = store.frames(gen, marked) if marked else {}
    ops = merge(events, ToastFiller(schemas, lambda s, k: stored.get((s, k))) if marked else None)
    if not store.apply(ops.values(), windows[-1].scn, expect=applied, gen=gen):
        log.info("apply_raced", detail="another applier moved applied_scn first (or the generation was replaced)")
        return 0
    APPLIED_WINDOWS.inc(len(windows))
    return len(windows)


def apply_once(store: Store, max_windows: int, schemas: SchemaCache | None = None) -> int:
    """One applier pass; returns how many windows were merged (0: nothing to do, or seeding).

    The served generation's log is applied to its rows; a generation being built is applied once
    its seed is done, and promoted (served) as soon as it is ready (:func:`generation_ready`)."""
    schemas = schemas if schemas is not None else SchemaCache(store.schemas)
    st = store.state()
    n = 0
    if st["gen"] is not None and st["applied_scn"] is not None and not seeding_blocks(st):
        n += _apply_gen(store, st, max_windows, schemas)
    b = st["building"]
    if b is not None and b["seed"] is not None and b["seed"].get("done"):
        n += _apply_gen(store, b, max_windows, schemas)
        now = store.state()["building"]
        if now is not None and now["gen"] == b["gen"] and generation_ready(now) and store.promote(b["gen"]):
            log.info(
                "generation_promoted",
                gen=b["gen"],
                previous=st["gen"],
                applied_scn=now["applied_scn"],
                detail="the new snapshot is served; subscribers of the previous one start over",
            )
    return n


def compact_once(
    store: Store, retention_seconds: float, now_ms: int | None = None, keep_from: int | None = None
) -> int:
    """Delete applied log windows older than the retention window (and at or below ``keep_from``,
    the lowest SCN a bootstrap session in progress still needs); returns how many."""
    st = store.state()
    if st["applied_scn"] is None:
        return 0
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    below = int(st["applied_scn"]) if keep_from is None else min(int(st["applied_scn"]), keep_from)
    n = store.compact(below, now - int(retention_seconds * 1000))
    COMPACTED_WINDOWS.inc(n)
    if n:
        log.info("log_compacted", windows=n, below_scn=st["applied_scn"])
    return n


def lag(store: Store, relay_newest: int | None = None) -> dict[str, Any]:
    """Positions and lags: ``log_scn``, ``applied_scn``, ``log_floor``, unapplied windows, seed progress."""
    st = store.state()
    pending = (
        store.log_windows(int(st["applied_scn"]), 1_000_000, upto=st["log_scn"])
        if st["applied_scn"] is not None
        else []
    )
    out: dict[str, Any] = {
        "log_scn": st["log_scn"],
        "applied_scn": st["applied_scn"],
        "log_floor": st["log_floor"],
        "unapplied_windows": len(pending),
        "unapplied_events": sum(w.events for w in pending),
        "apply_lag_ms": int(time.time() * 1000) - pending[0].ts_ms if pending else 0,
        "seed": st["seed"] if st["building"] is None else st["building"]["seed"],
        "generation": st["gen"],
        "building": st["building"],
        "reseeds": st["reseeds"],
    }
    if relay_newest is not None and st["log_scn"] is not None:
        out["relay_newest_scn"] = relay_newest
        out["log_behind_relay"] = relay_newest > st["log_scn"]
    return out


class Applier:
    """Runs apply/compact/ack passes in a background thread."""

    def __init__(
        self,
        config: BootstrapConfig,
        store: Store,
        stop: threading.Event,
        sessions: Sessions | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.store = store
        self.stop = stop
        self.error: str | None = None
        self.acked: dict[str, int] = {}
        ctx = tls or as_context(config.client_tls)
        self.clients = [RelayClient(u, token=config.relay_token, timeout=5.0, tls=ctx) for u in config.relays]
        self.thread = threading.Thread(target=self._run, name="bootstrap-apply", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def reopen_clients(self) -> None:
        """New relay clients (a run of :meth:`_run` closes its clients when it ends; a restart needs new ones)."""
        for c in self.clients:
            c.close()
        self.clients = [RelayClient(u, token=self.config.relay_token, timeout=5.0) for u in self.config.relays]

    def _run(self) -> None:
        cfg = self.config
        last_compact = 0.0
        last_ack = 0.0
        garbage = True
        schemas = SchemaCache(self.store.schemas)
        try:
            while not self.stop.is_set():
                try:
                    n = apply_once(self.store, cfg.apply_batch_windows, schemas) if cfg.apply_in_server else 0
                    now = time.monotonic()
                    if now - last_compact >= cfg.compact_interval_seconds:
                        last_compact = now
                        keep = self.sessions.keep_from() if self.sessions is not None else None
                        compact_once(self.store, cfg.retention_seconds, keep_from=keep)
                        garbage = True
                    if garbage:  # rows of replaced generations, a batch per pass
                        garbage = self.store.collect_garbage() > 0
                    st = self.store.state()
                    if st["log_scn"] is not None:
                        LOG_SCN.set(st["log_scn"])
                    if st["applied_scn"] is not None and not seeding_blocks(st):
                        APPLIED_SCN.set(st["applied_scn"])
                        if n or now - last_ack >= 2.0:
                            last_ack = now
                            self.ack(int(st["applied_scn"]))
                    self.error = None
                except Exception as exc:  # a store hiccup: report, back off, go on
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.exception("apply_failed", error=self.error)
                    self.stop.wait(1.0)
                    continue
                if not n:
                    self.stop.wait(cfg.apply_interval_seconds)
        finally:
            for c in self.clients:
                c.close()

    def ack(self, scn: int) -> None:
        """Tell every relay the store durably holds everything ≤ ``scn``."""
        for c in self.clients:
            if self.acked.get(c.url) == scn:
                continue
            try:
                self.acked[c.url] = c.ack(self.config.consumer, scn)
            except (Unavailable, InvalidInput, httpx.HTTPError) as exc:
                log.warning("ack_failed", relay=c.url, scn=scn, error=str(exc))
                self.acked.pop(c.url, None)
