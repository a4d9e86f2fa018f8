"""Serving ``/v1/stream`` bodies with bounded memory: admission, the in-flight budget, the streamed body.

Theory of operation (all on the event loop, no locks):

* **Admission.** :meth:`StreamLimits.admit` counts every ``/v1/stream`` request from when its
  parameters are valid until its body is sent (a long-poll waiting for data counts). Past
  ``relay.max_stream_requests`` — or while the in-flight budget is spent — a request is answered at
  once with 503, ``Retry-After`` and a reason (:func:`busy_response`), and its connection is closed:
  nothing queues.
* **In-flight budget.** A response that has data reserves what it may hold outside the ring buffer
  while it is written — two pieces (``2 × min(length, relay.stream_batch_bytes)``): the piece asyncio's
  transport still holds and the next one being copied — from ``relay.max_inflight_bytes``, and gives
  it back when its body is done (sent, cut short, or the client went away). An admitted request that
  finds the budget spent waits for it until its long-poll deadline (at least
  :data:`MIN_RESERVE_WAIT` seconds), then answers 503 ``inflight_bytes_limit``; the number of such
  waiters is bounded by admission.
* **The body.** :class:`WindowsResponse` writes the pieces :meth:`RingBuffer.pieces` copies out of
  the windows (never re-encoded), one at a time: uvicorn waits for the socket to drain below
  asyncio's low-water mark before it takes the next one, so a slow reader costs its socket buffer
  plus about two pieces. If a window still to be sent is evicted meanwhile the body is cut short
  (the connection is closed before ``Content-Length`` is reached, so the client retries and is then
  told ``scn_too_old``). A client that disconnects stops the copying at the next piece.

No resume state: everything here lives and dies with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .._http import Reject
from .._logging import get_logger
from ..errors import ScnTooOld

__all__ = ["MIN_RESERVE_WAIT", "RETRY_AFTER_S", "StreamLimits", "WindowsResponse", "busy_response", "until_disconnect"]

log = get_logger("relay.stream")

STREAMS_ACTIVE = Gauge("headrace_relay_stream_requests", "/v1/stream requests admitted and not yet answered")
INFLIGHT_BYTES = Gauge("headrace_relay_stream_inflight_bytes", "Bytes reserved by /v1/stream bodies being written")
STREAMS_CUT = Counter("headrace_relay_streams_cut_total", "Stream bodies cut short because their windows were evicted")

#: seconds a client is told to wait (``Retry-After``) when the relay refuses a stream request
RETRY_AFTER_S = 1
#: an admitted response with data waits at least this long for in-flight budget before a 503
MIN_RESERVE_WAIT = 1.0


class StreamLimits:
    """The ``/v1/stream`` request count and in-flight byte budget of one relay (event loop only)."""

    def __init__(self, max_requests: int, max_inflight_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_inflight_bytes = max_inflight_bytes
        self.active = 0
        self.inflight = 0
        self._freed: asyncio.Event | None = None

    def admit(self) -> str | None:
        """Count a new request in, or say why not (``too_many_streams`` / ``inflight_bytes_limit``)."""
        if self.active >= self.max_requests:
            return "too_many_streams"
        if self.inflight >= self.max_inflight_bytes:
            return "inflight_bytes_limit"
        self.active += 1
        STREAMS_ACTIVE.set(self.active)
        return None

    def leave(self) -> None:
        """An admitted request was answered (or failed)."""
        self.active -= 1
        STREAMS_ACTIVE.set(self.active)

    def charge(self, length: int, piece_bytes: int) -> int:
        """What a body of ``length`` bytes written in ``piece_bytes`` pieces reserves."""
        return min(2 * min(length, piece_bytes), self.max_inflight_bytes)

    async def reserve(self, n: int, deadline: float) -> bool:
        """Take ``n`` bytes of the budget, waiting for others to give some back until ``deadline``."""
        while n and self.inflight + n > self.max_inflight_bytes:  # an empty body (a poll's timeout) never waits
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._freed is None:
                self._freed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), remaining)
        self.inflight += n
        INFLIGHT_BYTES.set(self.inflight)
        return True

    def release(self, n: int) -> None:
        """Give ``n`` reserved bytes back and wake whoever waits for budget."""
        self.inflight -= n
        INFLIGHT_BYTES.set(self.inflight)
        if self._freed is not None:
            self._freed.set()
            self._freed = None


def busy_response(reason: str, detail: str, reject: Reject) -> JSONResponse:
    """503 with ``Retry-After`` and ``Connection: close`` (a refused client keeps no descriptor here)."""
    resp = reject(503, reason, detail, retry_after_s=RETRY_AFTER_S)
    resp.headers["Retry-After"] = str(RETRY_AFTER_S)
    resp.headers["Connection"] = "close"
    return resp


async def until_disconnect(receive: Receive) -> None:
    """Return when the client has gone away (the request body, if any, is read and dropped)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class WindowsResponse(Response):
    """A 200 whose body is written piece by piece from ``pieces`` (``length`` bytes in all).

    ``on_close`` runs exactly once when the body is done, however it ends. ``disconnected`` is a task
    that finishes when the client goes away (one is started here if none is given and the body has
    more than one piece).
    """

    def __init__(
        self,
        pieces: Iterator[bytes],
        length: int,
        headers: dict[str, str],
        media_type: str,
        on_close: Callable[[], None],
        disconnected: asyncio.Future[Any] | None = None,
        single_piece: bool = True,
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({**headers, "content-length": str(length)})
        self._pieces = pieces
        self._on_close = on_close
        self._disconnected = disconnected
        self._single_piece = single_piece

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = self._disconnected
        try:
            if watcher is None and not self._single_piece:
                watcher = asyncio.ensure_future(until_disconnect(receive))
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            while True:
                try:
                    piece = next(self._pieces, None)
                except ScnTooOld as exc:
                    STREAMS_CUT.inc()
                    log.warning("stream_cut_short", since=exc.since, oldest_scn=exc.oldest_scn)
                    return  # uvicorn closes the connection: the body is shorter than its Content-Length
                if piece is None:
                    break
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                del piece  # the transport holds what the socket did not take; copy the next one only now
                if watcher is not None and watcher.done():
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()
            self._pieces = iter(())
            self._on_close()
