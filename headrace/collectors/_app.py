"""The collector daemon: a Starlette app whose lifespan runs the group commit into a store.

Data flow: ``POST /v1/chunks`` (``_receive``) → group commit (``_commit``) → a store, either

* the sink store (``_sinkstore``): dedupe (``_dedupe``) → rolling Avro sink files (``_sink``,
  ``_roll``; crash recovery with ``_container``), or, when ``upstream`` is set,
* the forward store (``_forward``): the bounded spool → upstream collectors.

Start (in :func:`build_app`, before the server binds): lock the folder, recover what a crash left
(sink files in ``open/`` and the dedupe index, or the spool's torn tail); then serve. SIGTERM:
uvicorn stops taking connections and lets in-flight requests finish (their acks included), then the
lifespan's shutdown commits what still waits and closes the store (the sink rolls its open file
into ``done/`` and saves the index; the forwarder stops its pump and closes the spool).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._access import Access
from .._chunk import Chunk
from .._http import standard_routes
from .._logging import get_logger
from . import _metrics as m
from ._commit import GroupCommit, Store
from ._config import CollectorConfig
from ._receive import ChunkReceiver, Limits

__all__ = ["build_app"]

log = get_logger("collector")


def _counter(name: str) -> int:
    return int(REGISTRY.get_sample_value(name) or 0)


def _rejects() -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in REGISTRY.collect():
        if metric.name == "headrace_collector_rejects":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[s.labels["reason"]] = int(s.value)
    return out


def _sink_store(cfg: CollectorConfig) -> tuple[Store, Callable[[], None], Callable[[], None]]:
    from ._roll import RollPolicy
    from ._sink import SinkFiles
    from ._sinkstore import SinkStore

    sink = SinkFiles(cfg.sink_dir, cfg.name, cfg.codec)
    sink.lock()
    try:
        index, report = sink.recover()
    except BaseException:
        sink.unlock()
        raise
    log.info(
        "sink recovered",
        sink_dir=str(sink.root),
        recovered=report.recovered,
        removed=report.removed,
        torn_bytes=report.torn_bytes,
        index_rebuilt=report.index_rebuilt,
        streams=len(index),
    )
    store = SinkStore(
        sink,
        index,
        RollPolicy(cfg.roll_bytes, cfg.roll_seconds),
        forget_after_ms=int(cfg.dedupe_forget_days * 86_400_000),
    )
    return store, lambda: None, sink.unlock


def _forward_store(cfg: CollectorConfig) -> tuple[Store, Callable[[], None], Callable[[], None]]:
    from .._dirlock import lock_dir, unlock_dir
    from .._ship import Shipper
    from .._spool import Spool
    from .._tls import watched_client_context
    from ._forward import ForwardStore

    spool_dir = Path(cfg.spool_dir) if cfg.spool_dir else Path(cfg.sink_dir) / "forward-spool"
    fd = lock_dir(spool_dir, "spool_dir", "collector")
    try:
        spool = Spool(spool_dir / "chunks", cap_bytes=cfg.spool_cap_bytes)
    except BaseException:
        unlock_dir(fd)
        raise
    shipper = Shipper(
        cfg.upstream,
        token=cfg.upstream_token,
        tls=watched_client_context(cfg.client_tls),
        timeout=cfg.upstream_timeout,
        max_backoff=cfg.upstream_max_backoff,
        stop=threading.Event(),
    )
    store = ForwardStore(spool, shipper)
    log.info("forwarding", upstream=cfg.upstream, spool_dir=str(spool_dir), spooled_chunks=len(spool))
    return store, store.start, lambda: unlock_dir(fd)


def build_app(cfg: CollectorConfig) -> Starlette:
    """The collector app for ``cfg``.

    Locks and recovers the sink folder (or the forwarding spool) right away, raising
    :class:`~headrace.errors.FatalError` if another collector holds it, so that problems show before
    the server starts. After shutdown, ``app.state.failed`` says whether the store failed.
    """
    store, start_store, unlock = (_forward_store if cfg.upstream else _sink_store)(cfg)
    state: dict[str, GroupCommit | None] = {"commit": None}

    def on_failure() -> None:
        # Let uvicorn shut down gracefully; the CLI then exits non-zero.
        os.kill(os.getpid(), signal.SIGTERM)

    async def submit(chunks: list[Chunk]) -> tuple[int, int]:
        commit = state["commit"]
        assert commit is not None
        ack = await commit.submit(chunks)
        return ack.acked, ack.duplicates

    access = Access(
        "collector",
        cfg.tokens,
        ("read", "write"),
        metrics_open_on_localhost=cfg.metrics_open_on_localhost,
        on_denied=lambda d: m.REJECTS.labels(d.reason).inc(),
    )
    receiver = ChunkReceiver(submit, Limits(cfg.max_body_bytes, cfg.max_chunk_bytes, cfg.max_inflight_bytes), access)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        commit = GroupCommit(store, on_failure=on_failure)
        state["commit"] = commit
        start_store()
        commit.start()
        try:
            yield
        finally:
            await commit.close()
            app.state.failed = commit.failed
            unlock()
            log.info("collector stopped", failed=commit.failed)

    async def status(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        commit = state["commit"]
        body: dict[str, Any] = {
            "name": cfg.name,
            "chunks_in": _counter("headrace_collector_chunks_total"),
            "bytes_in": _counter("headrace_collector_bytes_total"),
            "duplicates": _counter("headrace_collector_duplicates_total"),
            "trimmed_bytes": _counter("headrace_collector_trimmed_bytes_total"),
            "rejects": _rejects(),
            "sink_files_closed": _counter("headrace_collector_sink_files_total"),
            "inflight_bytes": receiver.inflight,
            "commits": commit.commits if commit else 0,
            "waiting_requests": commit.waiting if commit else 0,
            "failed": commit.failed if commit else None,
            "store": store.status(),
        }
        return JSONResponse(body)

    def health() -> dict[str, Any]:
        commit = state["commit"]
        failed = commit.failed if commit is not None else None
        if failed is not None:
            return {"ok": False, "failed": failed}
        refused = getattr(store, "upstream_refused", None)
        if refused:  # a forwarder whose upstream refuses its token: nothing moves until someone fixes it
            return {"ok": False, "failed": None, "reason": "collector refused our token", "detail": refused}
        return {"ok": True, "failed": None}

    routes = [
        Route("/v1/chunks", receiver.handle, methods=["POST"]),
        Route("/v1/status", status),
        *standard_routes(health, access, "collector"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.failed = None
    app.state.access = access
    app.state.store = store
    return app
