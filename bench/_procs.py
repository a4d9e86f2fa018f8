"""Process helpers every benchmark script shares: a free port, a ``headrace`` daemon as a child process
that dies with the script, waiting for its HTTP endpoint, stopping it, and a process's CPU time."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM when the benchmark dies (a harness timeout kills only it)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_headrace(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m headrace ARGS`` with JSON logs at warning level into ``log``; it dies with the script."""
    return subprocess.Popen(
        [sys.executable, "-m", "headrace", *args, "--log-format", "json", "--log-level", "warning"],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
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


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_until_healthy(
    args: list[str], log: Path, port: int, timeout: float = 30
) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m headrace ARGS`` (its default logging into ``log``; it dies with the script) and its
    URL once ``/healthz`` on ``port`` answers 200; exits the script with the log if it dies first,
    or when it does not come up within ``timeout`` seconds."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headrace", *args], stdout=out, stderr=out, preexec_fn=die_with_parent
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(log.read_text())
        time.sleep(0.05)
    raise SystemExit(f"headrace {args[0]} did not start (see {log})")
