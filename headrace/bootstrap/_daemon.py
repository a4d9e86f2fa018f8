"""Wiring of ``headrace bootstrap``: store → seeding → follower (relay → log) → applier → HTTP.

Resume-state contract: all state is in the store (see :mod:`._store`); SIGTERM stops the threads
after their current transaction, kill -9 loses at most an uncommitted one, which is redone.

Supervision: the seeder, follower and applier retry their own errors (reported in ``errors``); an
exception escaping one of their loops is a death: ``/healthz`` 503 naming the thread, restart with
backoff under ``bootstrap.supervise``, and past its limit the server exits non-zero.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .._access import reload_on_sighup
from .._config import load_section
from .._http import bind_listen, run_app
from .._logging import get_logger
from .._supervise import Supervisor
from .._tls import watched_client_context
from ._applier import Applier
from ._config import BootstrapConfig
from ._follow import Follower
from ._seeder import Seeder
from ._serve import BootstrapState, build_app
from ._sessions import Sessions
from ._store import Store

__all__ = ["run_bootstrap"]

log = get_logger("bootstrap")


#: this many re-seeds within a minute turn /healthz to 503: seeding cannot catch up with the relay
RESEED_STORM = 3


def run_bootstrap(config: BootstrapConfig, config_path: str | None = None) -> None:
    """Serve until SIGTERM; seeding, following and applying run in background threads."""
    sock = bind_listen(config.listen, "bootstrap.listen")  # before the store is created or opened
    store = Store(config.store)
    stop = threading.Event()
    sessions = Sessions(config.session_timeout_seconds, time.monotonic)
    tls = watched_client_context(config.client_tls)  # one context for every relay request; SIGHUP re-reads it
    seeder = Seeder(config, store, stop, tls)
    # the follower starts once seeding settled which generation to follow
    follower = Follower(config, store, stop, seeder.settled, seeder.request, tls)
    applier = Applier(config, store, stop, sessions, tls)

    supervisor = Supervisor("bootstrap", config.supervise)
    threads: list[threading.Thread] = []

    def seed() -> None:
        seeder._run()
        if config.seed is None:  # nothing to seed: the worker's job is done, which is not a death
            stop.wait()

    def start() -> None:
        threads.append(supervisor.run("bootstrap-seed", seed))
        threads.append(supervisor.run("bootstrap-follow", follower._run))
        threads.append(supervisor.run("bootstrap-apply", applier._run, on_restart=applier.reopen_clients))

    def stop_all() -> None:
        supervisor.stop()
        stop.set()
        seeder.halt()
        for t in threads:
            if t.is_alive():
                t.join(15)
        store.close()
        log.info("bootstrap_stopped")

    def health() -> dict[str, Any]:
        """503 while seeding fails, the store is down, or a worker thread is down (``reason`` names it)."""
        errors = {k: v for k, v in (("seed", seeder.error), ("follow", follower.error), ("apply", applier.error)) if v}
        sup = supervisor.health()
        try:
            st = store.state()
        except Exception as exc:  # the store itself is down: that is the health
            return {**sup, "ok": False, "errors": {**errors, "store": f"{type(exc).__name__}: {exc}"}}
        b = st["building"]
        problems = [sup["reason"]] if not sup["ok"] and sup.get("reason") else []
        if seeder.error:
            problems.append(f"seeding failed: {seeder.error}")
        if follower.too_old is not None and config.seed is None:
            problems.append(
                f"the relay no longer has the log this server needs ({follower.too_old}); set bootstrap.seed so it "
                "can re-seed, or give the relay a larger buffer"
            )
        recent = [t for t in st["reseeds"].get("recent_ms", []) if t >= time.time() * 1000 - 60_000]
        if len(recent) >= RESEED_STORM:
            problems.append(
                f"re-seeded {len(recent)} times in the last minute (last reason: {st['reseeds'].get('last_reason')}): "
                "the relay's buffer does not reach back to where a seed starts; raise relay.buffer_bytes (or list "
                "this server in relay.durable_consumers) so the log covers a seed"
            )
        out = {
            **sup,
            "ok": not problems,
            "errors": errors,
            "generation": st["gen"],
            "seeding": None if b is None else {"gen": b["gen"], "seed": b["seed"]},
            "reseeds": st["reseeds"],
        }
        if problems:
            out["reason"] = "; ".join(problems)
        return out

    state = BootstrapState(
        config,
        store,
        health=health,
        relay_newest=lambda: follower.relay_newest,
        seed_progress=seeder.progress.status,
        on_start=start,
        on_stop=stop_all,
        sessions=sessions,
    )
    log.info("bootstrap_starting", listen=config.listen, relays=config.relays, store=config.store, seed=config.seed)
    app = build_app(state)

    reload_on_sighup(app.state.access, lambda: load_section(config_path, "bootstrap", BootstrapConfig))
    run_app(app, config.listen, tls=config.tls, limits=config.limits, listen_key="bootstrap.listen", sock=sock)
