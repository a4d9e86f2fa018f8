"""``headrace sink`` as a command: configuration errors exit 2 naming the key; an idle exit while no
relay answers exits 1 with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import free_port, write_config


def _sink(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "sink", "--config", str(cfg), "--log-level", "error", *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_errors_exit_2(tmp_path: Path) -> None:
    no_target = write_config(tmp_path / "a.yaml", {"sink": {"relays": ["http://127.0.0.1:1"]}})
    r = _sink(no_target)
    assert r.returncode == 2 and "sink.target" in r.stderr, r.stderr
    bad_url = write_config(
        tmp_path / "b.yaml", {"sink": {"relays": ["http://127.0.0.1:1"], "target": {"type": "sql", "url": "nope://x"}}}
    )
    r = _sink(bad_url)
    assert r.returncode == 2 and "sink.target.url" in r.stderr, r.stderr
    bad_type = write_config(tmp_path / "c.yaml", {"sink": {"relays": ["http://x"], "target": {"type": "kafka"}}})
    assert _sink(bad_type).returncode == 2


def test_idle_exit_while_no_relay_answers_exits_1(tmp_path: Path) -> None:
    relay = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    target = {"type": "sql", "url": f"sqlite:///{tmp_path / 'r.db'}"}
    cfg = write_config(tmp_path / "s.yaml", {"sink": {"relays": [relay], "target": target}})
    r = _sink(cfg, "--idle-exit", "1")
    assert r.returncode == 1, r.stderr
    assert "no relay answered" in r.stderr and relay in r.stderr


def test_check_connect_reports_the_sink_section(tmp_path: Path) -> None:
    relay = f"http://127.0.0.1:{free_port()}"
    target = {"type": "sql", "url": f"sqlite:///{tmp_path / 'r.db'}"}
    cfg = write_config(tmp_path / "s.yaml", {"sink": {"relays": [relay], "target": target}})
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "check", "--config", str(cfg), "--connect"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert f"FAIL sink.relays.0 ({relay})" in r.stdout and "ok   sink.target.url" in r.stdout, r.stdout
