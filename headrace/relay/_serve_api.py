"""The relay's small JSON endpoints: ``/v1/sources``, ``/v1/status``, ``POST /v1/ack`` and ``/healthz``'s body.

Each ``*_endpoint`` function makes the handler for one route from the relay's shared state; access
control is added where the routes are assembled (``_serve.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .._http import Reject, read_json
from .._limits import body_timed_out
from ..errors import InvalidInput
from ._schema import source_listing

if TYPE_CHECKING:
    from ._serve import RelayState

__all__ = ["ACK_MAX_BYTES", "ack_endpoint", "health", "sources_endpoint", "status_endpoint"]

Endpoint = Callable[[Request], Awaitable[Response]]

#: an acknowledgement is a small JSON object (a few dozen bytes); larger bodies are refused unread
ACK_MAX_BYTES = 64 << 10
#: a subscriber not seen for this long leaves ``/v1/status``
SUBSCRIBER_TTL_S = 300


def sources_endpoint(state: RelayState) -> Endpoint:
    """``GET /v1/sources``: every captured table with its schema versions."""

    async def sources(request: Request) -> Response:
        return JSONResponse({"sources": source_listing(state.table_names, state.registry.versions)})

    return sources


def status_endpoint(state: RelayState) -> Endpoint:
    """``GET /v1/status``: the buffer, the subscribers seen lately, durable consumers, capture and source."""

    async def status(request: Request) -> Response:
        buf = state.buffer
        now = time.time()
        for k in [k for k, s in state.subscribers.items() if now - s.last_seen > SUBSCRIBER_TTL_S]:
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

    return status


def ack_endpoint(state: RelayState, reject: Reject) -> Endpoint:
    """``POST /v1/ack`` ``{"consumer": NAME, "scn": N}``: a durable consumer has everything ≤ N."""
    usage = 'send JSON {"consumer": NAME, "scn": N}'

    async def ack(request: Request) -> Response:
        try:
            body = await read_json(request, ACK_MAX_BYTES)
        except InvalidInput as exc:
            return reject(413 if exc.reason == "too_large" else 400, exc.reason, f"{exc.detail}; {usage}")
        except ClientDisconnect:  # gone, or cut off by the body limits (which answer 408 themselves)
            return reject(400, body_timed_out(request.scope) or "bad_body", "the body did not arrive whole")
        if not isinstance(body, dict) or not isinstance(body.get("consumer"), str) or "scn" not in body:
            return reject(400, "bad_body", usage)
        try:
            consumer, scn = check_ack(state, body["consumer"], body["scn"])
            recorded = state.acks.ack(consumer, scn)
        except InvalidInput as exc:
            if exc.reason == "scn_not_served":
                return reject(400, exc.reason, exc.detail, newest_scn=state.buffer.newest_scn)
            return reject(400, exc.reason, exc.detail)
        return JSONResponse({"consumer": consumer, "scn": recorded})

    return ack


def check_ack(state: RelayState, consumer: str, scn: Any) -> tuple[str, int]:
    """The acknowledgement, if the relay may record it; else :class:`InvalidInput` saying why."""
    if consumer not in state.acks.consumers:
        raise InvalidInput(
            "unknown_consumer", f"{consumer!r} is not in relay.durable_consumers ({', '.join(state.acks.consumers)})"
        )
    if isinstance(scn, bool) or not isinstance(scn, int) or not 0 <= scn < 1 << 64:
        raise InvalidInput("bad_scn", f"scn must be an integer in [0, 2^64): got {json.dumps(scn)[:80]}")
    # An acknowledgement lets the source discard its log up to there: never past what this relay has
    # taken in (a typo or a consumer of another database would lose every change in between).
    # Repeating an SCN already recorded changes nothing and is fine (e.g. after a relay restart).
    newest = state.buffer.newest_scn
    if scn > newest and scn > state.acks.snapshot().get(consumer, -1):
        raise InvalidInput(
            "scn_not_served",
            f"scn={scn} is past the newest SCN this relay has taken in ({newest}); acknowledge only what you "
            "received from it",
        )
    return consumer, scn


def health(state: RelayState) -> dict[str, Any]:
    """The ``/healthz`` body: not ok once capture stopped (with the report) or its thread died."""
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
