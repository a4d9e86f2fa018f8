"""Running a real relay process against a database, and collecting what a subscriber receives."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import Daemon, free_port, write_config

from headrace.relay.client import FileCheckpointStore, Subscriber, Window


def start_relay(
    daemons: Callable[..., Daemon], tmp_path: Path, source: str, name: str = "relay", **relay: Any
) -> tuple[Daemon, str]:
    """Write a config and start ``headrace relay``; returns the daemon and its base URL (healthy)."""
    port = free_port()
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "source": source,
        "state_dir": str(tmp_path / f"{name}-state"),
        **relay,
    }
    path = write_config(tmp_path / f"{name}.yaml", {"relay": cfg})
    d = daemons(["relay", "--config", str(path)], name).start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz", timeout=30)
    return d, url


def restart_relay(d: Daemon, url: str) -> None:
    d.start()
    d.wait_http(url + "/healthz", timeout=30)


def collect(
    url: str,
    sources: list[str],
    until_events: int,
    timeout: float,
    checkpoint: Path | None = None,
    on_window: Callable[[Window], None] | None = None,
) -> list[Window]:
    """Windows from ``url`` until ``until_events`` events arrived (fails after ``timeout`` seconds)."""
    sub = Subscriber(
        [url],
        sources,
        FileCheckpointStore(checkpoint) if checkpoint else None,
        wait_ms=500,
        max_bytes=4 << 20,
        backoff_max=0.5,
    )
    out: list[Window] = []
    n = 0
    deadline = time.monotonic() + timeout
    try:
        for w in sub.windows(idle_exit=timeout):
            out.append(w)
            n += len(w.events)
            if on_window is not None:
                on_window(w)
            if n >= until_events:
                break
            if time.monotonic() > deadline:
                break
    finally:
        sub.close()
    if n < until_events:
        import httpx

        try:
            capture = httpx.get(url + "/v1/status", timeout=5).json().get("capture")
        except Exception as exc:  # the relay may be down: say so
            capture = repr(exc)
        raise AssertionError(f"only {n} of {until_events} events arrived in {timeout}s; relay capture: {capture}")
    return out


def events_of(windows: list[Window]) -> list[tuple[str, str, list[Any], Any, Any]]:
    from sources_workload import norm_row

    return [(e.table, e.op.value, e.key, norm_row(e.before), norm_row(e.after)) for w in windows for e in w.events]
