"""``POST /v1/chunks``: authenticate, bound, decode and check a batch, then wait for its ack.

The checks run in this order, and a request that fails one is answered at once with a 4xx JSON body
``{"error": reason, "detail": …}``, a log line and ``headrace_collector_rejects_total{reason}``; no
byte of it reaches the sink (a batch is decoded whole before anything is written):

1. bearer token with the ``write`` scope, when tokens are configured (401 ``unauthorized``, 403
   ``forbidden``; see ``headrace._access``);
2. ``Content-Length`` above ``max_body_bytes`` (413 ``body_too_large``, before reading the body);
   a body without a length is read only up to the limit; body bytes count against
   ``max_inflight_bytes`` as they arrive (not as announced), and a request that would pass it while
   other requests hold bytes gets 503 ``overloaded``; a body that arrives too slowly is cut off by
   the ``limits:`` section (408 ``body_timeout`` / ``body_too_slow``, :mod:`headrace._limits`);
3. ``Content-Encoding``: none or ``identity``: the body is the batch; ``zstd`` (with
   ``accept_compression``, the default): the frame header is checked as soon as it arrives and the
   body decompressed once it is whole (``headrace._wire_zstd``; in a worker thread when large): a
   frame declaring more than ``max_body_bytes`` is 413 ``body_too_large`` before any output, a frame
   that is not one whole zstd frame of the size it declares is 400 ``bad_encoding``, and the output
   is never held past the declared size (a zstd bomb costs no memory; the declared size counts
   against ``max_inflight_bytes``); any other encoding is 415 ``unsupported_encoding`` with
   ``Accept-Encoding: zstd``. With ``accept_compression: false`` the header is ignored, as it was
   before compression existed: a zstd body is then 400 ``malformed`` (not a batch), which is what a
   sender takes as "send this collector identity";
4. the batch codec (``headrace._chunk.decode_batch``, every header through the one strict parser
   ``parse_chunk``): framing, CRC, strict JSON with exact types, offsets within the Avro ``long``,
   names matched whole, tags (400, or 413 for ``chunk_too_large``; the rules are in
   docs/collector.md). A forwarding collector runs the same checks, so it never acks what its
   upstream would refuse;
4. source binding: a token with ``sources`` may write only chunks whose ``source`` matches one of
   them (403 ``forbidden_source`` for the whole batch; nothing of it is written or acked).

An accepted batch is answered ``200 {"acked": N, "duplicates": K}`` once all N chunks are fsynced in
a sink file or the forwarding spool (or were before: the K duplicates), or ``503`` (``overloaded``,
``unavailable``: the sink failed or the collector is stopping, ``spool_full``); a 503 acks nothing,
so the sender re-sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .._access import Access, Denied
from .._chunk import Chunk, decode_batch
from .._http import rejecter
from .._limits import body_timed_out
from .._logging import get_logger
from .._wire_zstd import ZSTD, BoundedZstdDecoder
from ..errors import InvalidInput, TransientError
from . import _metrics as m

__all__ = ["ChunkReceiver", "Limits"]

log = get_logger("collector.receive")
_reject = rejecter(m.REJECTS, log, event="batch rejected", level="warning")

#: compressed bodies at least this large are decompressed off the event loop
_THREAD_BYTES = 64 << 10
_STATUS = {"unauthorized": 401, "body_too_large": 413, "chunk_too_large": 413, "unsupported_encoding": 415}


class _Overloaded(Exception):
    """A zstd body's decompressed size does not fit in max_inflight_bytes now."""


#: Takes a batch's chunks, returns (acked, duplicates) once durable; raises TransientError if it cannot.
Submit = Callable[[list[Chunk]], Awaitable[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes a request may have."""

    max_body_bytes: int
    max_chunk_bytes: int
    max_inflight_bytes: int


class ChunkReceiver:
    """The request handler; ``submit`` hands a decoded batch to the group commit and waits for its ack."""

    def __init__(self, submit: Submit, limits: Limits, access: Access, *, accept_compression: bool = True) -> None:
        self.submit = submit
        self.limits = limits
        self.access = access
        self.accept_compression = accept_compression
        self.inflight = 0

    def reject(
        self, request: Request, reason: str, detail: str, status: int | None = None, token: str | None = None
    ) -> Response:
        code = status or _STATUS.get(reason, 400)
        peer = request.client.host if request.client else None
        resp = _reject(code, reason, detail, log_fields={"peer": peer, "token": token})
        if code == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="headrace"'
        if code == 503:
            resp.headers["Retry-After"] = "1"
        if code == 415:
            resp.headers["Accept-Encoding"] = ZSTD
        return resp

    def _take(self, held: list[int], n: int) -> None:
        """Count ``n`` more bytes of this request in flight (``held[0]``: what it holds so far); raise
        :class:`_Overloaded` when they do not fit while other requests hold bytes."""
        if self.inflight + n > self.limits.max_inflight_bytes and self.inflight > held[0]:
            raise _Overloaded
        self.inflight += n
        held[0] += n

    async def _read_body(self, request: Request, limit: int, held: list[int]) -> tuple[bytes, int]:
        """The body (at most ``limit`` bytes), its bytes counted in flight as they arrive."""
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise InvalidInput("body_too_large", f"body longer than max_body_bytes {limit}")
            self._take(held, len(part))
            parts.append(part)
        return b"".join(parts), size

    async def _read_zstd(self, request: Request, limit: int, held: list[int]) -> tuple[bytes, int]:
        """The zstd body decompressed (never more than ``limit`` bytes of output), and its wire size.

        The compressed bytes count in flight as they arrive; once the frame header tells the
        decompressed size, that much is counted too (raises :class:`_Overloaded` if it does not fit),
        before anything is decompressed.
        """
        decoder = BoundedZstdDecoder(limit)
        size = 0
        counted = False

        def hold() -> None:
            nonlocal counted
            if decoder.declared is not None and not counted:
                counted = True
                self._take(held, decoder.declared)

        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise InvalidInput("body_too_large", f"compressed body longer than max_body_bytes {limit}")
            self._take(held, len(part))
            decoder.feed(part)
            hold()
        hold()
        # libzstd releases the GIL: a large frame is decompressed in a worker thread, so the event
        # loop meanwhile reads other requests (and the group commit writes and fsyncs).
        body = await asyncio.to_thread(decoder.finish) if size >= _THREAD_BYTES else decoder.finish()
        hold()
        return body, size

    def _encoding(self, request: Request) -> str | None:
        """``zstd``, None for identity, or the unsupported encoding named (then the request is refused)."""
        if not self.accept_compression:
            return None  # as before compression existed: the header is not looked at
        raw = request.headers.get("content-encoding", "").strip().lower()
        if raw in ("", "identity"):
            return None
        return raw

    async def handle(self, request: Request) -> Response:
        policy = self.access.policy  # one policy for the whole request, even across a reload
        grant = policy.decide(
            request.headers.get("authorization"), "write", peer=request.client.host if request.client else None
        )
        if isinstance(grant, Denied):
            return self.reject(request, grant.reason, grant.detail, grant.status, grant.token)
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return self.reject(request, "malformed", "Content-Length is not a number")
            if int(declared) > limit:
                return self.reject(
                    request,
                    "body_too_large",
                    f"body of {declared} bytes > max_body_bytes {limit}; send smaller ones",
                )
        encoding = self._encoding(request)
        if encoding not in (None, ZSTD):
            return self.reject(
                request, "unsupported_encoding", f"Content-Encoding {encoding!r:.60}; this collector reads zstd or none"
            )
        if self.inflight >= self.limits.max_inflight_bytes:
            return self.reject(request, "overloaded", "too many bytes in flight; retry shortly", status=503)
        # Bytes are counted in flight as they arrive, never from the Content-Length announced: a slow
        # sender holds only what it has sent (and is cut off by the body timeout of headrace._limits).
        held = [0]
        try:
            try:
                body: bytes | bytearray
                if encoding == ZSTD:
                    body, wire = await self._read_zstd(request, limit, held)
                else:
                    body, wire = await self._read_body(request, limit, held)
            except ClientDisconnect:
                late = body_timed_out(request.scope)
                if late is not None:
                    return self.reject(request, late, f"the body did not arrive in time ({held[0]} bytes)", status=408)
                return self.reject(request, "malformed", "the client went away before sending the whole body")
            except InvalidInput as exc:
                return self.reject(request, exc.reason, exc.detail)
            except _Overloaded:
                return self.reject(request, "overloaded", "too many bytes in flight; retry shortly", status=503)
            try:
                chunks = decode_batch(body, max_chunk_bytes=self.limits.max_chunk_bytes)
            except InvalidInput as exc:
                return self.reject(request, exc.reason, exc.detail)
            del body
            bound = policy.forbidden_source(grant, (c.source for c in chunks))
            if bound is not None:
                return self.reject(request, bound.reason, bound.detail, bound.status, bound.token)
            try:
                acked, dups = await self.submit(chunks)
            except TransientError as exc:
                return self.reject(request, getattr(exc, "reason", "unavailable"), str(exc), status=503)
            m.WIRE_BYTES.labels(encoding or "identity").inc(wire)
            return JSONResponse({"acked": acked, "duplicates": dups})
        finally:
            self.inflight -= held[0]
