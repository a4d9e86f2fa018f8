"""deploy/systemd: the units parse (systemd-analyze verify: no unknown keys or bad values) and
every command they start is a real headrace command with the options they pass."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "deploy" / "systemd"


def test_units_verify_and_start_real_commands(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    headrace = Path(sys.executable).parent / "headrace"
    assert headrace.exists(), headrace
    files = sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.timer"))
    assert {f.name for f in files} >= {
        "headrace-agent.service", "headrace-collector.service", "headrace-relay.service",
        "headrace-bootstrap.service", "headrace-logs.service", "headrace-logs.timer",
    }  # fmt: skip
    commands = []
    for f in files:
        text = f.read_text()
        commands += re.findall(r"^ExecStart=/opt/headrace/bin/headrace (\S+)", text, re.M)
        (tmp_path / f.name).write_text(text.replace("/opt/headrace/bin/headrace", str(headrace)))
    p = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / f.name) for f in files)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in (p.stdout + p.stderr).splitlines() if "/" + tmp_path.name + "/" in line]
    assert p.returncode == 0 and not problems, p.stdout + p.stderr
    assert sorted(set(commands)) == ["agent", "archive", "bootstrap", "collector", "demux", "load", "relay"]
    for cmd in set(commands):
        h = subprocess.run([str(headrace), cmd, "--help"], capture_output=True, text=True, timeout=60)
        assert h.returncode == 0 and "--config" in h.stdout and "--log-format" in h.stdout, (cmd, h.stderr)
