"""Helpers for relay tests: start a relay on a SQLite file, collect windows with the client library."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from support import Daemon, free_port, write_config

from headrace.relay.client import Subscriber, Window

HERE = Path(__file__).parent


def relay_config(tmp: Path, db: Path, port: int, **extra: Any) -> Path:
    section: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "source": f"sqlite:///{db}",
        "state_dir": str(tmp / "relay-state"),
        "sqlite": {"poll_ms": 10},
    }
    section.update(extra)
    return write_config(tmp / f"relay-{port}.yaml", {"relay": section})


def start_relay(daemons: Any, tmp: Path, db: Path, port: int | None = None, **extra: Any) -> tuple[Daemon, str]:
    port = port or free_port()
    cfg = relay_config(tmp, db, port, **extra)
    d = daemons(["relay", "--config", str(cfg)], f"relay-{port}").start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz")
    return d, url


def write_workload(db: Path, seed: int, start: int, count: int, sleep_ms: float = 0) -> subprocess.Popen[bytes]:
    """Apply workload transactions from another process (as an application would)."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "relay_workload.py"), str(db), str(seed), str(start), str(count), str(sleep_ms)]
    )


def collect(sub: Subscriber, n_events: int, timeout: float) -> list[Window]:
    """Windows from ``sub`` until ``n_events`` events arrived (fails after ``timeout`` seconds)."""
    out: list[Window] = []
    got = 0
    deadline = time.monotonic() + timeout
    for w in sub.windows(idle_exit=timeout):
        out.append(w)
        got += len(w.events)
        if got >= n_events:
            break
        if time.monotonic() > deadline:
            break
    assert got >= n_events, f"only {got} of {n_events} events arrived within {timeout}s"
    return out


def status(url: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/v1/status", params=params, timeout=5).json()
    return body
