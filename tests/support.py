"""Helpers for tests that run real headrace processes over real sockets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# Ports handed out below the kernel's ephemeral range (32768+ here), so an outgoing connection's
# source port never takes one between the test picking it and the daemon binding it; each xdist
# worker draws from its own slice and never hands out the same port twice, so two daemons of one
# test (or of two workers) cannot be given the same port.
_PORT_LO, _PORT_SPAN = 20_000, 12_000
_next_port: list[int] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1, free when picked, never handed out before in this test run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    span = _PORT_SPAN // workers
    lo = _PORT_LO + (index % workers) * span
    if not _next_port:
        _next_port.append(lo + (os.getpid() % 64) * 16 % span)
    for _ in range(span):
        port = lo + (_next_port[0] - lo) % span
        _next_port[0] = port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {lo}..{lo + span - 1}")


def require_binaries(*names: str, why: str) -> None:
    """Skip (or, under CI=true, fail) when a server binary a test needs is not installed."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        msg = f"{why}: {', '.join(missing)} not found on PATH"
        if IN_CI:
            pytest.fail(f"CI=true and a database test cannot run: {msg}")
        pytest.skip(msg)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the condition may not be checkable yet (server starting)
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})")


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


class Daemon:
    """A ``headrace`` subprocess with its output captured to files, killable with SIGKILL."""

    def __init__(self, args: Sequence[str], workdir: Path, name: str, env: dict[str, str] | None = None):
        self.args = list(args)
        self.workdir = workdir
        self.name = name
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.starts}.log"

    def start(self) -> Daemon:
        self.starts += 1
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "headrace", *self.args, "--log-format", "json"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=self.env,
        )
        log.close()
        return self

    def wait_http(self, url: str, timeout: float = 20.0) -> None:
        def ok() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.output()}")
            return httpx.get(url, timeout=1.0).status_code == 200

        try:
            wait_until(ok, timeout, f"{self.name} to answer {url}")
        except AssertionError:
            raise AssertionError(f"{self.name} not healthy:\n{self.output()}") from None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s:\n{self.output()}") from None
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def daemons(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory for :class:`Daemon` objects; every one still running is killed at the end of the test."""
    started: list[Daemon] = []

    def make(args: Sequence[str], name: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(args, tmp_path, name, env)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill9()


BATCH_JOB_PACKAGES = ("pyarrow", "sqlalchemy", "psycopg2")  # each has compiled modules, so shows in maps


def mapped_packages(pid: int, packages: tuple[str, ...] = BATCH_JOB_PACKAGES) -> list[str]:
    """Which of ``packages`` process ``pid`` has loaded (their shared objects are mapped: Linux /proc)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted(p for p in packages if f"/{p}/" in maps)


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of process ``pid`` since it started, in MiB (``VmHWM``, Linux /proc)."""
    return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
