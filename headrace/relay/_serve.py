"""The relay's HTTP API (Starlette): stream, sources, schemas, status, acknowledgements.

This module holds what the handlers share (:class:`RelayState`) and assembles the app: ``GET
/v1/stream`` is :class:`~._serve_stream.StreamEndpoint` (a long-poll answered from the ring buffer,
see ``_stream.py`` for the bounded streamed body), the small JSON endpoints are in ``_serve_api.py``,
``/v1/schemas/{fingerprint}`` and every header and reason on the wire are the relay protocol's
(``_protocol.py``, shared with the bootstrap server and the client). Every route but ``/healthz`` and
the status page needs the ``read`` scope. See ``docs/relay-api.md`` and ``docs/relay-openapi.yaml``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._http import Handler, read_only_access, rejecter, standard_routes
from .._logging import get_logger
from ._buffer import RingBuffer
from ._capture import Acks, Capture
from ._codec import EncodedWindow
from ._config import RelayConfig
from ._metrics import BUFFER_BYTES, BUFFER_NEWEST, BUFFER_OLDEST, EVENTS_IN, REJECTS, WINDOWS_IN
from ._protocol import capture_headers as _capture_headers
from ._protocol import schema_endpoint
from ._schema import SchemaRegistry, SchemaVersion
from ._serve_api import ack_endpoint, health, sources_endpoint, status_endpoint
from ._serve_stream import StreamEndpoint
from .sources._base import ChangeSource

__all__ = ["RelayState", "build_app", "capture_headers"]

log = get_logger("relay.serve")


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

    def seen(self, sub_id: str, scn: int, filter: str) -> None:
        """Note that subscriber ``sub_id`` was served up to ``scn`` (for ``/v1/status``)."""
        self.subscribers[sub_id] = SubscriberInfo(sub_id, scn, filter, time.time())

    def events_per_second(self) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self.rate if t >= now - 10]
        return sum(n for _, n in recent) / 10.0


def capture_headers(capture: Capture | None) -> dict[str, str]:
    """``X-Headrace-Capture: running|stopped`` and, when stopped, ``X-Headrace-Capture-Error``: the
    reason, error, table, column, SCN and since as ASCII JSON (see docs/relay-api.md); none without capture."""
    if capture is None:
        return {}
    stop = capture.stopped
    return _capture_headers(stop.to_json() if stop is not None else None)


def build_app(state: RelayState, start_capture: bool = True) -> Starlette:
    """The relay's Starlette app; its lifespan starts and stops the capture thread."""
    cfg = state.config
    access, read = read_only_access("relay", cfg, REJECTS)
    reject = rejecter(REJECTS, log)

    async def lookup(fp: str) -> SchemaVersion | None:
        return state.registry.get(fp)

    routes = [
        *standard_routes(lambda: health(state), access, "relay"),
        Route("/v1/stream", with_capture_headers(state, read(StreamEndpoint(state, reject)))),
        Route("/v1/sources", read(sources_endpoint(state))),
        Route("/v1/schemas/{fingerprint}", read(schema_endpoint(lookup, reject))),
        Route("/v1/status", read(status_endpoint(state))),
        Route("/v1/ack", read(ack_endpoint(state, reject)), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=_lifespan(state, start_capture))
    app.state.access = access
    return app


def with_capture_headers(state: RelayState, handler: Handler) -> Handler:
    """Stream responses say whether capture runs (``X-Headrace-Capture``) and, when stopped, why."""

    async def wrapped(request: Request) -> Response:
        response = await handler(request)
        response.headers.update(capture_headers(state.capture))
        return response

    return wrapped


def _lifespan(
    state: RelayState, start_capture: bool
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """Starts the capture thread with the app (unless ``start_capture`` is false) and stops it after."""

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
                policy=state.config.on_unrepresentable,
            )
            state.capture.start()
        try:
            yield
        finally:
            if state.capture is not None:
                await asyncio.to_thread(state.capture.stop)
            log.info("relay_stopped", newest_scn=state.buffer.newest_scn)

    return lifespan
