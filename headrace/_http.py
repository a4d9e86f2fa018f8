"""HTTP plumbing shared by every daemon: health, metrics, errors, bearer auth, and running uvicorn.

Each daemon is a Starlette app whose lifespan starts and stops its background work; uvicorn turns
SIGTERM/SIGINT into a graceful shutdown (in-flight requests finish, then the lifespan's shutdown
half runs, which is where checkpoints are saved), after which :func:`run_app` returns normally.
"""

from __future__ import annotations

import hmac
import signal
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._config import parse_listen
from ._reload import install_sighup
from ._supervise import exit_requested
from .errors import FatalError, InvalidInput

__all__ = ["bearer_ok", "error_response", "int_param", "run_app", "standard_routes"]


def error_response(status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    """A JSON error body every client can parse: ``{"error": reason, "detail": …, **extra}``."""
    return JSONResponse({"error": reason, "detail": detail, **extra}, status_code=status)


def int_param(params: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """Query parameter ``name`` as an int in ``[lo, hi]`` (``default`` when absent); else :class:`InvalidInput`."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"bad_{name}", f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"bad_{name}", f"{name}={value} is out of range [{lo}, {hi}]")
    return value


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
    """Serve ``app`` on ``listen`` (``host:port``) until SIGTERM or SIGINT, then shut down cleanly.

    Raises :class:`~headrace.errors.FatalError` (exit 1) after the shutdown when it was caused by
    :func:`headrace._supervise.request_exit` (a background worker that could not be kept running).
    """
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
    reason = exit_requested()
    if reason is not None:  # a background worker gave up: exit non-zero so the service manager restarts us
        raise FatalError(f"stopped because a background worker died: {reason}")
    if not server.started:
        raise SystemExit(f"could not start the HTTP server on {listen} (is the port in use?)")
