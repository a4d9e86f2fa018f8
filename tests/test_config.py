"""Configuration: misspelled keys and bad values are reported with their path; env overrides work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from headrace._config import load_section
from headrace.agents._config import AgentConfig
from headrace.collectors._config import CollectorConfig
from headrace.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "headrace.yaml"
    p.write_text(text)
    return p


def test_misspelled_key_is_named(tmp_path: Path) -> None:
    p = write(tmp_path, "collector:\n  listen: 127.0.0.1:7070\n  roll_byts: 10\n")
    with pytest.raises(ConfigError) as e:
        load_section(p, "collector", CollectorConfig)
    assert e.value.problems == ["collector.roll_byts: unknown key (did you mean 'roll_bytes'?)"]


def test_nested_key_path_and_bad_value(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "agent:\n  listen: nowhere\n  sources:\n    - path: /x/*.log\n      data_type: app\n      strat: end\n",
    )
    with pytest.raises(ConfigError) as e:
        load_section(p, "agent", AgentConfig)
    text = str(e.value)
    assert "agent.listen:" in text and "host:port" in text
    assert "agent.sources.0.strat: unknown key" in text


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "colector:\n  listen: 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="colector: unknown section"):
        load_section(p, "collector", CollectorConfig)


def test_environment_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "agent:\n  sources:\n    - path: /a/*.log\n      data_type: app\n")
    env = {
        "HEADRACE_AGENT__COLLECTORS": '["http://10.0.0.1:7070", "http://10.0.0.2:7070"]',
        "HEADRACE_AGENT__SOURCES__0__START": "end",
        "HEADRACE_COLLECTOR__ROLL_BYTES": "1",
    }
    cfg = load_section(p, "agent", AgentConfig, environ=env)
    assert cfg.collectors == ["http://10.0.0.1:7070", "http://10.0.0.2:7070"]
    assert cfg.sources[0].start == "end"
    assert load_section(p, "collector", CollectorConfig, environ=env).roll_bytes == 1


def test_cli_exits_2_before_doing_anything(tmp_path: Path) -> None:
    sink = tmp_path / "sink"
    p = write(tmp_path, f"collector:\n  sink_dir: {sink}\n  rol_seconds: 5\n")
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "collector", "--config", str(p)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "collector.rol_seconds: unknown key" in r.stderr
    assert not sink.exists()
