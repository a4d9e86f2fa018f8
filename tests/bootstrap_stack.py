"""Running a relay, a bootstrap server, writers and ``headrace subscribe`` processes for bootstrap tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import httpx
from support import free_port, wait_until, write_config

HERE = Path(__file__).parent


class Stack:
    """A SQLite source with a relay and a bootstrap server on free ports, under ``tmp``."""

    def __init__(
        self,
        tmp: Path,
        daemons: Any,
        rows: int,
        relay: dict[str, Any] | None = None,
        bootstrap: dict[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp
        self.db = tmp / "src.db"
        wl.create(self.db, rows)
        self.relay_url = f"http://127.0.0.1:{free_port()}"
        self.boot_url = f"http://127.0.0.1:{free_port()}"
        self.config = write_config(
            tmp / "headrace.yaml",
            {
                "relay": {
                    "listen": self.relay_url.removeprefix("http://"),
                    "source": f"sqlite:///{self.db}",
                    "state_dir": str(tmp / "relay"),
                    "durable_consumers": ["bootstrap"],
                    "buffer_bytes": 8 << 20,
                    "sqlite": {"retention_seconds": None, "prune_interval_seconds": 0.5},
                    **(relay or {}),
                },
                "bootstrap": {
                    "listen": self.boot_url.removeprefix("http://"),
                    "relays": [self.relay_url],
                    "store": f"sqlite:///{tmp / 'boot.db'}",
                    "seed": f"sqlite:///{self.db}",
                    "compact_interval_seconds": 0.5,
                    "retention_seconds": 0,
                    "session_timeout_seconds": 5,
                    **(bootstrap or {}),
                },
            },
        )
        self.relay = daemons(["relay", "--config", str(self.config)], "relay")
        self.boot = daemons(["bootstrap", "--config", str(self.config)], "bootstrap")
        self.writers: list[subprocess.Popen[bytes]] = []
        self.subs: list[Sub] = []  # killed by kill_all too, so a failed test leaves no subscriber running
        self.stop_file = tmp / "stop-writers"

    def start_relay(self) -> None:
        self.relay.start()
        self.relay.wait_http(self.relay_url + "/healthz")

    def start_bootstrap(self) -> None:
        self.boot.start()
        self.boot.wait_http(self.boot_url + "/healthz")

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.boot_url + "/v1/status", timeout=10).json()
        return body

    def status_auth(self, headers: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.boot_url + "/v1/status", headers=headers, timeout=10).json()
        return body

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(lambda: self.status()["snapshot_ready"], timeout, "the bootstrap snapshot to be ready", 0.3)

    def start_writers(self, n: int = 1, sleep_ms: int = 5) -> None:
        for i in range(n):
            self.writers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "bootstrap_workload.py"),
                        str(self.db),
                        str(100 + i),
                        str(self.stop_file),
                        str(sleep_ms),
                    ],
                    stdout=subprocess.PIPE,
                )
            )

    def stop_writers(self) -> int:
        self.stop_file.touch()
        total = 0
        for w in self.writers:
            out, _ = w.communicate(timeout=60)
            assert w.returncode == 0
            total += int(out)
        self.writers = []
        return total

    def kill_all(self) -> None:
        for w in self.writers:
            w.kill()
        for sub in self.subs:
            if sub.proc is not None and sub.proc.poll() is None:
                sub.proc.kill()
                sub.proc.wait()


class Sub:
    """A ``headrace subscribe`` process; each run writes its own stdout file."""

    def __init__(self, stack: Stack, name: str, *extra: str) -> None:
        self.stack = stack
        self.name = name
        self.checkpoint = stack.tmp / f"{name}.checkpoint.json"
        self.extra = list(extra)
        self.runs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        stack.subs.append(self)

    def start(self, idle_exit: float = 10.0) -> None:
        out = self.stack.tmp / f"{self.name}.{len(self.runs)}.out"
        err = self.stack.tmp / f"{self.name}.{len(self.runs)}.err"
        self.runs.append(out)
        with open(out, "wb") as o, open(err, "wb") as e:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "headrace",
                    "subscribe",
                    "--relay",
                    self.stack.relay_url,
                    "--bootstrap",
                    self.stack.boot_url,
                    "--checkpoint",
                    str(self.checkpoint),
                    "--idle-exit",
                    str(idle_exit),
                    "--log-format",
                    "json",
                    *self.extra,
                ],
                stdout=o,
                stderr=e,
                env={**os.environ},
            )

    def saved(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.checkpoint.read_text()))
        except (FileNotFoundError, ValueError):
            return None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def errors(self) -> str:
        return "\n".join(p.with_suffix(".err").read_text(errors="replace")[-3000:] for p in self.runs)

    def lines(self) -> list[str]:
        """Every complete output line of every run, in order (a line cut by kill -9 is dropped)."""
        out: list[str] = []
        for p in self.runs:
            text = p.read_text()
            parts = text.split("\n")
            out.extend(parts[:-1])  # the last part is "" or a cut line
        return out

    def copy(self) -> dict[tuple[str, Any], dict[str, Any]]:
        return wl.materialise(self.lines())
