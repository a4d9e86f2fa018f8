"""HTTP plumbing shared by every daemon: health, metrics, errors, and running uvicorn (auth: ``_access``).

Each daemon is a Starlette app whose lifespan starts and stops its background work; uvicorn turns
SIGTERM/SIGINT into a graceful shutdown (in-flight requests finish, then the lifespan's shutdown
half runs, which is where checkpoints are saved), after which :func:`run_app` returns normally.
"""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._config import parse_listen
from ._limits import BodyLimits, HttpLimits, raise_fd_limit, uvicorn_options
from ._reload import install_sighup
from ._supervise import exit_requested
from .errors import FatalError, InvalidInput, ListenError

if TYPE_CHECKING:
    from ._access import Access
    from ._tls import ServerTLS

__all__ = ["error_response", "int_param", "run_app", "standard_routes"]


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


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def standard_routes(
    health: Callable[[], dict[str, Any]] | None = None, access: Access | None = None
) -> list[BaseRoute]:
    """``GET /healthz`` (200 with ``{"ok": true, …}``, or 503 when ``health`` says not ok) and ``/metrics``.

    ``/healthz`` is always open (keep what ``health`` returns free of data and paths); ``/metrics``
    needs the ``read`` scope of ``access`` when tokens are configured (see :mod:`headrace._access`).
    """

    async def metrics(request: Request) -> Response:
        if access is not None and (denied := access.check(request, "read", metrics=True)) is not None:
            return denied
        return await _metrics(request)

    async def healthz(_: Request) -> JSONResponse:
        body: dict[str, Any] = {"ok": True}
        if health is not None:
            body.update(health())
        return JSONResponse(body, status_code=200 if body.get("ok") else 503)

    return [Route("/healthz", healthz), Route("/metrics", metrics)]


class _StartupError:
    """ASGI wrapper that keeps the exception a lifespan's startup raised (uvicorn only logs it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: BaseException | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)  # type: ignore[no-any-return]
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            self.error = exc
            raise
        return None

    def __getattr__(self, name: str) -> Any:  # app.state and friends stay reachable
        return getattr(self.app, name)


def bind_listen(listen: str, key: str) -> socket.socket:
    """A socket bound to ``listen`` (``host:port``), or :class:`~headrace.errors.ListenError` naming
    ``key``, the config key it came from. Bound before a daemon starts its work, so a port in use
    stops it before it installs or writes anything."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = {
            errno.EADDRINUSE: "the port is in use (another headrace daemon, or another program?)",
            errno.EADDRNOTAVAIL: "the address is not one of this host's",
            errno.EACCES: "ports below 1024 need privileges; use a higher port",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {listen} ({key}): {why}") from None
    sock.set_inheritable(True)
    return sock


def run_app(
    app: Starlette,
    listen: str,
    *,
    graceful_seconds: float = 30.0,
    tls: ServerTLS | None = None,
    limits: HttpLimits | None = None,
    listen_key: str = "listen",
    sock: socket.socket | None = None,
) -> None:
    """Serve ``app`` on ``listen`` (``host:port``) until SIGTERM or SIGINT, then shut down cleanly.

    With ``tls`` it serves HTTPS only (see :mod:`headrace._tls`; SIGHUP re-reads the certificate).
    ``limits`` (the daemon's ``limits:`` section; defaults without it) bounds slow headers, slow
    bodies and open connections: see :mod:`headrace._limits`.
    The socket is bound before the app's lifespan starts its work (uvicorn would bind after it), so a
    port in use is a :class:`~headrace.errors.ListenError` (exit 6) and nothing was started; pass a
    ``sock`` from :func:`bind_listen` to bind even earlier.
    """
    from ._tls import server_options

    sock = sock or bind_listen(listen, listen_key)
    host, port = parse_listen(listen)
    limits = limits or HttpLimits()
    raise_fd_limit(limits.max_connections + 64)
    startup = _StartupError(app)
    config = uvicorn.Config(
        BodyLimits(startup, limits),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_seconds),
        server_header=False,
        **server_options(tls),
        **uvicorn_options(limits),
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the captured signal after shutting down; with these no-op handlers that
    # re-raise does nothing and the process exits 0 after a clean shutdown.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    install_sighup()
    try:
        server.run(sockets=[sock])
    except SystemExit:
        # uvicorn exits 3 when the lifespan's startup raised: raise what it raised instead, so the
        # command ends with that error's one-line message and exit status (a FatalError: 1)
        if startup.error is not None:
            raise startup.error from None
        raise
    reason = exit_requested()
    if reason is not None:  # a background worker gave up: exit non-zero so the service manager restarts us
        raise FatalError(f"stopped because a background worker died: {reason}")
    if not server.started:
        raise FatalError(f"could not start the HTTP server on {listen} ({listen_key}); see the log above")
