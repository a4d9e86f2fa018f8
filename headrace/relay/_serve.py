"""The relay's HTTP API (Starlette): stream, sources, schemas, status, acknowledgements.

``GET /v1/stream`` answers from the ring buffer by copying the bytes of whole windows (filtered
windows copy matching frames), planned first and then written in bounded pieces (``_stream.py``:
the request cap, the in-flight budget, the streamed body). When nothing new is there it long-polls:
it waits on an ``asyncio.Event`` that the capture thread's deliveries set, up to ``wait_ms``. Every answer carries
``X-Headrace-Scn`` (how far the stream was scanned: the subscriber may checkpoint there even when a
filter let nothing through), ``X-Headrace-Oldest-Scn`` and ``X-Headrace-Newest-Scn``.
See ``docs/relay-api.md`` and ``docs/relay-openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._access import Access
from .._http import error_response, int_param, standard_routes
from .._limits import body_timed_out, read_body
from .._logging import get_logger
from ..errors import InvalidInput
from ._buffer import RingBuffer, TooOld
from ._capture import Acks, Capture
from ._codec import EncodedWindow
from ._config import RelayConfig
from ._event import EVENTS_CONTENT_TYPE
from ._filter import Filter, parse_filter
from ._schema import SchemaRegistry, source_listing
from ._stream import MIN_RESERVE_WAIT, StreamLimits, WindowsResponse, busy_response, until_disconnect
from .sources._base import ChangeSource

__all__ = ["RelayState", "build_app", "capture_headers"]

log = get_logger("relay.serve")

WINDOWS_IN = Counter("headrace_relay_windows_total", "Windows taken into the buffer")
EVENTS_IN = Counter("headrace_relay_events_total", "Events taken into the buffer")
SERVED_BYTES = Counter("headrace_relay_served_bytes_total", "Event bytes served to subscribers")
SERVED_EVENTS = Counter("headrace_relay_served_events_total", "Events served to subscribers")
REJECTS = Counter("headrace_relay_rejects_total", "Refused requests by reason", ["reason"])
BUFFER_BYTES = Gauge("headrace_relay_buffer_bytes", "Bytes held by the ring buffer")
BUFFER_OLDEST = Gauge("headrace_relay_buffer_oldest_scn", "Oldest SCN the buffer serves from")
BUFFER_NEWEST = Gauge("headrace_relay_buffer_newest_scn", "Newest window SCN in the buffer")

STREAM_PARAMS = frozenset({"since", "sources", "filter", "max_bytes", "wait_ms", "subscriber"})
DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_WAIT_MS = 10_000
_FP_RE = re.compile(r"^[0-9a-fA-F]{16}$")


@dataclass
class SubscriberInfo:
    id: str
    last_scn: int
    filter: str
    last_seen: float


@dataclass
class RelayState:
    """Everything the HTTP handlers share; owned by the event loop."""

    config: RelayConfig
    source: ChangeSource
    registry: SchemaRegistry
    acks: Acks
    buffer: RingBuffer
    capture: Capture | None = None
    new_data: asyncio.Event = field(default_factory=asyncio.Event)
    subscribers: dict[str, SubscriberInfo] = field(default_factory=dict)
    rate: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)

    @property
    def table_names(self) -> frozenset[str]:
        """Every table the relay has a schema for (captured now or earlier)."""
        return frozenset(self.registry.tables())

    def deliver(self, w: EncodedWindow) -> None:
        """Called on the loop for each window the capture thread encoded."""
        if w.scn <= self.buffer.newest_scn:
            return  # a re-read after a source reconnect
        self.buffer.append(w)
        WINDOWS_IN.inc()
        EVENTS_IN.inc(w.count)
        BUFFER_BYTES.set(self.buffer.bytes)
        BUFFER_OLDEST.set(self.buffer.oldest_scn)
        BUFFER_NEWEST.set(self.buffer.newest_scn)
        now = time.monotonic()
        self.rate.append((now, w.count))
        while self.rate and self.rate[0][0] < now - 10:
            self.rate.popleft()
        self.new_data.set()
        self.new_data = asyncio.Event()

    def events_per_second(self) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self.rate if t >= now - 10]
        return sum(n for _, n in recent) / 10.0


def capture_headers(capture: Capture | None) -> dict[str, str]:
    """``X-Headrace-Capture: running|stopped`` and, when stopped, ``X-Headrace-Capture-Error``: the
    reason, error, table, column, SCN and since as ASCII JSON (see docs/relay-api.md)."""
    if capture is None:
        return {}
    stop = capture.stopped
    if stop is None:
        return {"X-Headrace-Capture": "running"}
    info = stop.to_json()
    info["error"] = info["error"][:500]
    return {
        "X-Headrace-Capture": "stopped",
        "X-Headrace-Capture-Error": json.dumps(info, ensure_ascii=True, separators=(",", ":")),
    }


#: an acknowledgement is a small JSON object; larger bodies are refused unread (memory stays bounded)
_MAX_ACK_BODY = 64 << 10


def _reject(status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    REJECTS.labels(reason).inc()
    log.info("request_rejected", status=status, reason=reason, detail=detail)
    return error_response(status, reason, detail, **extra)


def build_app(state: RelayState, start_capture: bool = True) -> Starlette:
    """The relay's Starlette app; its lifespan starts and stops the capture thread."""
    cfg = state.config

    access = Access(
        "relay",
        cfg.tokens,
        ("read",),
        metrics_open_on_localhost=cfg.metrics_open_on_localhost,
        on_denied=lambda d: REJECTS.labels(d.reason).inc(),
    )
    limits = StreamLimits(cfg.max_stream_requests, cfg.max_inflight_bytes)

    async def stream(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        params = request.query_params
        unknown = sorted(set(params.keys()) - STREAM_PARAMS)
        if unknown:
            return _reject(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
        try:
            since = int_param(params, "since", None, 0, (1 << 64) - 1)
            max_bytes = int_param(params, "max_bytes", DEFAULT_MAX_BYTES, 1, cfg.max_response_bytes)
            wait_ms = int_param(params, "wait_ms", DEFAULT_WAIT_MS, 0, cfg.max_wait_ms)
            sources: frozenset[str] | None = None
            if params.get("sources"):
                sources = frozenset(s.strip() for s in params["sources"].split(",") if s.strip())
                missing = sorted(sources - state.table_names)
                if missing:
                    raise InvalidInput(
                        "unknown_source",
                        f"not captured: {', '.join(missing)} (captured: {', '.join(sorted(state.table_names))})",
                    )
            flt = parse_filter(params.get("filter"), sources)
        except InvalidInput as exc:
            return _reject(400, exc.reason, exc.detail)
        assert max_bytes is not None and wait_ms is not None
        refused = limits.admit()
        if refused is not None:
            return busy_response(
                refused,
                f"{limits.active} of relay.max_stream_requests={limits.max_requests} stream requests are open"
                if refused == "too_many_streams"
                else f"relay.max_inflight_bytes={limits.max_inflight_bytes} is taken by responses being written",
                _reject,
            )
        handed_off = False
        try:
            resp = await _serve_stream(request, since, max_bytes, wait_ms, flt)
            handed_off = isinstance(resp, WindowsResponse)  # it gives the slot back when its body is done
            return resp
        finally:
            if not handed_off:
                limits.leave()

    async def _serve_stream(request: Request, since: int | None, max_bytes: int, wait_ms: int, flt: Filter) -> Response:
        """The admitted part of ``/v1/stream``: wait for data, reserve in-flight budget, hand the body over."""
        buf = state.buffer
        if since is None:
            since = buf.oldest_scn
        deadline = time.monotonic() + wait_ms / 1000.0
        params = request.query_params
        sub_id = params.get("subscriber") or (f"{request.client.host}:{request.client.port}" if request.client else "?")
        use = None if flt.sources is None and not flt.per_event else flt
        watcher: asyncio.Future[None] | None = None
        handed_off = False
        try:
            while True:
                try:
                    plan = buf.plan(since, max_bytes, use)
                except TooOld as exc:
                    return _reject(
                        410,
                        "scn_too_old",
                        f"since={since} is older than the oldest SCN this relay holds ({exc.oldest_scn}); "
                        "use a bootstrap server or start again from a snapshot",
                        oldest_scn=exc.oldest_scn,
                    )
                remaining = deadline - time.monotonic()
                if plan.windows or remaining <= 0:
                    break
                # Waiting holds no window data: only this request's objects, its socket and this task.
                if watcher is None:
                    watcher = asyncio.ensure_future(until_disconnect(request.receive))
                data_waiter = asyncio.ensure_future(state.new_data.wait())
                try:
                    await asyncio.wait((data_waiter, watcher), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    data_waiter.cancel()
                if watcher.done():  # the client went away: free the slot now, not at the deadline
                    return Response(status_code=499)
            piece_bytes = cfg.stream_batch_bytes
            charge = limits.charge(plan.length, piece_bytes)
            if not await limits.reserve(charge, max(deadline, time.monotonic() + MIN_RESERVE_WAIT)):
                return busy_response(
                    "inflight_bytes_limit",
                    f"relay.max_inflight_bytes={limits.max_inflight_bytes} stayed taken by responses being written",
                    _reject,
                )
            state.subscribers[sub_id] = SubscriberInfo(sub_id, plan.scn, flt.describe(), time.time())
            SERVED_BYTES.inc(plan.length)
            SERVED_EVENTS.inc(plan.events)
            headers = {
                "X-Headrace-Scn": str(plan.scn),
                "X-Headrace-Oldest-Scn": str(buf.oldest_scn),
                "X-Headrace-Newest-Scn": str(buf.newest_scn),
                "X-Headrace-Windows": str(plan.windows),
                "X-Headrace-Events": str(plan.events),
            }

            def done() -> None:
                limits.release(charge)
                limits.leave()

            resp = WindowsResponse(
                buf.pieces(plan, piece_bytes),
                plan.length,
                headers,
                EVENTS_CONTENT_TYPE,
                done,
                watcher,
                single_piece=plan.length <= piece_bytes,
            )
            handed_off = True
            return resp
        finally:
            if watcher is not None and not handed_off:
                watcher.cancel()

    async def sources(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        out = source_listing(state.table_names, state.registry.versions)
        return JSONResponse({"sources": out})

    async def schema(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        fp = request.path_params["fingerprint"]
        if not _FP_RE.match(fp):
            return _reject(400, "bad_fingerprint", f"{fp!r} is not 16 hex digits")
        sv = state.registry.get(fp)
        if sv is None:
            return _reject(404, "unknown_schema", f"no schema with fingerprint {fp}")
        return JSONResponse(sv.to_json())

    async def status(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        buf = state.buffer
        now = time.time()
        for k in [k for k, s in state.subscribers.items() if now - s.last_seen > 300]:
            del state.subscribers[k]
        return JSONResponse(
            {
                "source": state.source.kind,
                "oldest_scn": buf.oldest_scn,
                "newest_scn": buf.newest_scn,
                "windows": len(buf),
                "events": buf.events,
                "bytes": buf.bytes,
                "capacity_bytes": buf.capacity,
                "fill": round(buf.bytes / buf.capacity, 4),
                "evicted_windows": buf.evicted_windows,
                **({"measured_bytes": buf.measured_bytes()} if request.query_params.get("measure") else {}),
                "events_per_s": state.events_per_second(),
                "subscribers": [
                    {"id": s.id, "last_scn": s.last_scn, "filter": s.filter, "last_seen_ms": int(s.last_seen * 1000)}
                    for s in state.subscribers.values()
                ],
                "durable_consumers": state.acks.snapshot(),
                "capture": state.capture.describe() if state.capture else None,
                "source_info": state.source.describe(),
            }
        )

    async def ack(request: Request) -> Response:
        if (denied := access.check(request, "read")) is not None:
            return denied
        usage = 'send JSON {"consumer": NAME, "scn": N}'
        try:
            raw = await read_body(request, _MAX_ACK_BODY)
            if raw is None:
                return _reject(413, "too_large", f"an acknowledgement body is at most {_MAX_ACK_BODY} bytes")
            body = json.loads(raw)
        except ValueError:
            return _reject(400, "bad_body", usage)
        except ClientDisconnect:  # gone, or cut off by the body limits (which answer 408 themselves)
            return _reject(400, body_timed_out(request.scope) or "bad_body", "the body did not arrive whole")
        if not isinstance(body, dict) or not isinstance(body.get("consumer"), str) or "scn" not in body:
            return _reject(400, "bad_body", usage)
        consumer, scn = body["consumer"], body["scn"]
        if consumer not in state.acks.consumers:
            return _reject(
                400,
                "unknown_consumer",
                f"{consumer!r} is not in relay.durable_consumers ({', '.join(state.acks.consumers)})",
            )
        if isinstance(scn, bool) or not isinstance(scn, int) or not 0 <= scn < 1 << 64:
            return _reject(400, "bad_scn", f"scn must be an integer in [0, 2^64): got {json.dumps(scn)[:80]}")
        # An acknowledgement lets the source discard its log up to there: never past what this relay has
        # taken in (a typo or a consumer of another database would lose every change in between).
        # Repeating an SCN already recorded changes nothing and is fine (e.g. after a relay restart).
        newest = state.buffer.newest_scn
        if scn > newest and scn > state.acks.snapshot().get(consumer, -1):
            return _reject(
                400,
                "scn_not_served",
                f"scn={scn} is past the newest SCN this relay has taken in ({newest}); acknowledge only what you "
                "received from it",
                newest_scn=newest,
            )
        try:
            recorded = state.acks.ack(consumer, scn)
        except InvalidInput as exc:
            return _reject(400, exc.reason, exc.detail)
        return JSONResponse({"consumer": consumer, "scn": recorded})

    def health() -> dict[str, Any]:
        stop = state.capture.stopped if state.capture else None
        out: dict[str, Any] = {
            "ok": stop is None,
            "capture_error": stop.error if stop else None,
            "newest_scn": state.buffer.newest_scn,
        }
        if stop is not None:
            out["reason"] = "capture_stopped"
            out["capture"] = {"state": "stopped", **stop.to_json()}
        elif state.capture is not None and state.capture.dead:
            out.update(ok=False, reason="capture_stopped", capture_error="relay-capture thread not running")
        return out

    def with_capture_headers(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Stream responses say whether capture runs (``X-Headrace-Capture``) and, when stopped, why."""

        async def wrapped(request: Request) -> Response:
            response = await handler(request)
            response.headers.update(capture_headers(state.capture))
            return response

        return wrapped

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.new_data = asyncio.Event()
        if start_capture:
            state.capture = Capture(
                state.source,
                state.registry,
                state.acks,
                state.buffer.capacity,
                state.buffer.newest_scn,
                asyncio.get_running_loop(),
                state.deliver,
                policy=cfg.on_unrepresentable,
            )
            state.capture.start()
        try:
            yield
        finally:
            if state.capture is not None:
                await asyncio.to_thread(state.capture.stop)
            log.info("relay_stopped", newest_scn=state.buffer.newest_scn)

    routes = [
        *standard_routes(health, access),
        Route("/v1/stream", with_capture_headers(stream)),
        Route("/v1/sources", sources),
        Route("/v1/schemas/{fingerprint}", schema),
        Route("/v1/status", status),
        Route("/v1/ack", ack, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.access = access
    return app
