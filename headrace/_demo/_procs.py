"""Daemon processes of the demo: started with their output in a file, waited for, stopped cleanly."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ..errors import FatalError

__all__ = ["Proc", "free_port", "wait_for"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``predicate()`` is true; :class:`FatalError` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise FatalError(f"timed out after {timeout:.0f} s waiting for {what}")


class Proc:
    """``python -m headrace ARGS`` in ``workdir``, its stdout and stderr in ``workdir/NAME.log``."""

    def __init__(self, name: str, args: list[str], workdir: Path, *, detach: bool = False) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "headrace", *args, "--log-format", "json"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=detach,  # detached: outlives the demo (``--keep``)
            )

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        """Return once ``url`` answers at all (a 503 while a part warms up counts: it is serving)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FatalError(f"{self.name} exited with status {self.proc.returncode}; see {self.log}")
            try:
                httpx.get(url, timeout=2.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise FatalError(f"{self.name} did not answer {url} within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM (the daemon finishes in-flight work and saves its state), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
