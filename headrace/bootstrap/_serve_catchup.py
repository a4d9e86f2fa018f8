"""``GET /v1/catchup``: the log store's windows after ``since``, answered like the relay's ``/v1/stream``.

Same parameters, headers and frames as the relay (the relay protocol, ``relay/_protocol.py``); the
windows are read from the log store in one query and framed by the relay's pure reader
(:func:`~headrace.relay._buffer.read_windows`), so filtering and the ``max_bytes`` cut work exactly as
on the relay. 410 ``scn_too_old`` when ``since`` is below the compacted part of the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from .._http import Reject, int_param
from .._logging import get_logger
from ..errors import InvalidInput
from ..relay import EVENTS_CONTENT_TYPE, Filter, parse_filter
from ..relay._buffer import ReadResult, read_windows
from ..relay._codec import EncodedWindow
from ..relay._protocol import MAX_SCN, SNAPSHOT_SCN, STREAM_PARAMS, check_params, stream_headers, too_old_response
from ._metrics import SERVED_EVENTS
from ._serve_snapshot import parse_sources_here
from ._store_state import StoreState

if TYPE_CHECKING:
    from ._serve import BootstrapState
    from ._store import Store

__all__ = ["LOG_READ_WINDOWS", "catchup_endpoint", "read_log"]

log = get_logger("bootstrap.catchup")

#: the most log windows one catch-up answer reads from the store
LOG_READ_WINDOWS = 10_000
#: ``wait_ms`` is taken (the relay's API has it) and checked, but a catch-up answers at once
MAX_WAIT_MS = 3_600_000


def catchup_endpoint(st: BootstrapState, reject: Reject) -> Callable[[Request], Awaitable[Response]]:
    """The ``/v1/catchup`` handler (503 ``not_ready`` before the log store started)."""

    async def catchup(request: Request) -> Response:
        params = request.query_params
        try:
            since, max_bytes = _params(params, st.config.max_bytes)
            sources = parse_sources_here(params, await asyncio.to_thread(st.known_sources))
            flt = parse_filter(params.get("filter"), sources)
        except InvalidInput as exc:
            return reject(400, exc.reason, exc.detail)
        state = await asyncio.to_thread(st.store.state)
        floor = state["log_floor"]
        if floor is None:
            return reject(503, "not_ready", "the log store has not started yet")
        if since < floor:
            return too_old_response(reject, since, floor, "this bootstrap log", "start again from /v1/snapshot")
        if params.get("subscriber"):
            st.sessions.touch(params["subscriber"], since)
        use = None if flt.sources is None and not flt.per_event else flt
        res, state = await asyncio.to_thread(read_log, st.store, since, max_bytes, use)
        floor = state["log_floor"]
        if floor is not None and since < floor:  # compacted while it was read: the answer may have a hole
            log.warning("catchup_compacted_while_read", since=since, log_floor=floor)
            return too_old_response(reject, since, floor, "this bootstrap log", "start again from /v1/snapshot")
        SERVED_EVENTS.inc(res.events)
        headers = stream_headers(res.scn, state["log_floor"], state["log_scn"], res.windows, res.events)
        return Response(res.data, media_type=EVENTS_CONTENT_TYPE, headers=headers)

    return catchup


def _params(params: QueryParams, max_bytes_cap: int) -> tuple[int, int]:
    """``since`` (required) and ``max_bytes``; :class:`InvalidInput` for anything off."""
    check_params(params, STREAM_PARAMS)
    since = int_param(params, "since", None, 0, MAX_SCN)
    if since is None:
        raise InvalidInput("bad_since", f"give since=SCN (the snapshot's {SNAPSHOT_SCN})")
    max_bytes = int_param(params, "max_bytes", max_bytes_cap, 1, max_bytes_cap)
    int_param(params, "wait_ms", 0, 0, MAX_WAIT_MS)
    assert max_bytes is not None
    return since, max_bytes


def read_log(store: Store, since: int, max_bytes: int, flt: Filter | None) -> tuple[ReadResult, StoreState]:
    """The answer after ``since`` (in a worker thread) and the store state it was read at, with the
    ``log_floor`` read *after* the windows: a compaction that committed between the caller's floor
    check and this read deleted windows after ``since`` (the answer would skip them while claiming
    to have scanned up to ``log_scn``); then ``since`` is below that floor and the caller answers
    ``scn_too_old`` instead (issue 15: a sink's change table had a gap of updates)."""
    state = store.state()
    # Nothing is logged past log_scn: no query then (an SCN ≥ 2^63 does not fit the store's BIGINT).
    newest = state["log_scn"]
    logged = (
        store.log_windows(since, LOG_READ_WINDOWS, max_bytes, upto=newest)
        if newest is not None and since < newest
        else []
    )
    windows = [EncodedWindow(w.scn, w.first_scn, w.ts_ms, w.events, w.data, w.tables) for w in logged]
    res = read_windows(windows, since, max_bytes, flt)
    whole = len(windows) < LOG_READ_WINDOWS and sum(len(w.data) for w in windows) < max_bytes
    if whole and (not windows or res.scn == windows[-1].scn):
        # every logged window up to log_scn was read: the subscriber may move there
        res = ReadResult(res.data, max(res.scn, int(state["log_scn"] or since)), res.windows, res.events)
    return res, {**state, "log_floor": store.state()["log_floor"]}
