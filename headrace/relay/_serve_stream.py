"""``GET /v1/stream``: parameters, admission, the long-poll, and the streamed answer.

The request's parameters are checked first (:mod:`._protocol`), then it is admitted
(:class:`~._stream.StreamLimits`), then it waits for windows after ``since`` (on the ``asyncio.Event``
the capture thread's deliveries set, up to ``wait_ms``, freeing its slot at once if the client goes
away), reserves in-flight budget and hands a :class:`~._stream.WindowsResponse` the pieces the ring
buffer copies out (see ``_stream.py``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from .._http import Reject, int_param
from ..errors import InvalidInput, ScnTooOld
from ._buffer import ReadPlan
from ._event import EVENTS_CONTENT_TYPE
from ._filter import Filter, parse_filter
from ._metrics import SERVED_BYTES, SERVED_EVENTS
from ._protocol import MAX_SCN, STREAM_PARAMS, check_params, parse_sources, stream_headers, too_old_response
from ._stream import MIN_RESERVE_WAIT, StreamLimits, WindowsResponse, busy_response, until_disconnect

if TYPE_CHECKING:
    from ._serve import RelayState

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_WAIT_MS", "StreamEndpoint"]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_WAIT_MS = 10_000


class _Watch:
    """The task that notices the client going away while a request waits (started only if it waits)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.task: asyncio.Future[None] | None = None

    def started(self) -> asyncio.Future[None]:
        if self.task is None:
            self.task = asyncio.ensure_future(until_disconnect(self.request.receive))
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class StreamEndpoint:
    """The ``/v1/stream`` handler of one relay (an ASGI-style ``await endpoint(request)``)."""

    def __init__(self, state: RelayState, reject: Reject) -> None:
        self.state = state
        self.cfg = state.config
        self.reject = reject
        self.limits = StreamLimits(self.cfg.max_stream_requests, self.cfg.max_inflight_bytes)

    async def __call__(self, request: Request) -> Response:
        try:
            since, max_bytes, wait_ms, flt = self.parse(request.query_params)
        except InvalidInput as exc:
            return self.reject(400, exc.reason, exc.detail)
        limits = self.limits
        refused = limits.admit()
        if refused is not None:
            detail = (
                f"{limits.active} of relay.max_stream_requests={limits.max_requests} stream requests are open"
                if refused == "too_many_streams"
                else f"relay.max_inflight_bytes={limits.max_inflight_bytes} is taken by responses being written"
            )
            return busy_response(refused, detail, self.reject)
        handed_off = False
        try:
            resp = await self.serve(request, since, max_bytes, wait_ms, flt)
            handed_off = isinstance(resp, WindowsResponse)  # it gives the slot back when its body is done
            return resp
        finally:
            if not handed_off:
                limits.leave()

    def parse(self, params: QueryParams) -> tuple[int | None, int, int, Filter]:
        """``since``, ``max_bytes``, ``wait_ms`` and the filter; :class:`InvalidInput` for anything off."""
        cfg = self.cfg
        check_params(params, STREAM_PARAMS)
        since = int_param(params, "since", None, 0, MAX_SCN)
        # the defaults never pass the configured maximums
        max_bytes = int_param(
            params, "max_bytes", min(DEFAULT_MAX_BYTES, cfg.max_response_bytes), 1, cfg.max_response_bytes
        )
        wait_ms = int_param(params, "wait_ms", min(DEFAULT_WAIT_MS, cfg.max_wait_ms), 0, cfg.max_wait_ms)
        sources = parse_sources(params, self.state.table_names, "not captured", "captured")
        flt = parse_filter(params.get("filter"), sources)
        assert max_bytes is not None and wait_ms is not None
        return since, max_bytes, wait_ms, flt

    async def serve(self, request: Request, since: int | None, max_bytes: int, wait_ms: int, flt: Filter) -> Response:
        """The admitted part: wait for data, reserve in-flight budget, hand the body over."""
        deadline = time.monotonic() + wait_ms / 1000.0
        watch = _Watch(request)
        handed_off = False
        try:
            plan = await self.wait_for_plan(watch, since, max_bytes, flt, deadline)
            if isinstance(plan, Response):
                return plan
            resp = await self.respond(request, plan, flt, deadline, watch.task)
            handed_off = isinstance(resp, WindowsResponse)
            return resp
        finally:
            if not handed_off:
                watch.cancel()

    async def wait_for_plan(
        self, watch: _Watch, since: int | None, max_bytes: int, flt: Filter, deadline: float
    ) -> ReadPlan | Response:
        """The plan of windows after ``since`` once there are any (or at ``deadline``); else a 410 or 499."""
        state = self.state
        buf = state.buffer
        if since is None:
            since = buf.oldest_scn
        use = None if flt.sources is None and not flt.per_event else flt
        while True:
            try:
                plan = buf.plan(since, max_bytes, use)
            except ScnTooOld as exc:
                advice = "use a bootstrap server or start again from a snapshot"
                return too_old_response(self.reject, since, exc.oldest_scn or 0, "this relay", advice)
            remaining = deadline - time.monotonic()
            if plan.windows or remaining <= 0:
                return plan
            # Waiting holds no window data: only this request's objects, its socket and this task.
            watcher = watch.started()
            data_waiter = asyncio.ensure_future(state.new_data.wait())
            try:
                await asyncio.wait((data_waiter, watcher), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                data_waiter.cancel()
            if watcher.done():  # the client went away: free the slot now, not at the deadline
                return Response(status_code=499)

    async def respond(
        self, request: Request, plan: ReadPlan, flt: Filter, deadline: float, watcher: asyncio.Future[None] | None
    ) -> Response:
        """Reserve in-flight budget for ``plan`` and answer with its body (or 503 when none frees up in time)."""
        state, limits, buf = self.state, self.limits, self.state.buffer
        piece_bytes = self.cfg.stream_batch_bytes
        charge = limits.charge(plan.length, piece_bytes)
        if not await limits.reserve(charge, max(deadline, time.monotonic() + MIN_RESERVE_WAIT)):
            return busy_response(
                "inflight_bytes_limit",
                f"relay.max_inflight_bytes={limits.max_inflight_bytes} stayed taken by responses being written",
                self.reject,
            )
        client = request.client
        sub_id = request.query_params.get("subscriber") or (f"{client.host}:{client.port}" if client else "?")
        state.seen(sub_id, plan.scn, flt.describe())
        SERVED_BYTES.inc(plan.length)
        SERVED_EVENTS.inc(plan.events)
        headers = stream_headers(plan.scn, buf.oldest_scn, buf.newest_scn, plan.windows, plan.events)

        def done() -> None:
            limits.release(charge)
            limits.leave()

        return WindowsResponse(
            buf.pieces(plan, piece_bytes),
            plan.length,
            headers,
            EVENTS_CONTENT_TYPE,
            done,
            watcher,
            single_piece=plan.length <= piece_bytes,
        )
