"""``headrace up``'s status server: the status page of the whole and the ``/v1/overview`` it polls.

A small threaded HTTP server (standard library) beside the supervisor, so it keeps answering while
parts die and restart — which is when it is needed. Routes:

* ``GET /`` — the status page (:mod:`headrace._status_page`) in ``up`` mode; holds no data, open;
* ``GET /v1/overview`` — ``{"parts": [...], "supervisor": {...}, "problems": [...], "at": …}``: each
  part's ``/healthz`` and ``/v1/status`` as :func:`headrace._overview.probe` gives them (asked with
  the part's own ``read`` token), and the supervisor's view of each child (state, pid, restarts,
  last exit status). Answers from a cache at most half a second old, so many open pages cost the
  parts one probe a second between them. Needs a ``read`` token of any part when parts have tokens;
* ``GET /healthz`` — 200 ``{"ok": true}`` when every part answers and is healthy, else 503 with the
  problems (the parts' own ``/healthz`` texts, which carry no data or paths). Open.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._access import AccessPolicy, Denied, Grant, is_loopback
from ._config import parse_listen
from ._http import bind_listen
from ._logging import get_logger
from ._overview import Target, batch_runs, overview, problems
from ._status_page import PAGE_HEADERS, page_html

__all__ = ["StatusServer"]

log = get_logger("up.status")


class StatusServer:
    """Serves the page and ``/v1/overview`` on ``listen`` from a thread; bound when constructed."""

    def __init__(
        self,
        listen: str,
        targets: Sequence[Target],
        grants: Sequence[Grant] = (),
        *,
        key: str = "--status-listen",
        cache_seconds: float = 0.5,
        batch: Mapping[str, Any] | None = None,
    ) -> None:
        self.listen = listen
        self.targets = list(targets)
        #: the config's batch job sections: their last run records are parts of the overview too
        self.batch = dict(batch or {})
        self.policy = AccessPolicy("up (any part's read token)", grants)
        self.supervisor: Callable[[], dict[str, Any]] = dict
        self.cache_seconds = cache_seconds
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._page = page_html("up").encode()
        sock = bind_listen(listen, key)
        server = ThreadingHTTPServer(sock.getsockname()[:2], _handler(self), bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_activate()
        server.daemon_threads = True
        self.server = server
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = parse_listen(self.listen)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}/" if ":" not in host else f"http://[{host}]:{port}/"

    def start(self) -> None:
        """Serve in a daemon thread."""
        self.thread = threading.Thread(target=self.server.serve_forever, name="up-status", daemon=True)
        self.thread.start()
        log.info("status_page", url=self.url)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()

    def overview(self) -> dict[str, Any]:
        """The ``/v1/overview`` document (cached for ``cache_seconds``)."""
        with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] < self.cache_seconds:
                return self._cache[1]
            parts = overview(self.targets, timeout=1.5)
            for p in parts:
                p["kind"] = p["name"]
            parts += batch_runs(self.batch)
            doc = {"parts": parts, "supervisor": self.supervisor(), "problems": problems(parts), "at": time.time()}
            self._cache = (time.monotonic(), doc)
            return doc


def _handler(owner: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "headrace-up"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are not logged: a page polls every second

        def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            self._send(code, json.dumps(doc, default=str).encode(), "application/json", headers)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, owner._page, "text/html; charset=utf-8", PAGE_HEADERS)
            elif path == "/healthz":
                doc = owner.overview()
                ok = not doc["problems"]
                self._json(200 if ok else 503, {"ok": ok, "problems": doc["problems"]})
            elif path == "/v1/overview":
                peer = self.client_address[0] if self.client_address else None
                out = owner.policy.decide(self.headers.get("Authorization"), "read", peer=peer)
                if isinstance(out, Denied):
                    extra = {"WWW-Authenticate": 'Bearer realm="headrace"'} if out.status == 401 else None
                    self._json(out.status, {"error": out.reason, "detail": out.detail}, extra)
                    return
                self._json(200, owner.overview())
            else:
                self._json(404, {"error": "not_found", "detail": "routes: /, /v1/overview, /healthz"})

    return Handler


def insecure(listen: str, grants: Sequence[Grant]) -> str | None:
    """Why ``listen`` must not serve the overview: reachable from other hosts while no part has tokens."""
    host, _ = parse_listen(listen)
    if grants or is_loopback(host):
        return None
    return (
        f"--status-listen {listen} is reachable from other hosts and no part has tokens, so anyone there could "
        "read every part's status: listen on 127.0.0.1, or configure tokens"
    )
