"""Keeping a small daemon small: extras that libraries load only because they happen to be installed.

Several libraries the agent needs import optional packages at import time when they are present:
structlog loads rich (and with it pygments and attrs) for pretty tracebacks, tenacity loads tornado,
uvicorn loads watchfiles (and anyio) for ``--reload`` and a2wsgi for WSGI apps, httpcore loads h2,
trio and socksio. The agent runs on every host and uses none of them (it logs JSON or plain text
and speaks HTTP/1.1), yet they were about 7 MiB of its resident memory. :func:`skip_optional_imports`
marks them as not importable in this process (``sys.modules[name] = None``: an ``import`` raises
:class:`ImportError`, which each of those libraries handles by going without), so it must run
before the libraries are imported. Only the ``headrace agent`` command calls it.
"""

from __future__ import annotations

import sys

__all__ = ["OPTIONAL", "skip_optional_imports"]

#: package → what loads it and what the agent would have used it for (nothing)
OPTIONAL: dict[str, str] = {
    "rich": "structlog's pretty tracebacks (and rich.pretty → attrs)",
    "pygments": "rich's syntax highlighting of tracebacks",
    "better_exceptions": "structlog's pretty tracebacks",
    "colorama": "structlog's and tornado's colours on Windows",
    "tornado": "tenacity's Tornado integration",
    "twisted": "structlog's Twisted integration",
    "greenlet": "structlog's greenlet-local context",
    "watchfiles": "uvicorn's --reload (and anyio with it)",
    "a2wsgi": "uvicorn's WSGI adapter",
    "h2": "httpcore's HTTP/2 (httpx is used without http2)",
    "trio": "httpcore's trio backend",
    "socksio": "httpcore's SOCKS proxies",
}


def skip_optional_imports() -> None:
    """Make the :data:`OPTIONAL` packages not importable in this process (call before importing the
    libraries; a package already imported is left alone)."""
    for name in OPTIONAL:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
