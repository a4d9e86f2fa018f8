"""``headrace check``: every section validated at once with suggestions and the source of each value;
``--connect`` checks what the config points at without changing it; commands refuse to run on
defaults that would write into the current folder."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_helpers import start_collector
from db_servers import PgServer
from support import free_port


def headrace(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_typos_in_three_sections_are_all_reported_with_the_nearest_key(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "h.yaml",
        {
            "agent": {
                "colectors": ["http://127.0.0.1:1"],
                "sources": [{"path": "/x/*.log", "data_type": "a", "stat": "end"}],
            },
            "collector": {"roll_byts": 10},
            "demux": {"types": {"web": {"processor": "combined"}, "pay": {"processor": "regex"}}},
            "relay": {"source": "sqlite:///x.db", "tabels": ["t"]},
        },
    )
    p = headrace("check", "--config", str(cfg), env={"HEADRACE_RELAY__BUFFER_BYTES": "-5"})
    assert p.returncode == 2, p.stdout + p.stderr
    out = p.stdout
    assert "agent.colectors: unknown key (did you mean 'collectors'?)" in out
    assert "agent.sources.0.stat: unknown key (did you mean 'start'?)" in out
    assert "collector.roll_byts: unknown key (did you mean 'roll_bytes'?)" in out
    assert "relay.tabels: unknown key (did you mean 'tables'?)" in out
    by_env = "(set by the environment variable HEADRACE_RELAY__BUFFER_BYTES)"
    assert f"relay.buffer_bytes: Input should be greater than 0 {by_env}" in out
    assert "relay.buffer_bytes: set by the environment variable HEADRACE_RELAY__BUFFER_BYTES" in out
    # a processor's own options are checked too (regex needs a pattern)
    assert "FAIL demux.types.pay.pattern: required key is missing" in out, out

    bad_yaml = write(tmp_path / "bad.yaml", "agent:\n  name: x\n   oops: [\n")
    p = headrace("check", "--config", str(bad_yaml))
    assert p.returncode == 2 and f"invalid {bad_yaml}" in p.stderr and "line 3, column 8" in p.stderr, p.stderr


def test_connect_checks_what_the_config_points_at_and_changes_nothing(
    tmp_path: Path, daemons: Any, pg_server: PgServer
) -> None:
    _col, url, _sink = start_collector(daemons, tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("x\n")
    db = pg_server.create_database("check_db")
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("CREATE ROLE norepl LOGIN")
    dead = f"http://127.0.0.1:{free_port()}"
    base = {
        "agent": {"collectors": [url, dead], "state_dir": str(tmp_path / "agent"),
                  "sources": [{"path": str(logs / "*.log"), "data_type": "app"}]},
        "relay": {"source": pg_server.url(db), "state_dir": str(tmp_path / "relay")},
        "load": {"url": f"sqlite:///{tmp_path / 'new' / 'logs.db'}"},
    }  # fmt: skip
    p = headrace("check", "--config", str(write(tmp_path / "h.yaml", base)), "--connect")
    assert p.returncode == 1, p.stdout + p.stderr  # the dead collector
    lines = p.stdout.splitlines()
    assert any(line.startswith("ok") and f"agent.collectors.0 ({url})" in line for line in lines), p.stdout
    assert any(line.startswith("FAIL") and f"agent.collectors.1 ({dead}): not reachable" in line for line in lines)
    assert any(line.startswith("ok") and "agent.sources.0.path: 1 files match" in line for line in lines)
    assert any(line.startswith("ok") and "relay.source" in line for line in lines), p.stdout
    assert any(line.startswith("ok") and "load.url" in line for line in lines), p.stdout
    # nothing was created or installed: no state folders, no SQLite file, no slot or publication
    assert not (tmp_path / "agent").exists() and not (tmp_path / "relay").exists()
    assert not (tmp_path / "new").exists()
    with contextlib.closing(pg_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute(  # this database's: other tests on the same server have slots of their own
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()),"
            " (SELECT count(*) FROM pg_publication)"
        )
        assert cur.fetchone() == (0, 0)

    # a role without REPLICATION, a missing SQLite source: said with what to change
    for source, want in (
        (pg_server.url(db, user="norepl"), "lacks the REPLICATION attribute"),
        (f"sqlite:///{tmp_path / 'missing.db'}", "does not exist"),
    ):
        cfg = write(tmp_path / "r.yaml", {"relay": {"source": source}})
        p = headrace("check", "--config", str(cfg), "--connect")
        assert p.returncode == 1 and want in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("cmd", ["agent", "collector", "archive", "demux", "relay", "bootstrap", "sink"])
def test_commands_refuse_to_run_on_defaults_in_the_current_folder(tmp_path: Path, cmd: str) -> None:
    p = headrace(cmd, cwd=tmp_path)
    assert p.returncode == 2 and "no --config" in p.stderr and "headrace-data" in p.stderr, p.stderr
    other = write(tmp_path / "other.yaml", {"load": {}})
    p = headrace(cmd, "--config", str(other), cwd=tmp_path)
    assert p.returncode == 2 and f"{cmd}: no such section in the file" in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == [other]  # nothing written
