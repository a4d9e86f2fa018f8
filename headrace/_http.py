"""HTTP plumbing shared by every daemon: health, metrics, errors, bearer auth, and running uvicorn.

Each daemon is a Starlette app whose lifespan starts and stops its background work; uvicorn turns
SIGTERM/SIGINT into a graceful shutdown (in-flight requests finish, then the lifespan's shutdown
half runs, which is where checkpoints are saved), after which :func:`run_app` returns normally.
"""

from __future__ import annotations

import hmac
import json
import re
import signal
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._config import parse_listen
from ._reload import install_sighup
from .errors import InvalidInput

__all__ = ["bearer_ok", "error_response", "int_param", "loads_json", "read_json", "run_app", "standard_routes"]


_INT_RE = re.compile(r"-?[0-9]+")


def error_response(status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    """A JSON error body every client can parse: ``{"error": reason, "detail": …, **extra}``."""
    return JSONResponse({"error": reason, "detail": detail, **extra}, status_code=status)


def int_param(params: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """Query parameter ``name`` as an int in ``[lo, hi]`` (``default`` when absent); else :class:`InvalidInput`."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take " 5", "1_000" and non-ASCII digits ("١٢")
    if len(raw) > 40 or not _INT_RE.fullmatch(raw):
        raise InvalidInput(f"bad_{name}", f"{name}={raw[:60]!r} is not an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidInput(f"bad_{name}", f"{name}={value} is out of range [{lo}, {hi}]")
    return value


def loads_json(data: bytes | bytearray, reason: str) -> Any:
    """``data`` parsed as JSON, or :class:`InvalidInput` ``reason`` for anything that is not.

    Catches what ``json.loads`` raises beyond ``ValueError``: ``RecursionError`` for nesting past
    the interpreter's limit (``[[[[…``), which would otherwise be a 500.
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(reason, f"body is not JSON: {str(exc)[:200]}") from None


async def read_json(request: Request, limit: int, reason: str = "bad_body") -> Any:
    """The request's JSON body, read as it streams in and refused (``too_large``) past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput(reason, f"Content-Length {declared[:40]!r} is not a byte count")
        if int(declared) > limit:
            raise InvalidInput("too_large", f"body of {declared} bytes > limit {limit}")
    buf = bytearray()
    try:
        async for part in request.stream():
            buf += part
            if len(buf) > limit:
                raise InvalidInput("too_large", f"body passed the limit of {limit} bytes")
    except ClientDisconnect as exc:
        raise InvalidInput(reason, "the client went away before the body ended") from exc
    return loads_json(buf, reason)


def bearer_ok(request: Request, tokens: Sequence[str]) -> bool:
    """True if no tokens are configured or the request carries one of them as a bearer token."""
    if not tokens:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return any(hmac.compare_digest(token.strip(), t) for t in tokens)


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def standard_routes(health: Callable[[], dict[str, Any]] | None = None) -> list[BaseRoute]:
    """``GET /healthz`` (200 with ``{"ok": true, …}``, or 503 when ``health`` says not ok) and ``/metrics``."""

    async def healthz(_: Request) -> JSONResponse:
        body: dict[str, Any] = {"ok": True}
        if health is not None:
            body.update(health())
        return JSONResponse(body, status_code=200 if body.get("ok") else 503)

    return [Route("/healthz", healthz), Route("/metrics", _metrics)]


def run_app(app: Starlette, listen: str, *, graceful_seconds: float = 30.0) -> None:
    """Serve ``app`` on ``listen`` (``host:port``) until SIGTERM or SIGINT, then shut down cleanly."""
    host, port = parse_listen(listen)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_seconds),
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the captured signal after shutting down; with these no-op handlers that
    # re-raise does nothing and the process exits 0 after a clean shutdown.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    install_sighup()
    server.run()
    if not server.started:
        raise SystemExit(f"could not start the HTTP server on {listen} (is the port in use?)")
