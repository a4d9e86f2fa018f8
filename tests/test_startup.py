"""A daemon whose port is in use says so in one line naming the port and the config key, exits 6,
and has installed or written nothing (the relay no longer installs triggers before failing to bind)."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import free_port


@pytest.mark.parametrize("part", ["collector", "agent", "relay", "bootstrap"])
def test_port_in_use_is_one_line_exit_6_and_changes_nothing(tmp_path: Path, part: str) -> None:
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    db = tmp_path / "app.db"
    sqlite3.connect(db).execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").connection.close()
    data = tmp_path / "data"
    section = {
        "collector": {"sink_dir": str(data / "sink")},
        "agent": {"state_dir": str(data / "agent"), "sources": [{"path": str(tmp_path / "*.log"), "data_type": "a"}]},
        "relay": {"source": f"sqlite:///{db}", "state_dir": str(data / "relay")},
        "bootstrap": {"store": f"sqlite:///{data / 'boot.db'}", "relays": ["http://127.0.0.1:1"]},
    }[part]
    cfg = tmp_path / "h.yaml"
    cfg.write_text(yaml.safe_dump({part: {"listen": f"127.0.0.1:{port}", **section}}))
    try:
        p = subprocess.run(
            [sys.executable, "-m", "headrace", part, "--config", str(cfg), "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        taken.close()
    assert p.returncode == 6, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert lines == [f"headrace: cannot listen on 127.0.0.1:{port} ({part}.listen): the port is in use "
                     "(another headrace daemon, or another program?)"]  # fmt: skip
    assert not data.exists()  # no state folder, sink, store
    names = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert names == {"t"}  # no trigger, no change log


def test_subscribe_refuses_a_url_without_scheme_and_idle_exit_without_a_relay_is_a_failure() -> None:
    run = [sys.executable, "-m", "headrace", "subscribe", "--idle-exit", "1", "--log-level", "error"]
    p = subprocess.run([*run, "--relay", "127.0.0.1:27080"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "is not an http:// or https:// URL (e.g. http://127.0.0.1:27080)" in p.stderr
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p = subprocess.run([*run, "--relay", url], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "no relay answered" in p.stderr and url in p.stderr and p.stdout == ""
