"""HTTP plumbing shared by every daemon: health, metrics, errors, and running uvicorn (auth: ``_access``).

Each daemon is a Starlette app whose lifespan starts and stops its background work; uvicorn turns
SIGTERM/SIGINT into a graceful shutdown (in-flight requests finish, then the lifespan's shutdown
half runs, which is where checkpoints are saved), after which :func:`run_app` returns normally.
"""

from __future__ import annotations

import errno
import json
import re
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._config import parse_listen
from ._limits import BodyLimits, HttpLimits, raise_fd_limit, uvicorn_options
from ._quiet_server import QuietServer
from ._reload import install_sighup
from ._supervise import exit_requested
from .errors import FatalError, InvalidInput, ListenError

if TYPE_CHECKING:
    from prometheus_client import Counter

    from ._access import Access, Scope, TokenSection
    from ._tls import ServerTLS

__all__ = [
    "Reject",
    "error_response",
    "guarded",
    "int_param",
    "loads_json",
    "read_json",
    "read_only_access",
    "rejecter",
    "run_app",
    "standard_routes",
]


_INT_RE = re.compile(r"-?[0-9]+")


def error_response(status: int, reason: str, detail: str, **extra: Any) -> JSONResponse:
    """A JSON error body every client can parse: ``{"error": reason, "detail": …, **extra}``."""
    return JSONResponse({"error": reason, "detail": detail, **extra}, status_code=status)


class Reject(Protocol):
    """Answers a refused request: ``reject(status, reason, detail, **extra)`` (see :func:`rejecter`)."""

    def __call__(
        self, status: int, reason: str, detail: str, *, log_fields: dict[str, Any] | None = None, **extra: Any
    ) -> JSONResponse: ...


def rejecter(counter: Counter, logger: Any, *, event: str = "request_rejected", level: str = "info") -> Reject:
    """A daemon's one way to refuse a request: count it in ``counter`` by reason, log ``event`` (at
    ``level``, with ``log_fields`` added) and answer :func:`error_response` (``extra`` goes in the body)."""

    def reject(
        status: int, reason: str, detail: str, *, log_fields: dict[str, Any] | None = None, **extra: Any
    ) -> JSONResponse:
        counter.labels(reason).inc()
        getattr(logger, level)(event, status=status, reason=reason, detail=detail, **(log_fields or {}))
        return error_response(status, reason, detail, **extra)

    return reject


Handler = Callable[[Request], Awaitable[Response]]


def guarded(access: Access, scope: Scope, handler: Handler) -> Handler:
    """``handler`` behind ``access``: a request without a token of ``scope`` gets the 401/403 instead."""

    async def checked(request: Request) -> Response:
        if (denied := access.check(request, scope)) is not None:
            return denied
        return await handler(request)

    return checked


def read_only_access(section: str, cfg: TokenSection, rejects: Counter) -> tuple[Access, Callable[[Handler], Handler]]:
    """For a daemon whose routes only read (the relay, the bootstrap server): its :class:`Access` for
    ``cfg``'s tokens (scope ``read``; refusals counted in ``rejects`` by reason) and the wrapper that
    puts a route behind it."""
    from ._access import Access

    access = Access(
        section,
        cfg.tokens,
        ("read",),
        metrics_open_on_localhost=cfg.metrics_open_on_localhost,
        on_denied=lambda d: rejects.labels(d.reason).inc(),
    )

    def read(handler: Handler) -> Handler:
        return guarded(access, "read", handler)

    return access, read


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


async def _metrics(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def standard_routes(
    health: Callable[[], dict[str, Any]] | None = None, access: Access | None = None, part: str | None = None
) -> list[BaseRoute]:
    """``GET /healthz`` (200 with ``{"ok": true, …}``, or 503 when ``health`` says not ok), ``/metrics``
    and ``GET /``, the status page (:mod:`headrace._status_page`; ``part`` names the daemon).

    ``/healthz`` is always open (keep what ``health`` returns free of data and paths); ``/metrics``
    needs the ``read`` scope of ``access`` when tokens are configured (see :mod:`headrace._access`).
    The page holds no data and is open; the ``/v1/status`` it polls needs the ``read`` scope.
    """
    from ._status_page import page_route

    async def metrics(request: Request) -> Response:
        if access is not None and (denied := access.check(request, "read", metrics=True)) is not None:
            return denied
        return await _metrics(request)

    async def healthz(_: Request) -> JSONResponse:
        body: dict[str, Any] = {"ok": True}
        if health is not None:
            body.update(health())
        return JSONResponse(body, status_code=200 if body.get("ok") else 503)

    return [Route("/healthz", healthz), Route("/metrics", metrics), page_route(part)]


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
    server = QuietServer(config)  # no 10-per-second tick while idle
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
