"""SIGHUP reload: parts of a running daemon (tokens, TLS certificates) register a callback here.

``run_app`` installs the SIGHUP handler; a handler runs every registered callback in order and
logs (never raises) a callback's failure, so a bad new certificate or config leaves the daemon
serving with what it had. Callbacks run on the main thread, between event-loop steps: keep them
short (re-read a file, swap a reference).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from ._logging import get_logger

__all__ = ["install_sighup", "on_reload", "reload_now"]

log = get_logger("headrace.reload")
_callbacks: list[tuple[str, Callable[[], None]]] = []


def on_reload(what: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` on every SIGHUP; ``what`` names it in the log (``"tokens"``, ``"tls"``)."""
    _callbacks.append((what, callback))


def reload_now() -> dict[str, str]:
    """Run every callback; return ``{what: "ok" | error text}`` (also logged)."""
    out: dict[str, str] = {}
    for what, cb in list(_callbacks):
        try:
            cb()
        except Exception as exc:  # a bad reload keeps the old settings; say why
            out[what] = f"{type(exc).__name__}: {exc}"
            log.error("reload_failed", what=what, error=out[what])
        else:
            out[what] = "ok"
            log.info("reloaded", what=what)
    return out


def install_sighup() -> None:
    """Make SIGHUP call :func:`reload_now` (main thread only; a no-op where SIGHUP does not exist)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _handle)


def _handle(_signum: int, _frame: Any) -> None:
    reload_now()
