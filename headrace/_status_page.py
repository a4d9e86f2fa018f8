"""The status page: one self-contained HTML file (inline CSS and JS, no CDN, no build step).

Served at ``GET /`` by every daemon (see :func:`headrace._http.standard_routes`) and by ``headrace
up``'s status server. The page itself holds no data, so it is served without a token; the browser
then polls ``/v1/status`` and ``/healthz`` (a daemon) or ``/v1/overview`` (``up``) every second,
and those need the ``read`` scope when tokens are configured: the page asks for a token (kept in the
browser tab's ``sessionStorage``), or takes one from the address's fragment, ``/#token=…``, which
browsers never send to the server.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

__all__ = ["page_html", "page_route"]

_SLOT_START, _SLOT_END = "/*HEADRACE_PAGE*/", "/*END*/"


@functools.cache
def _template() -> str:
    return resources.files("headrace").joinpath("_status_page.html").read_text(encoding="utf-8")


def page_html(mode: str = "single", part: str | None = None) -> str:
    """The page for ``mode`` ``"single"`` (a daemon; ``part`` names it) or ``"up"`` (the whole)."""
    text = _template()
    start = text.index(_SLOT_START) + len(_SLOT_START)
    end = text.index(_SLOT_END, start)
    settings = json.dumps({"mode": mode, "part": part}).replace("<", "\\u003c")
    return text[:start] + settings + text[end:]


#: headers that keep the page from being framed or sniffed, and scripts to this page only
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def page_route(part: str | None) -> Route:
    """``GET /``: the status page of one daemon (``part``: collector, agent, relay, bootstrap)."""
    html = page_html("single", part)

    async def index(_: Request) -> HTMLResponse:
        return HTMLResponse(html, headers=PAGE_HEADERS)

    return Route("/", index, methods=["GET"])
