"""Wiring of ``headrace bootstrap``: store → seeding → follower (relay → log) → applier → HTTP.

Resume-state contract: all state is in the store (see :mod:`._store`); SIGTERM stops the threads
after their current transaction, kill -9 loses at most an uncommitted one, which is redone.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._http import run_app
from .._logging import get_logger
from ._applier import Applier
from ._config import BootstrapConfig
from ._follow import Follower
from ._seed import seed
from ._serve import BootstrapState, build_app
from ._sessions import Sessions
from ._store import Store

__all__ = ["run_bootstrap"]

log = get_logger("bootstrap")


def run_bootstrap(config: BootstrapConfig) -> None:
    """Serve until SIGTERM; seeding, following and applying run in background threads."""
    store = Store(config.store)
    stop = threading.Event()
    sessions = Sessions(config.session_timeout_seconds, time.monotonic)
    positions = threading.Event()  # the follower starts once seeding settled where to follow from
    follower = Follower(config, store, stop, positions)
    applier = Applier(config, store, stop, sessions)
    seed_error: list[str] = []

    def seeding() -> None:
        try:
            if config.seed is not None:
                seed(
                    store,
                    config.seed,
                    config.sources,
                    config.seed_page_rows,
                    stop,
                    relay_slot=config.seed_slot,
                    publication=config.seed_publication,
                    positions=positions,
                )
        except Exception as exc:
            seed_error.append(f"{type(exc).__name__}: {exc}")
            log.exception("seed_failed", error=seed_error[-1])
        finally:
            positions.set()

    seeder = threading.Thread(target=seeding, name="bootstrap-seed", daemon=True)

    def start() -> None:
        seeder.start()
        follower.start()
        applier.start()

    def stop_all() -> None:
        stop.set()
        for t in (seeder, follower.thread, applier.thread):
            if t.is_alive():
                t.join(15)
        store.close()
        log.info("bootstrap_stopped")

    def health() -> dict[str, Any]:
        errors = {
            k: v
            for k, v in (
                ("seed", seed_error[-1] if seed_error else None),
                ("follow", follower.error),
                ("apply", applier.error),
            )
            if v
        }
        return {"ok": not seed_error, "errors": errors}

    state = BootstrapState(
        config,
        store,
        health=health,
        relay_newest=lambda: follower.relay_newest,
        on_start=start,
        on_stop=stop_all,
        sessions=sessions,
    )
    log.info("bootstrap_starting", listen=config.listen, relays=config.relays, store=config.store, seed=config.seed)
    run_app(build_app(state), config.listen)
