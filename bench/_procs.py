"""Process helpers the benchmark scripts share: a free port, a ``headrace`` daemon started as a child
process, waiting for its HTTP endpoint, and a process's CPU time (Linux ``/proc``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m headrace ARGS`` with JSON logs at warning level into ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "headrace", *args, "--log-format", "json", "--log-level", "warning"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def wait_http(url: str, timeout: float = 30) -> None:
    """Return once ``url`` answers 200; exit the script when it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``), to compare runs on a busy machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
