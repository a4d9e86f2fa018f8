"""The collector daemon: a Starlette app whose lifespan runs the group committer.

Data flow: ``POST /v1/chunks`` (``_receive``) → group commit with dedupe (``_commit``, ``_dedupe``)
→ rolling Avro sink files (``_sink``, ``_roll``; crash recovery with ``_container``).

Start (in :func:`build_app`, before the server binds): lock ``sink_dir``, recover files left in
``open/`` by a crash and load or rebuild the dedupe index (``SinkFiles.recover``); then serve.
SIGTERM: uvicorn stops taking connections and lets in-flight requests finish (their acks
included), then the lifespan's shutdown commits what still waits, rolls the open file into
``done/`` (saving the index) and releases the lock.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .._chunk import Chunk
from .._http import standard_routes
from .._logging import get_logger
from ._commit import GroupCommitter
from ._config import CollectorConfig
from ._receive import ChunkReceiver, Limits
from ._roll import RollPolicy
from ._sink import SinkFiles

__all__ = ["build_app"]

log = get_logger("collector")


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _rejects() -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in REGISTRY.collect():
        if metric.name == "headrace_collector_rejects":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[s.labels["reason"]] = int(s.value)
    return out


def build_app(cfg: CollectorConfig) -> Starlette:
    """The collector app for ``cfg``.

    Locks ``sink_dir`` and recovers it right away (raising :class:`~headrace.errors.FatalError` if
    another collector holds it), so that problems show before the server starts. After shutdown,
    ``app.state.failed`` says whether the sink failed.
    """
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
    state: dict[str, Any] = {"committer": None}

    def on_failure() -> None:
        # Let uvicorn shut down gracefully; the CLI then exits non-zero.
        os.kill(os.getpid(), signal.SIGTERM)

    async def store(chunks: list[Chunk]) -> tuple[int, int]:
        committer: GroupCommitter = state["committer"]
        ack = await committer.submit(chunks)
        return ack.acked, ack.duplicates

    receiver = ChunkReceiver(
        store,
        Limits(cfg.max_body_bytes, cfg.max_chunk_bytes, cfg.max_inflight_bytes),
        cfg.tokens,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        committer = GroupCommitter(sink, index, RollPolicy(cfg.roll_bytes, cfg.roll_seconds), on_failure=on_failure)
        state["committer"] = committer
        committer.start()
        try:
            yield
        finally:
            await committer.close()
            app.state.failed = committer.failed
            sink.unlock()
            log.info("collector stopped", failed=committer.failed)

    async def status(_: Request) -> JSONResponse:
        committer: GroupCommitter | None = state["committer"]
        body: dict[str, Any] = {
            "name": cfg.name,
            "sink_dir": str(sink.root),
            "chunks_in": int(_counter("headrace_collector_chunks_total")),
            "bytes_in": int(_counter("headrace_collector_bytes_total")),
            "duplicates": int(_counter("headrace_collector_duplicates_total")),
            "trimmed_bytes": int(_counter("headrace_collector_trimmed_bytes_total")),
            "rejects": _rejects(),
            "sink_files_closed": int(_counter("headrace_collector_sink_files_total")),
            "inflight_bytes": receiver.inflight,
        }
        if committer is not None:
            body["sink"] = committer.status()
        return JSONResponse(body)

    def health() -> dict[str, Any]:
        committer: GroupCommitter | None = state["committer"]
        failed = committer.failed if committer is not None else None
        return {"ok": failed is None, "failed": failed}

    routes = [
        Route("/v1/chunks", receiver.handle, methods=["POST"]),
        Route("/v1/status", status),
        *standard_routes(health),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.failed = None
    return app
