"""The bootstrap server's HTTP API (Starlette): snapshot, catch-up, status, sources, schemas.

``GET /v1/snapshot`` pages through the snapshot store in (source, key) order; each response is one
window of ``r`` frames copied from the store (the last one marked), read in one transaction, with
``X-Headrace-Snapshot-Scn`` (the SCN the store was applied to at that read), ``X-Headrace-Cursor``
(pass it back as ``after`` to continue after the last row) and ``X-Headrace-Done: 1`` on the last
page. ``GET /v1/catchup`` answers like the relay's ``/v1/stream`` from the log store (same
parameters, headers and frames; the relay's buffer and filter code do the reading), 410
``scn_too_old`` when ``since`` is below the compacted part of the log. See ``docs/bootstrap.md``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._access import Access
from .._http import error_response, int_param, standard_routes
from .._logging import get_logger
from ..errors import InvalidInput
from ..relay import (
    EVENTS_CONTENT_TYPE,
    EncodedWindow,
    Filter,
    RingBuffer,
    SchemaVersion,
    parse_filter,
    peek_header,
    source_listing,
    with_window_end,
)
from ._applier import lag
from ._config import BootstrapConfig
from ._metrics import REJECTS, SERVED_EVENTS, SERVED_ROWS
from ._sessions import Sessions
from ._store import Store

__all__ = ["BootstrapState", "build_app", "decode_cursor", "encode_cursor"]

log = get_logger("bootstrap.serve")

SNAPSHOT_PARAMS = frozenset({"sources", "filter", "after", "limit", "subscriber", "snapshot_scn"})
CATCHUP_PARAMS = frozenset({"since", "sources", "filter", "max_bytes", "wait_ms", "subscriber"})
_FP_RE = re.compile(r"[0-9a-fA-F]{16}")  # matched whole (fullmatch): no trailing newline


def encode_cursor(source: str, sort_key: bytes, gen: int | None = None) -> str:
    """The opaque ``after`` cursor of a snapshot row (of store generation ``gen``)."""
    body: list[Any] = [source, sort_key.hex()] if gen is None else [source, sort_key.hex(), gen]
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, bytes, int | None]:
    """``(source, sort key, generation)`` of a cursor (generation None in cursors of older servers).

    Strict: a JSON list of a string, a hex string and (optionally) an integer generation in
    ``[0, 2^63)``; anything else (floats, ``Infinity``, booleans, nesting past the recursion limit)
    is :class:`InvalidInput` ``bad_after``, never a 500.
    """
    bad = InvalidInput("bad_after", f"after={text[:200]!r} is not a cursor this server gave (X-Headrace-Cursor)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        parts = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(parts, list) or len(parts) not in (2, 3):
        raise bad
    source, key = parts[0], parts[1]
    gen = parts[2] if len(parts) == 3 else None
    if not isinstance(source, str) or not isinstance(key, str):
        raise bad
    if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen < 1 << 63):
        raise bad
    try:
        return source, bytes.fromhex(key), gen
    except ValueError:
        raise bad from None


@dataclass
class BootstrapState:
    """What the handlers share."""

    config: BootstrapConfig
    store: Store
    health: Callable[[], dict[str, Any]] = field(default=lambda: {"ok": True})
    relay_newest: Callable[[], int | None] = field(default=lambda: None)
    #: the seed's progress (:meth:`~._seed_progress.SeedProgress.status`), shown as ``seeding`` in /v1/status
    seed_progress: Callable[[], dict[str, Any] | None] = field(default=lambda: None)
    schemas: dict[str, SchemaVersion] = field(default_factory=dict)
    on_start: Callable[[], None] | None = None
    on_stop: Callable[[], None] | None = None
    sessions: Sessions = field(default_factory=lambda: Sessions(600.0, time.monotonic))

    def known_sources(self) -> frozenset[str]:
        if self.config.sources is not None:
            return frozenset(self.config.sources)
        if not self.schemas:
            self.schemas = self.store.schemas()
        return frozenset(sv.table for sv in self.schemas.values())

    def schema(self, fp: str) -> SchemaVersion | None:
        sv = self.schemas.get(fp)
        if sv is None:
            self.schemas = self.store.schemas()
            sv = self.schemas.get(fp)
        return sv


class _Restarted(Exception):
    """The served generation changed under a snapshot read."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state


def _reject(status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    REJECTS.labels(reason).inc()
    log.info("request_rejected", status=status, reason=reason, detail=detail)
    return error_response(status, reason, detail, **extra)


def _sources(params: Any, known: frozenset[str]) -> frozenset[str] | None:
    if not params.get("sources"):
        return None
    wanted = frozenset(s.strip() for s in params["sources"].split(",") if s.strip())
    missing = sorted(wanted - known)
    if missing:
        raise InvalidInput(
            "unknown_source", f"not kept here: {', '.join(missing)} (kept: {', '.join(sorted(known)) or 'none yet'})"
        )
    return wanted


def snapshot_ready(state: dict[str, Any]) -> str | None:
    """None when the snapshot store may be served, else why not."""
    b = state.get("building")
    if state["applied_scn"] is None:
        if b is not None:
            seed = b.get("seed") or {}
            where = f"table {seed.get('table')!r}" if seed.get("table") else "starting"
            return f"seeding is in progress (generation {b['gen']}: {where}; done: {bool(seed.get('done'))})"
        return "the store has not started (no seed, no log yet)"
    seed = state["seed"]
    if seed is not None and not seed.get("done"):
        return "seeding is in progress"
    if seed is not None and state["applied_scn"] < seed["high_scn"]:
        return f"applying the log up to the seed's SCN {seed['high_scn']} (at {state['applied_scn']})"
    return None


def snapshot_restarted(state: dict[str, Any], cursor_gen: int | None, snapshot_scn: int | None) -> str | None:
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


def build_app(st: BootstrapState) -> Starlette:
    """The bootstrap server's Starlette app; ``on_start``/``on_stop`` run in its lifespan."""
    cfg = st.config
    store = st.store

    access = Access(
        "bootstrap",
        cfg.tokens,
        ("read",),
        metrics_open_on_localhost=cfg.metrics_open_on_localhost,
        on_denied=lambda d: REJECTS.labels(d.reason).inc(),
    )

    def unauthorized(request: Request) -> JSONResponse | None:
        return access.check(request, "read")

    def _snapshot_read(
        sources: list[str], after: tuple[str, bytes, int | None] | None, limit: int, flt: Filter
    ) -> tuple[bytes, dict[str, Any], str | None, bool, int]:
        rows, state = store.snapshot_page(sources, after[:2] if after is not None else None, limit)
        if after is not None and snapshot_restarted(state, after[2], None) is not None:
            raise _Restarted(state)  # replaced between the check and this read
        frames: list[bytes] = []
        for _s, _k, frame in rows:
            if flt.per_event and not flt.matches(peek_header(frame)):
                continue
            frames.append(frame)
        if frames:
            frames[-1] = with_window_end(frames[-1])
        cursor = encode_cursor(rows[-1][0], rows[-1][1], state["gen"]) if rows else None
        return b"".join(frames), state, cursor, len(rows) < limit, len(frames)

    async def snapshot(request: Request) -> Response:
        if (bad := unauthorized(request)) is not None:
            return bad
        params = request.query_params
        unknown = sorted(set(params.keys()) - SNAPSHOT_PARAMS)
        if unknown:
            return _reject(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
        try:
            known = await asyncio.to_thread(st.known_sources)
            sources = _sources(params, known)
            flt = parse_filter(params.get("filter"), sources)
            limit = min(int_param(params, "limit", cfg.max_snapshot_rows, 1, 1 << 31) or 1, cfg.max_snapshot_rows)
            after = decode_cursor(params["after"]) if params.get("after") else None
            s0 = int_param(params, "snapshot_scn", None, 0, (1 << 64) - 1)
        except InvalidInput as exc:
            return _reject(400, exc.reason, exc.detail)
        state = await asyncio.to_thread(store.state)
        why = snapshot_ready(state)
        if why is not None:
            return _reject(503, "not_ready", f"the snapshot cannot be served yet: {why}")
        restart = snapshot_restarted(state, after[2] if after is not None else None, s0 if after is not None else None)
        if restart is not None:
            return _reject(410, "snapshot_restarted", restart, generation=state["gen"])
        if params.get("subscriber"):  # before reading: the page's SCN is at least this
            st.sessions.touch(params["subscriber"], s0 if s0 is not None else int(state["applied_scn"]))
        try:
            data, state, cursor, done, count = await asyncio.to_thread(
                _snapshot_read, sorted(sources or known), after, limit, flt
            )
        except _Restarted as exc:
            return _reject(410, "snapshot_restarted", "the snapshot was re-seeded", generation=exc.state["gen"])
        SERVED_ROWS.inc(count)
        headers = {
            "X-Headrace-Snapshot-Scn": str(state["applied_scn"]),
            "X-Headrace-Rows": str(count),
            "X-Headrace-Done": "1" if done else "0",
        }
        if cursor is not None:
            headers["X-Headrace-Cursor"] = cursor
        return Response(data, media_type=EVENTS_CONTENT_TYPE, headers=headers)

    def _catchup_read(since: int, max_bytes: int, flt: Filter | None) -> tuple[Any, dict[str, Any]]:
        state = store.state()
        limit = 10_000
        # Nothing is logged past log_scn: no query then (an SCN ≥ 2^63 does not fit the store's BIGINT).
        newest = state["log_scn"]
        windows = (
            store.log_windows(since, limit, max_bytes, upto=newest) if newest is not None and since < newest else []
        )
        buf = RingBuffer(1 << 62, start_scn=since)
        for w in windows:
            buf.append(EncodedWindow(w.scn, w.first_scn, w.ts_ms, w.events, w.data, w.tables))
        res = buf.read(since, max_bytes, flt)
        whole = len(windows) < limit and sum(len(w.data) for w in windows) < max_bytes
        if whole and (not windows or res.scn == windows[-1].scn):
            # every logged window up to log_scn was read: the subscriber may move there
            res = type(res)(res.data, max(res.scn, int(state["log_scn"] or since)), res.windows, res.events)
        return res, state

    async def catchup(request: Request) -> Response:
        if (bad := unauthorized(request)) is not None:
            return bad
        params = request.query_params
        unknown = sorted(set(params.keys()) - CATCHUP_PARAMS)
        if unknown:
            return _reject(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
        try:
            since = int_param(params, "since", None, 0, (1 << 64) - 1)
            if since is None:
                raise InvalidInput("bad_since", "give since=SCN (the snapshot's X-Headrace-Snapshot-Scn)")
            max_bytes = int_param(params, "max_bytes", cfg.max_bytes, 1, cfg.max_bytes)
            int_param(params, "wait_ms", 0, 0, 3_600_000)
            known = await asyncio.to_thread(st.known_sources)
            sources = _sources(params, known)
            flt = parse_filter(params.get("filter"), sources)
        except InvalidInput as exc:
            return _reject(400, exc.reason, exc.detail)
        assert max_bytes is not None
        state = await asyncio.to_thread(store.state)
        floor = state["log_floor"]
        if floor is None:
            return _reject(503, "not_ready", "the log store has not started yet")
        if since < floor:
            return _reject(
                410,
                "scn_too_old",
                f"since={since} is older than the oldest SCN this bootstrap log holds ({floor}); "
                "start again from /v1/snapshot",
                oldest_scn=floor,
            )
        if params.get("subscriber"):
            st.sessions.touch(params["subscriber"], since)
        use = None if flt.sources is None and not flt.per_event else flt
        res, state = await asyncio.to_thread(_catchup_read, since, max_bytes, use)
        SERVED_EVENTS.inc(res.events)
        headers = {
            "X-Headrace-Scn": str(res.scn),
            "X-Headrace-Oldest-Scn": str(state["log_floor"]),
            "X-Headrace-Newest-Scn": str(state["log_scn"]),
            "X-Headrace-Windows": str(res.windows),
            "X-Headrace-Events": str(res.events),
        }
        return Response(res.data, media_type=EVENTS_CONTENT_TYPE, headers=headers)

    async def status(request: Request) -> Response:
        if (bad := unauthorized(request)) is not None:
            return bad
        body = await asyncio.to_thread(lag, store, st.relay_newest())
        state = await asyncio.to_thread(store.state)
        body["snapshot_ready"] = snapshot_ready(state) is None
        body["sources"] = sorted(await asyncio.to_thread(st.known_sources))
        body["health"] = st.health()
        body["bootstrap_sessions"] = st.sessions.count()
        body["seeding"] = st.seed_progress()
        return JSONResponse(body)

    async def sources(request: Request) -> Response:
        if (bad := unauthorized(request)) is not None:
            return bad
        st.schemas = await asyncio.to_thread(store.schemas)
        by_table: dict[str, list[SchemaVersion]] = {}
        for sv in st.schemas.values():
            by_table.setdefault(sv.table, []).append(sv)
        out = source_listing(st.known_sources(), lambda name: sorted(by_table.get(name, []), key=lambda v: v.version))
        return JSONResponse({"sources": out})

    async def schema(request: Request) -> Response:
        if (bad := unauthorized(request)) is not None:
            return bad
        fp = request.path_params["fingerprint"]
        if not _FP_RE.fullmatch(fp):
            return _reject(400, "bad_fingerprint", f"{fp!r} is not 16 hex digits")
        sv = await asyncio.to_thread(st.schema, fp.lower())
        if sv is None:
            return _reject(404, "unknown_schema", f"no schema with fingerprint {fp}")
        return JSONResponse(sv.to_json())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if st.on_start is not None:
            st.on_start()
        try:
            yield
        finally:
            if st.on_stop is not None:
                await asyncio.to_thread(st.on_stop)

    routes = [
        *standard_routes(lambda: st.health(), access, "bootstrap"),
        Route("/v1/snapshot", snapshot),
        Route("/v1/catchup", catchup),
        Route("/v1/status", status),
        Route("/v1/sources", sources),
        Route("/v1/schemas/{fingerprint}", schema),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.access = access
    return app
