"""The collector daemon: a Starlette app whose lifespan runs the group commit into a store.

Data flow: ``POST /v1/chunks`` (``_receive``) → group commit (``_commit``) → a store, either

* the sink store (``_sinkstore``): dedupe (``_dedupe``) → rolling Avro sink files (``_sink``,
  ``_roll``; crash recovery with ``_container``), or, when ``upstream`` is set,
* the forward store (``_forward``): the bounded spool → upstream collectors.

Start (in :func:`build_app`, before the server binds): lock the folder, recover what a crash left
(sink files in ``open/`` and the dedupe index, or the spool's torn tail); then serve. If the sink's
recovery hits a full disk, the collector serves anyway: ``/healthz`` and every ``POST /v1/chunks``
answer 503 (``disk_full``, nothing acked) while the recovery is retried until space returns (see
``_commit``). The forwarding pump thread runs under a :class:`~headrace._supervise.Supervisor`. SIGTERM:
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
from .._http import error_response, guarded, standard_routes
from .._logging import get_logger
from .._supervise import Supervisor, is_disk_full
from . import _metrics as m
from ._commit import GroupCommit, Refused, Store
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


class _Opened:
    """What :func:`build_app` opened: the store (None while recovery waits for disk space) and how to reopen it."""

    def __init__(
        self,
        store: Store | None,
        start: Callable[[], None],
        unlock: Callable[[], None],
        reopen: Callable[[], Store] | None = None,
        unavailable: str | None = None,
        supervisor: Supervisor | None = None,
        spool_disk_full: Callable[[], str | None] | None = None,
    ) -> None:
        self.store = store
        self.spool_disk_full = spool_disk_full
        self.start = start
        self.unlock = unlock
        self.reopen = reopen
        self.unavailable = unavailable
        self.supervisor = supervisor


def _sink_store(cfg: CollectorConfig) -> _Opened:
    from ._roll import RollPolicy
    from ._sink import SinkFiles
    from ._sinkstore import SinkStore

    sink = SinkFiles(cfg.sink_dir, cfg.name, cfg.codec, torn_max_bytes=cfg.torn_max_bytes)
    sink.lock()

    def open_store() -> Store:
        """Recover the sink folder (again after a full disk: the in-memory index is rebuilt from disk)."""
        sink.abandon()
        index, report = sink.recover()
        log.info(
            "sink recovered",
            sink_dir=str(sink.root),
            recovered=report.recovered,
            removed=report.removed,
            torn_bytes=report.torn_bytes,
            index_rebuilt=report.index_rebuilt,
            streams=len(index),
        )
        return SinkStore(
            sink,
            index,
            RollPolicy(cfg.roll_bytes, cfg.roll_seconds),
            forget_after_ms=int(cfg.dedupe_forget_days * 86_400_000),
        )

    try:
        store: Store | None = open_store()
        unavailable = None
    except OSError as exc:
        if not is_disk_full(exc):
            sink.unlock()
            raise
        # Serve 503 disk_full (no ack) and retry the recovery until space returns: no crash loop.
        store, unavailable = None, f"disk full, waiting for space: {exc}"
        log.error("sink recovery hit a full disk; refusing writes until space returns", error=str(exc))
    except BaseException:
        sink.unlock()
        raise
    return _Opened(store, lambda: None, sink.unlock, reopen=open_store, unavailable=unavailable)


def _forward_store(cfg: CollectorConfig) -> _Opened:
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
        compression=cfg.upstream_compression,
        compression_level=cfg.upstream_compression_level,
    )
    supervisor = Supervisor("collector", cfg.supervise)
    store = ForwardStore(spool, shipper, supervisor=supervisor)
    log.info("forwarding", upstream=cfg.upstream, spool_dir=str(spool_dir), spooled_chunks=len(spool))
    return _Opened(store, store.start, lambda: unlock_dir(fd), supervisor=supervisor, spool_disk_full=spool.disk_full)


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def build_app(cfg: CollectorConfig) -> Starlette:
    """The collector app for ``cfg``.

    Locks and recovers the sink folder (or the forwarding spool) right away, raising
    :class:`~headrace.errors.FatalError` if another collector holds it, so that problems show before
    the server starts. After shutdown, ``app.state.failed`` says whether the store failed.
    """
    opened = (_forward_store if cfg.upstream else _sink_store)(cfg)
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
    receiver = ChunkReceiver(
        submit,
        Limits(cfg.max_body_bytes, cfg.max_chunk_bytes, cfg.max_inflight_bytes),
        access,
        accept_compression=cfg.accept_compression,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        commit = GroupCommit(
            opened.store,
            on_failure=on_failure,
            reopen=opened.reopen,
            unavailable=opened.unavailable,
            free_bytes=lambda: _free_bytes(cfg.sink_dir),
        )
        state["commit"] = commit
        opened.start()
        commit.start()
        try:
            yield
        finally:
            if opened.supervisor is not None:
                opened.supervisor.stop()
            await commit.close()
            app.state.failed = commit.failed or (opened.supervisor.failed if opened.supervisor else None)
            opened.unlock()
            log.info("collector stopped", failed=commit.failed)

    async def roll(request: Request) -> Response:
        """``POST /v1/roll``: close the open sink file now, so ``headrace archive`` can take it."""
        commit = state["commit"]
        if commit is None:
            return error_response(503, "unavailable", "the collector is starting or stopping")
        try:
            closed = await commit.roll()
        except NotImplementedError as exc:
            return error_response(409, "not_a_sink", str(exc))
        except Refused as exc:
            return error_response(503, exc.reason, str(exc))
        return JSONResponse({"closed": closed})

    async def status(request: Request) -> Response:
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
            "unavailable": commit.unavailable if commit else opened.unavailable,
            "store": commit.store.status() if commit and commit.store else None,
        }
        return JSONResponse(body)

    def health() -> dict[str, Any]:
        """503 while the store failed, waits for disk space, or a worker (the forward pump) is down."""
        commit = state["commit"]
        failed = commit.failed if commit is not None else None
        unavailable = commit.disk_full() if commit is not None else opened.unavailable
        out: dict[str, Any] = {"failed": failed, "unavailable": unavailable}
        problems = [f"store failed: {failed}"] if failed else []
        if unavailable:
            problems.append(f"store unavailable: {unavailable}")
        if opened.spool_disk_full is not None and (why := opened.spool_disk_full()) is not None:
            problems.append(f"forwarding spool disk full: {why}")
        if opened.supervisor is not None:
            sup = opened.supervisor.health()
            out["workers"] = sup["workers"]
            if not sup["ok"]:
                problems.append(sup["reason"])
        refused = getattr(opened.store, "upstream_refused", None) if opened.store is not None else None
        if refused:  # a forwarder whose upstream refuses its token: nothing moves until someone fixes it
            problems.append("collector refused our token")
            out["detail"] = refused
        out["ok"] = not problems
        if problems:
            out["reason"] = "; ".join(problems)
        return out

    routes = [
        Route("/v1/chunks", receiver.handle, methods=["POST"]),
        Route("/v1/roll", guarded(access, "write", roll), methods=["POST"]),
        Route("/v1/status", guarded(access, "read", status)),
        *standard_routes(health, access, "collector"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.failed = None
    app.state.access = access
    app.state.store = opened.store
    return app
