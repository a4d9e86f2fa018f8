"""A private ``nats-server -js`` per test: the fixture ``nats_url`` (``from nats_support import nats_url``)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import free_port, require_binaries, wait_until


@pytest.fixture(name="nats_url")
def nats_url_fixture(tmp_path: Path) -> Any:
    require_binaries("nats-server", why="the nats sink tests need a NATS server with JetStream")
    port = free_port()
    store = tmp_path / "jetstream"
    log = open(tmp_path / "nats.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)], stdout=log, stderr=log
    )
    log.close()
    url = f"nats://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "nats.log").read_text()
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True

        wait_until(up, 20, "nats-server to listen")
        yield url
    finally:
        proc.kill()
        proc.wait(10)
