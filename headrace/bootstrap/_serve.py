"""The bootstrap server's HTTP API (Starlette): snapshot, catch-up, status, sources, schemas.

This module holds what the handlers share (:class:`BootstrapState`) and assembles the app:
``GET /v1/snapshot`` pages through the snapshot store (``_serve_snapshot.py``), ``GET /v1/catchup``
answers like the relay's ``/v1/stream`` from the log store (``_serve_catchup.py``), and
``/v1/schemas/{fingerprint}``, the headers and the reasons are the relay protocol's
(``relay/_protocol.py``). Every route but ``/healthz`` and the status page needs the ``read`` scope.
See ``docs/bootstrap.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._http import Handler, read_only_access, rejecter, standard_routes
from .._logging import get_logger
from ..relay import SchemaVersion, source_listing
from ..relay._protocol import schema_endpoint
from ._applier import lag
from ._config import BootstrapConfig
from ._metrics import REJECTS
from ._serve_catchup import catchup_endpoint
from ._serve_snapshot import decode_cursor, encode_cursor, snapshot_endpoint, snapshot_ready, snapshot_restarted
from ._sessions import Sessions
from ._store import Store

__all__ = [
    "BootstrapState",
    "build_app",
    "decode_cursor",
    "encode_cursor",
    "snapshot_ready",
    "snapshot_restarted",
]

log = get_logger("bootstrap.serve")


@dataclass
class BootstrapState:
    """What the handlers share."""

    config: BootstrapConfig
    store: Store
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"ok": True})
    relay_newest: Callable[[], int | None] = field(default=lambda: None)
    #: the seed's progress (:meth:`~._seed_progress.SeedProgress.status`), shown as ``seeding`` in /v1/status
    seed_progress: Callable[[], dict[str, Any] | None] = field(default=lambda: None)
    schemas: dict[str, SchemaVersion] = field(default_factory=dict)
    on_start: Callable[[], None] | None = None
    on_stop: Callable[[], None] | None = None
    sessions: Sessions = field(default_factory=lambda: Sessions(600.0, time.monotonic))

    def known_sources(self) -> frozenset[str]:
        if self.config.sources is not None:
            return frozenset(self.config.sources)
        if not self.schemas:
            self.schemas = self.store.schemas()
        return frozenset(sv.table for sv in self.schemas.values())

    def schema(self, fp: str) -> SchemaVersion | None:
        sv = self.schemas.get(fp)
        if sv is None:
            self.schemas = self.store.schemas()
            sv = self.schemas.get(fp)
        return sv


def build_app(st: BootstrapState) -> Starlette:
    """The bootstrap server's Starlette app; ``on_start``/``on_stop`` run in its lifespan."""
    cfg = st.config
    access, read = read_only_access("bootstrap", cfg, REJECTS)
    reject = rejecter(REJECTS, log)

    async def lookup(fp: str) -> SchemaVersion | None:
        return await asyncio.to_thread(st.schema, fp)

    routes = [
        *standard_routes(lambda: st.health(), access, "bootstrap"),
        Route("/v1/snapshot", read(snapshot_endpoint(st, reject))),
        Route("/v1/catchup", read(catchup_endpoint(st, reject))),
        Route("/v1/status", read(status_endpoint(st))),
        Route("/v1/sources", read(sources_endpoint(st))),
        Route("/v1/schemas/{fingerprint}", read(schema_endpoint(lookup, reject))),
    ]
    app = Starlette(routes=routes, lifespan=_lifespan(st))
    app.state.access = access
    return app


def status_endpoint(st: BootstrapState) -> Handler:
    """``GET /v1/status``: lag behind the relay, readiness, sources, health and open sessions."""

    async def status(request: Request) -> Response:
        body = await asyncio.to_thread(lag, st.store, st.relay_newest())
        state = await asyncio.to_thread(st.store.state)
        body["snapshot_ready"] = snapshot_ready(state) is None
        body["sources"] = sorted(await asyncio.to_thread(st.known_sources))
        body["health"] = st.health()
        body["bootstrap_sessions"] = st.sessions.count()
        body["seeding"] = st.seed_progress()
        return JSONResponse(body)

    return status


def sources_endpoint(st: BootstrapState) -> Handler:
    """``GET /v1/sources``: every source kept here with its schema versions (as the relay lists them)."""

    async def sources(request: Request) -> Response:
        st.schemas = await asyncio.to_thread(st.store.schemas)
        by_table: dict[str, list[SchemaVersion]] = {}
        for sv in st.schemas.values():
            by_table.setdefault(sv.table, []).append(sv)
        out = source_listing(st.known_sources(), lambda name: sorted(by_table.get(name, []), key=lambda v: v.version))
        return JSONResponse({"sources": out})

    return sources


def _lifespan(st: BootstrapState) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if st.on_start is not None:
            st.on_start()
        try:
            yield
        finally:
            if st.on_stop is not None:
                await asyncio.to_thread(st.on_stop)

    return lifespan
