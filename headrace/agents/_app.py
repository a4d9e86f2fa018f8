"""The agent's HTTP face: status, run-time sources, the Log API, health and metrics.

Routes (all JSON):

* ``GET /v1/status`` — the agent's name, spool use, and per stream: ``path``, ``data_type``,
  ``acked_offset`` (stream offset acked by a collector), ``read_offset``, ``file_size`` (the file at
  the path now), ``lag_bytes`` (bytes in the files not yet acked);
* ``GET /v1/sources`` — the sources being tailed; ``POST /v1/sources`` with a source object
  (``{"path", "data_type", "name"?, "start"?, "multiline_start"?, "tags"?}``) adds one (201);
  ``DELETE /v1/sources/{id}`` removes one, ``id`` being its ``name`` or, without one, its path glob
  URL-encoded (204, or 404);
* ``POST /v1/log`` — ``{"data_type": "app", "records": ["one line", …], "tags"?: {…}}``: records
  appended to stream ``_api/<data_type>``, durable on the agent's disk when the answer is 200
  (``{"accepted": N}``); 503 with ``Retry-After`` when the spool is full (``spool_full``), its
  disk is full (``disk_full``) or its fsync failed (``spool_error``), nothing acked; 400 when any record
  could not be delivered as sent (reasons ``malformed``, ``bad_data_type``, ``bad_tags``,
  ``bad_record``, …: the request is refused whole and nothing is spooled); 413 ``too_large`` as soon
  as the body (``Content-Length`` or the bytes streamed so far, chunked too) passes
  ``log_api_max_bytes``;
* ``GET /healthz``, ``GET /metrics``.

Access (``headrace._access``; ``agent.tokens``): ``POST /v1/log`` needs the ``write`` scope,
``GET /v1/status``, ``GET /v1/sources`` and ``/metrics`` the ``read`` scope, when tokens are
configured; ``POST``/``DELETE /v1/sources`` need a ``control`` token always, so run-time source
changes are off (403 ``control_api_off``) until one is configured. A run-time source must lie in
``agent.allowed_paths`` (403 ``outside_allowed_paths``). Every control request is audited in the
log (``control_audit``: the token's id, never the token; the action; the result). ``/healthz`` is
open and carries no file paths.

Bad requests get a 4xx ``{"error": reason, "detail": …}``, a log line and a count in
``headrace_agent_rejects_total{reason}``; nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._access import Access, Denied, Grant, response
from .._http import error_response, guarded, loads_json, rejecter, standard_routes
from .._limits import body_timed_out
from .._logging import get_logger
from .._spool import SpoolDiskFull, SpoolFull
from ..errors import InvalidInput
from ._agent import Agent
from ._config import AgentConfig, SourceConfig

__all__ = ["make_app"]

log = get_logger("agent.http")
audit = get_logger("agent.audit")
REJECTS = Counter("headrace_agent_rejects_total", "Control/Log API requests refused, by reason", ["reason"])


_reject = rejecter(REJECTS, log, level="warning")


def _status(exc: InvalidInput) -> int:
    return 413 if exc.reason == "too_large" else 400


async def _json(request: Request, limit: int) -> Any:
    """The request's JSON body, read as it streams in: ``too_large`` as soon as ``limit`` is passed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("malformed", f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise InvalidInput("too_large", f"body of {declared} bytes > limit {limit} (log_api_max_bytes)")
    buf = bytearray()
    try:
        async for part in request.stream():
            buf += part
            if len(buf) > limit:
                raise InvalidInput("too_large", f"body passed the limit of {limit} bytes (log_api_max_bytes)")
    except ClientDisconnect as exc:
        late = body_timed_out(request.scope)  # the limits middleware answers 408 itself
        if late is not None:
            raise InvalidInput(late, f"the body did not arrive in time ({len(buf)} bytes)") from exc
        raise InvalidInput("malformed", "the client went away before the body ended") from exc
    return loads_json(buf, "malformed")


class _AnythingConvertor(Convertor[str]):
    """A path parameter that matches any characters, newlines included (``path`` stops at one)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _AnythingConvertor())


def _audit(request: Request, grant: Grant | Denied | None, action: str, result: str, **what: Any) -> None:
    """One log line per control request: who (token id), what, and how it ended."""
    who = grant.id if isinstance(grant, Grant) else (grant.token if isinstance(grant, Denied) else None)
    peer = request.client.host if request.client else None
    audit.info("control_audit", action=action, token=who, peer=peer, result=result, **what)


def make_app(cfg: AgentConfig) -> Starlette:
    """The agent's Starlette app; its lifespan starts and stops an :class:`Agent`.

    ``app.state.access`` holds the live tokens; ``app.state.reload(cfg)`` applies a re-read config.
    """
    holder: dict[str, Agent] = {}
    access = Access(
        "agent",
        cfg.tokens,
        ("read", "write", "control"),
        metrics_open_on_localhost=cfg.metrics_open_on_localhost,
        on_denied=lambda d: REJECTS.labels(d.reason).inc(),
    )

    def agent() -> Agent:
        return holder["agent"]

    async def status(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(agent().status))

    async def list_sources(request: Request) -> Response:
        return JSONResponse({"sources": agent().sources()})

    async def add_source(request: Request) -> Response:
        grant = access.decide(request, "control")
        if isinstance(grant, Denied):
            _audit(request, grant, "add_source", "denied", reason=grant.reason)
            return response(grant)
        try:
            raw = await _json(request, cfg.log_api_max_bytes)
            src = SourceConfig.model_validate(raw)
        except InvalidInput as exc:
            _audit(request, grant, "add_source", "refused", reason=exc.reason)
            return _reject(_status(exc), exc.reason, exc.detail)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            _audit(request, grant, "add_source", "refused", reason="bad_source")
            return _reject(400, "bad_source", detail)
        try:
            await asyncio.to_thread(agent().add_source, src)
        except InvalidInput as exc:
            _audit(request, grant, "add_source", "refused", reason=exc.reason, source=src.id, path=src.path)
            return _reject(403 if exc.reason == "outside_allowed_paths" else 400, exc.reason, exc.detail)
        _audit(request, grant, "add_source", "added", source=src.id, path=src.path, data_type=src.data_type)
        return JSONResponse({"id": src.id, **src.model_dump()}, status_code=201)

    async def remove_source(request: Request) -> Response:
        # The id is everything after the prefix, taken from the decoded path itself: Starlette's
        # `{source_id:path}` is matched with `^…$`, which drops a trailing newline, so
        # DELETE /v1/sources/x%0A would otherwise remove source "x".
        path: str = request.scope["path"]
        prefix = "/v1/sources/"
        source_id = path[len(prefix) :] if path.startswith(prefix) else request.path_params["source_id"]
        grant = access.decide(request, "control")
        if isinstance(grant, Denied):
            _audit(request, grant, "remove_source", "denied", reason=grant.reason, source=source_id)
            return response(grant)
        if await asyncio.to_thread(agent().remove_source, source_id):
            _audit(request, grant, "remove_source", "removed", source=source_id)
            return Response(status_code=204)
        _audit(request, grant, "remove_source", "refused", reason="unknown_source", source=source_id)
        return _reject(404, "unknown_source", f"no source with id {source_id!r}; GET /v1/sources lists them")

    async def post_log(request: Request) -> Response:
        try:
            body = await _json(request, cfg.log_api_max_bytes)
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise InvalidInput("malformed", 'expected {"data_type": "...", "records": ["...", ...]}')
            records = body["records"]
            data_type = body.get("data_type")
            tags = body.get("tags") or {}
            if not isinstance(data_type, str) or not all(isinstance(r, str) for r in records):
                raise InvalidInput("malformed", "data_type must be a string and records a list of strings")
            if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
                raise InvalidInput("bad_tags", "tags must map strings to strings")
            n = await asyncio.to_thread(agent().log_records, data_type, records, tags)
        except InvalidInput as exc:
            return _reject(_status(exc), exc.reason, exc.detail)
        except SpoolFull as exc:
            reason = "disk_full" if isinstance(exc, SpoolDiskFull) else "spool_full"
            REJECTS.labels(reason).inc()
            if reason == "disk_full":
                log.error("log_api_refused", reason=reason, detail=str(exc))
            resp = error_response(503, reason, str(exc))
            resp.headers["Retry-After"] = "1"
            return resp
        except OSError as exc:  # the spool's fsync or the checkpoint failed: not known to be durable, not acked
            reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "spool_error"
            REJECTS.labels(reason).inc()
            log.error("log_api_refused", reason=reason, detail=repr(exc))
            resp = error_response(503, reason, f"could not make the records durable: {exc}")
            resp.headers["Retry-After"] = "1"
            return resp
        return JSONResponse({"accepted": n})

    def health() -> dict[str, Any]:
        a = holder.get("agent")
        if a is None:
            return {"ok": False, "detail": "starting"}
        return a.health()

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        a = await asyncio.to_thread(Agent, cfg)
        a.start()
        holder["agent"] = a
        try:
            yield
        finally:
            await asyncio.to_thread(a.stop)

    routes = [
        Route("/v1/status", guarded(access, "read", status)),
        Route("/v1/sources", guarded(access, "read", list_sources), methods=["GET"]),
        Route("/v1/sources", add_source, methods=["POST"]),
        Route("/v1/sources/{source_id:anything}", remove_source, methods=["DELETE"]),
        Route("/v1/log", guarded(access, "write", post_log), methods=["POST"]),
        *standard_routes(health, access, "agent"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)

    def reload(new: AgentConfig) -> None:
        access.update(new.tokens, metrics_open_on_localhost=new.metrics_open_on_localhost)
        a = holder.get("agent")
        if a is not None:
            a.reload(new)

    app.state.access = access
    app.state.reload = reload
    return app
