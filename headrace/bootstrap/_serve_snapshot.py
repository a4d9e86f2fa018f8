"""``GET /v1/snapshot``: the snapshot store, one page of ``r`` frames at a time, in (source, key) order.

Each page is read in one transaction and marked as one window (its last frame ends it), with
``X-Headrace-Snapshot-Scn``, ``X-Headrace-Rows``, ``X-Headrace-Done`` and, when it has rows,
``X-Headrace-Cursor``: an opaque ``after`` (:func:`encode_cursor`) that also names the store
generation, so a page of a re-seeded store is refused (410 ``snapshot_restarted``) rather than mixed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from .._http import Reject, int_param
from ..errors import InvalidInput
from ..relay import EVENTS_CONTENT_TYPE, Filter, parse_filter
from ..relay._event import peek_header, with_window_end
from ..relay._protocol import (
    MAX_SCN,
    SNAPSHOT_PARAMS,
    SNAPSHOT_RESTARTED,
    Cursor,
    check_params,
    decode_cursor,
    encode_cursor,
    parse_sources,
    snapshot_headers,
)
from ._metrics import SERVED_ROWS
from ._store_state import StoreState

if TYPE_CHECKING:
    from ._serve import BootstrapState

__all__ = ["decode_cursor", "encode_cursor", "snapshot_endpoint", "snapshot_ready", "snapshot_restarted"]


class _Restarted(Exception):
    """The served generation changed under a snapshot read."""

    def __init__(self, state: StoreState) -> None:
        self.state = state


def snapshot_ready(state: StoreState) -> str | None:
    """None when the snapshot store may be served, else why not."""
    b = state.get("building")
    if state["applied_scn"] is None:
        if b is not None:
            seed = b.get("seed") or {}
            where = f"table {seed.get('table')!r}" if seed.get("table") else "starting"
            return f"seeding is in progress (generation {b['gen']}: {where}; done: {bool(seed.get('done'))})"
        return "the store has not started (no seed, no log yet)"
    progress = state["seed"]
    if progress is not None and not progress.get("done"):
        return "seeding is in progress"
    if progress is not None and state["applied_scn"] < progress["high_scn"]:
        return f"applying the log up to the seed's SCN {progress['high_scn']} (at {state['applied_scn']})"
    return None


def snapshot_restarted(state: StoreState, cursor_gen: int | None, snapshot_scn: int | None) -> str | None:
    """Why a snapshot in progress cannot be continued (it must start over), or None.

    Its pages came from a store generation that was replaced (a re-seed), or the log it would catch
    up from (after ``snapshot_scn``) is gone."""
    if cursor_gen is not None and cursor_gen != state["gen"]:
        return f"the snapshot was re-seeded (generation {cursor_gen} → {state['gen']}); start again from the first page"
    floor = state["log_floor"]
    if snapshot_scn is not None and floor is not None and snapshot_scn < floor:
        return (
            f"snapshot_scn={snapshot_scn} is older than the oldest SCN this bootstrap log holds ({floor}); "
            "start again from the first page"
        )
    return None


def parse_sources_here(params: QueryParams, known: frozenset[str]) -> frozenset[str] | None:
    """The ``sources`` parameter, checked against what this server keeps."""
    return parse_sources(params, known, "not kept here", "kept", "none yet")


def snapshot_endpoint(st: BootstrapState, reject: Reject) -> Callable[[Request], Awaitable[Response]]:
    """The ``/v1/snapshot`` handler (503 ``not_ready`` while seeding, 410 ``snapshot_restarted``)."""
    cfg, store = st.config, st.store

    async def snapshot(request: Request) -> Response:
        params = request.query_params
        try:
            check_params(params, SNAPSHOT_PARAMS)
            known = await asyncio.to_thread(st.known_sources)
            sources = parse_sources_here(params, known)
            flt = parse_filter(params.get("filter"), sources)
            limit = min(int_param(params, "limit", cfg.max_snapshot_rows, 1, 1 << 31) or 1, cfg.max_snapshot_rows)
            after = decode_cursor(params["after"]) if params.get("after") else None
            s0 = int_param(params, "snapshot_scn", None, 0, MAX_SCN)
        except InvalidInput as exc:
            return reject(400, exc.reason, exc.detail)
        state = await asyncio.to_thread(store.state)
        why = snapshot_ready(state)
        if why is not None:
            return reject(503, "not_ready", f"the snapshot cannot be served yet: {why}")
        restart = snapshot_restarted(state, after[2] if after is not None else None, s0 if after is not None else None)
        if restart is not None:
            return reject(410, SNAPSHOT_RESTARTED, restart, generation=state["gen"])
        if params.get("subscriber"):  # before reading: the page's SCN is at least this
            served = state["applied_scn"]
            assert served is not None  # snapshot_ready said so
            st.sessions.touch(params["subscriber"], s0 if s0 is not None else served)
        try:
            data, state, cursor, done, count = await asyncio.to_thread(
                read_page, st, sorted(sources or known), after, limit, flt
            )
        except _Restarted as exc:
            return reject(410, SNAPSHOT_RESTARTED, "the snapshot was re-seeded", generation=exc.state["gen"])
        SERVED_ROWS.inc(count)
        page_scn = state["applied_scn"]
        assert page_scn is not None  # a generation is served
        headers = snapshot_headers(page_scn, count, done, cursor)
        return Response(data, media_type=EVENTS_CONTENT_TYPE, headers=headers)

    return snapshot


def read_page(
    st: BootstrapState, sources: list[str], after: Cursor | None, limit: int, flt: Filter
) -> tuple[bytes, StoreState, str | None, bool, int]:
    """One page (in a worker thread): its body, the store state it was read at, the next cursor,
    whether it is the last page, and how many frames it holds."""
    frames, last, state = st.store.snapshot_frames(sources, after[:2] if after is not None else None, limit)
    if after is not None and snapshot_restarted(state, after[2], None) is not None:
        raise _Restarted(state)  # replaced between the check and this read
    read = len(frames)
    if flt.per_event:
        matches = flt.matches
        frames = [f for f in frames if matches(peek_header(f))]
    if frames:
        frames[-1] = with_window_end(frames[-1])
    cursor = encode_cursor(last[0], last[1], state["gen"]) if last is not None else None
    return b"".join(frames), state, cursor, read < limit, len(frames)
