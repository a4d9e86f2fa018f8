"""Request-level resource limits shared by every daemon: slow headers, slow bodies, too many connections.

Every HTTP daemon (collector, agent, relay, bootstrap) is served by :func:`headrace._http.run_app`,
which applies the ``limits:`` section of its config (:class:`HttpLimits`) in three places:

* **Headers** (:func:`guarded_protocol`, a subclass of uvicorn's httptools protocol): a request's
  line and headers must arrive within ``header_timeout_seconds`` of the connection being opened (or
  of the request's first byte on a kept-alive connection) and within ``max_header_bytes``; past
  either the connection is answered 408 ``header_timeout`` or 431 ``headers_too_large`` and closed.
  A connection that opens and sends nothing is closed the same way. What a body brings besides its
  bytes (chunk framing and extensions, trailers) is bounded by ``max_header_bytes`` too (431
  ``trailers_too_large``); trailers are dropped.
* **Bodies** (:class:`BodyLimits`, an ASGI middleware): the time a request spends *waiting for its
  client's body bytes* is bounded by ``body_timeout_seconds`` overall, and after
  ``min_body_rate_grace_seconds`` the body must keep arriving at ``min_body_rate_bytes_per_second``
  on average (each byte received buys ``1/rate`` seconds more, the ``MinRate`` of Apache's
  mod_reqtimeout). A request past either is answered 408 (``body_timeout`` or ``body_too_slow``) and
  its connection closed; the application sees the client as gone (``http.disconnect``, Starlette's
  ``ClientDisconnect``), so whatever it held for the request (the collector's in-flight bytes) is
  released on its usual path. A response sent before the body was read whole closes the connection,
  so a client cannot go on trickling a body nobody reads.
* **Connections per client** (``max_connections_per_client``, off by default): a connection from an
  address that already holds that many is answered 503 ``too_many_client_connections`` and closed
  at once, before anything is read, so one host cannot take every slot of the cap below.
* **Connections**: uvicorn's ``limit_concurrency`` is set to ``max_connections + 1``. uvicorn counts
  *open connections* (idle kept-alive ones and ones still sending headers included) and *running
  requests*; a request whose headers complete while more than ``max_connections`` connections are
  open (or as many requests are running) is answered ``503`` and its connection closed. Requests
  already running are never cut. The listen ``backlog`` and the soft open-file limit (raised to the
  hard one when needed) are set so the cap, not the kernel, decides.

The timing core (:class:`BodyClock`) is sans-io; counts go to ``headrace_http_limit_hits_total{limit}``
and log lines are throttled to one a second per limit (:class:`LogThrottle`, with the count suppressed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from pydantic import Field

from ._config import Section
from ._logging import get_logger

__all__ = [
    "LIMIT_HITS",
    "BodyClock",
    "BodyLimits",
    "HttpLimits",
    "LogThrottle",
    "body_timed_out",
    "guarded_protocol",
    "raise_fd_limit",
    "read_body",
    "uvicorn_options",
]

log = get_logger("http.limits")

LIMIT_HITS = Counter(
    "headrace_http_limit_hits",
    "Requests and connections refused by a request-level limit (header_timeout, headers_too_large, "
    "trailers_too_large, body_timeout, body_too_slow, too_many_connections, too_many_client_connections)",
    ["limit"],
)


class LogThrottle:
    """At most one log line per key and ``interval`` seconds (sans-io: the caller passes the time).

    A flood of refused connections must not become a flood of log lines (a disk-filling vector).
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> int | None:
        """None: stay quiet; else log now, mentioning the returned count of lines suppressed since the last."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


_THROTTLE = LogThrottle()


def _hit(limit: str, event: str, **fields: Any) -> None:
    """Count a limit hit; log it unless the same limit was logged less than a second ago."""
    LIMIT_HITS.labels(limit).inc()
    suppressed = _THROTTLE.allow(limit, time.monotonic())
    if suppressed is not None:
        log.warning(event, reason=limit, suppressed_since_last=suppressed, **fields)


class _QuietConcurrencyWarning(logging.Filter):
    """uvicorn logs every 503 of ``limit_concurrency``; :func:`_hit` logs them, throttled, instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Exceeded concurrency limit."


#: where :class:`BodyLimits` records, in the ASGI scope, why it cut a request's body short
SCOPE_KEY = "headrace.body_limit"


class HttpLimits(Section):
    """``<daemon>.limits``: request-level limits of an HTTP daemon (same keys on every daemon)."""

    max_connections: int = Field(
        default=2048,
        ge=1,
        description="open connections served at once; a request arriving past it gets 503 and its connection closed",
    )
    backlog: int = Field(default=2048, ge=1, le=65535, description="listen backlog (capped by net.core.somaxconn)")
    max_connections_per_client: int = Field(
        default=0,
        ge=0,
        description="open connections one client address may hold; past it: 503 and closed at once; 0: no cap",
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="request line and headers must arrive within this; else 408 and close"
    )
    max_header_bytes: int = Field(
        default=64 << 10, ge=1024, description="request line and headers larger than this: 431 and close"
    )
    body_timeout_seconds: float = Field(
        default=300.0, gt=0, description="longest total wait for a request's body bytes; else 408 and close"
    )
    min_body_rate_bytes_per_second: float = Field(
        default=1024.0, ge=0, description="after the grace period a body slower than this on average: 408; 0: off"
    )
    min_body_rate_grace_seconds: float = Field(
        default=10.0, ge=0, description="wait for body bytes this long before the minimum rate applies"
    )


@dataclass(slots=True)
class BodyClock:
    """How long a request may still wait for body bytes (sans-io: the caller measures the waits).

    ``waited`` counts only time spent waiting on the client, so a slow application (a group commit,
    a full disk) never makes its client's body late.
    """

    timeout: float
    min_rate: float
    grace: float
    waited: float = 0.0
    received: int = 0

    @classmethod
    def of(cls, limits: HttpLimits) -> BodyClock:
        rate, grace = limits.min_body_rate_bytes_per_second, limits.min_body_rate_grace_seconds
        return cls(limits.body_timeout_seconds, rate, grace)

    def allowance(self) -> float:
        """Seconds the next wait may last (zero or less: the body is already late)."""
        limit = self.timeout
        if self.min_rate > 0:
            limit = min(limit, self.grace + self.received / self.min_rate)
        return limit - self.waited

    def note(self, waited: float, nbytes: int) -> None:
        """A wait of ``waited`` seconds ended with ``nbytes`` body bytes."""
        self.waited += waited
        self.received += nbytes

    def reason(self) -> str:
        """Which limit a late body passed: ``body_timeout`` (overall) or ``body_too_slow`` (rate)."""
        return "body_timeout" if self.waited >= self.timeout - 1e-3 else "body_too_slow"


def _expects_body(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


def _json_response(status: int, reason: str, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": reason, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


def body_timed_out(scope: Any) -> str | None:
    """``body_timeout`` or ``body_too_slow`` if :class:`BodyLimits` cut this request's body short, else None.

    An application that sees its client go away mid-body can use it to log the right reason.
    """
    reason = scope.get(SCOPE_KEY) if hasattr(scope, "get") else None
    return reason if isinstance(reason, str) else None


async def read_body(request: Any, limit: int) -> bytes | None:
    """A Starlette request's body, or None as soon as it (announced or streamed) passes ``limit`` bytes.

    For small JSON request bodies: memory stays bounded whatever the client sends. A client that goes
    away (or is cut off by :class:`BodyLimits`) raises Starlette's ``ClientDisconnect``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            return None
    return bytes(buf)


class _BodyGuard:
    """One request's wrapped ``receive`` and ``send``."""

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any, limits: HttpLimits) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.clock = BodyClock.of(limits)
        self.complete = not _expects_body(scope)  # the whole body has been received (or there is none)
        self.reason: str | None = None  # set when the body was cut short
        self.started = False  # the application started its response
        self.answered = False  # this guard sent the 408 itself

    async def receive(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"type": "http.disconnect"}
        if self.complete:
            message: dict[str, Any] = await self._receive()
            return message
        allowance = self.clock.allowance()
        began = time.monotonic()
        try:
            if allowance <= 0:
                raise TimeoutError
            async with asyncio.timeout(allowance):
                message = await self._receive()
        except TimeoutError:
            self.clock.note(time.monotonic() - began, 0)
            self._cut()
            return {"type": "http.disconnect"}
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        self.clock.note(time.monotonic() - began, len(body))
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message

    def _cut(self) -> None:
        self.reason = self.clock.reason()
        self.scope[SCOPE_KEY] = self.reason
        client = self.scope.get("client")
        _hit(
            self.reason,
            "request_body_timeout",
            peer=client[0] if client else None,
            path=self.scope.get("path"),
            received=self.clock.received,
            waited=round(self.clock.waited, 3),
        )

    async def send(self, message: dict[str, Any]) -> None:
        if self.reason is not None and not self.started:
            if message["type"] == "http.response.start":
                await self.answer()
            return  # the 408 replaces whatever the application answers
        if message["type"] == "http.response.start":
            self.started = True
            if not self.complete:  # the rest of the body will not be read: do not keep the connection
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    async def answer(self) -> None:
        if self.answered or self.started:
            return
        self.answered = True
        detail = f"the request body did not arrive in time ({self.clock.received} bytes in {self.clock.waited:.1f}s)"
        headers, body = _json_response(408, self.reason or "body_timeout", detail)
        await self._send({"type": "http.response.start", "status": 408, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


class BodyLimits:
    """ASGI middleware bounding how long each request may take to send its body (see the module doc)."""

    def __init__(self, app: Any, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guard = _BodyGuard(scope, receive, send, self.limits)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if guard.reason is None:
                raise
            # the application failed on the disconnect it was shown (ClientDisconnect): expected
        if guard.reason is not None:
            await guard.answer()


def _raw_response(status: int, phrase: str, reason: str, detail: str) -> bytes:
    headers, body = _json_response(status, reason, detail)
    lines = [f"HTTP/1.1 {status} {phrase}".encode()] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def guarded_protocol(limits: HttpLimits) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol with header timeout and size limits; None without httptools."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return None

    timeout = limits.header_timeout_seconds
    max_bytes = limits.max_header_bytes
    per_client = limits.max_connections_per_client
    open_by_client: dict[str, int] = {}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """Closes connections whose request line and headers are too slow or too large."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            self._counted_peer: str | None = None
            # while a body arrives: wire bytes, body bytes and chunks, to bound chunk framing and trailers
            self._in_body = False
            self._wire_bytes = self._body_bytes = self._chunks = 0

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_bytes = 0
                self._header_timer = self.loop.call_later(timeout, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.client[0] if self.client else None
            if per_client and peer is not None:
                self._counted_peer = peer
                open_by_client[peer] = open_by_client.get(peer, 0) + 1
                if open_by_client[peer] > per_client:
                    detail = f"{peer} holds {per_client} connections already (limits.max_connections_per_client)"
                    self._refuse(503, "Service Unavailable", "too_many_client_connections", detail)
                    return
            self._arm()

        def _release(self) -> None:
            self._disarm()
            peer, self._counted_peer = self._counted_peer, None
            if peer is not None:
                left = open_by_client.pop(peer, 1) - 1
                if left > 0:
                    open_by_client[peer] = left

        def connection_lost(self, exc: Exception | None) -> None:
            self._release()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self) -> None:
            # the connection passes to uvicorn's WebSocket protocol (no daemon has a WebSocket route:
            # the handshake is refused 403 and the connection closed); this protocol never sees it again
            self._release()
            super().handle_websocket_upgrade()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is not None:
                self._header_bytes += len(data)
            elif self._in_body:
                self._wire_bytes += len(data)
            super().data_received(data)
            if self._header_timer is not None and self._header_bytes > max_bytes:
                self._refuse(431, "Request Header Fields Too Large", "headers_too_large", f"over {max_bytes} bytes")
            elif self._in_body and self._wire_bytes - self._body_bytes > max_bytes + 32 * self._chunks:
                # httptools buffers a header line whole, trailers included: bound what is not body
                detail = f"chunk framing and trailers over {max_bytes} bytes"
                self._refuse(431, "Request Header Fields Too Large", "trailers_too_large", detail)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_body = False
            self._arm()

        def on_header(self, name: bytes, value: bytes) -> None:
            if not self._in_body:  # trailers are dropped: uvicorn would add them to the running request's headers
                super().on_header(name, value)

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_chunk_header(self) -> None:
            self._chunks += 1

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_body = True
            self._wire_bytes = self._body_bytes = self._chunks = 0
            if self.limit_concurrency is not None and (
                len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
            ):  # uvicorn's own test, which answers 503: counted and logged here
                _hit("too_many_connections", "request_refused", peer=self.client[0] if self.client else None)
            super().on_headers_complete()

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                self._arm()  # a pipelined request waits behind a running one: not its fault
                return
            self._refuse(408, "Request Timeout", "header_timeout", f"no complete request headers within {timeout}s")

        def _refuse(self, status: int, phrase: str, reason: str, detail: str) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            _hit(reason, "request_refused", detail=detail, peer=self.client[0] if self.client else None)
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                self.transport.write(_raw_response(status, phrase, reason, detail))
            elif not cycle.response_started:  # mid-body: answer for the application, which sees the client gone
                self.transport.write(_raw_response(status, phrase, reason, detail))
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    return GuardedHttpToolsProtocol


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-file limit toward the hard one if below ``needed``; warn if it stays below. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(max(needed, soft), hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "fd_limit_low",
            limit=soft,
            needed=needed,
            detail="each connection holds one descriptor; raise the hard limit (ulimit -Hn, LimitNOFILE=) "
            "or lower limits.max_connections",
        )
    return soft


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.Config`` that apply ``limits`` (the body limits are the middleware's)."""
    options: dict[str, Any] = {
        # uvicorn refuses when len(connections) >= limit, the new connection counted: +1 serves max_connections
        "limit_concurrency": limits.max_connections + 1,
        "backlog": limits.backlog,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }
    protocol = guarded_protocol(limits)
    if protocol is not None:
        options["http"] = protocol
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietConcurrencyWarning) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(_QuietConcurrencyWarning())
    return options
