"""Batch jobs tell the truth in their exit status: a data type that mostly failed to parse fails the
run, naming the top reasons; an archive run that found only open sink files says so, and how to
close them, with its own exit status (5) instead of reporting success."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from archive_support import corpus, corpus_sinks
from collector_helpers import make_chunk, post, start_collector
from support import write_config


def run(cmd: str, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", cmd, "--config", str(cfg)], capture_output=True, text=True, timeout=120
    )


def test_demux_with_the_wrong_processor_fails_naming_the_reasons(tmp_path: Path) -> None:
    data = corpus(300)
    corpus_sinks(tmp_path / "sink" / "done", {"web": data["web"], "app": data["app"]}, random.Random(5))

    def config(types: dict[str, Any], **demux: Any) -> Path:
        return write_config(
            tmp_path / "h.yaml",
            {
                "archive": {"sink_dir": str(tmp_path / "sink"), "archive_dir": str(tmp_path / "archive")},
                "demux": {"archive_dir": str(tmp_path / "archive"), "output": str(tmp_path / "out"), "types": types}
                | demux,
            },
        )

    cfg = config({"web": {"processor": "json"}, "app": {"processor": "json"}})
    assert run("archive", cfg).returncode == 0
    p = run("demux", cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED" in p.stdout and "top error reasons: 'not a JSON object" in p.stdout, p.stdout
    # the failing type is named with its counts; the one that parsed is not
    assert f"web: {data['web']['good'] + 1} of {data['web']['good'] + 1} records failed to parse" in p.stderr
    failure = next(line for line in p.stderr.splitlines() if "failed to parse" in line)
    assert "demux.max_error_rate" in failure and "app:" not in failure and "Missing a name" not in failure

    # the right processor: the one bad line of each type is under the threshold
    (tmp_path / "out").rename(tmp_path / "out-wrong")
    cfg = config({"web": {"processor": "combined"}, "app": {"processor": "json"}})
    p = run("demux", cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("headrace demux: ok:") and "top error reasons:" in p.stdout, p.stdout

    # a user who expects messy input raises the threshold
    (tmp_path / "out").rename(tmp_path / "out-right")
    cfg = config({"web": {"processor": "json"}}, max_error_rate=1.0)
    assert run("demux", cfg).returncode == 0


def test_archive_with_only_open_sink_files_says_so_and_exits_5(tmp_path: Path, daemons: Any) -> None:
    col, url, sink = start_collector(daemons, tmp_path, roll_seconds=3600)
    assert post(url, [make_chunk("a.log", 0, 10)]).status_code == 200
    cfg = write_config(
        tmp_path / "h.yaml", {"archive": {"sink_dir": str(sink), "archive_dir": str(tmp_path / "archive")}}
    )
    p = run("archive", cfg)
    assert p.returncode == 5, p.stdout + p.stderr
    assert "NOTHING TO DO" in p.stdout and "1 still open" in p.stdout and "POST /v1/roll" in p.stdout, p.stdout
    assert not (tmp_path / "archive").exists() or not any((tmp_path / "archive").rglob("*.avro"))
    # what the summary says to do: POST /v1/roll closes the open file at once, then archive takes it
    r = httpx.post(url + "/v1/roll", timeout=10)
    assert r.status_code == 200 and r.json()["closed"].endswith(".avro"), r.text
    assert httpx.post(url + "/v1/roll", timeout=10).json() == {"closed": None}  # nothing open now
    p = run("archive", cfg)
    assert p.returncode == 0 and "headrace archive: ok: 1 files" in p.stdout, p.stdout + p.stderr
    # the collector keeps taking data into a new file; a stopped collector closes it too
    assert post(url, [make_chunk("a.log", 320, 10)]).status_code == 200
    col.stop()
    p = run("archive", cfg)
    assert p.returncode == 0 and "headrace archive: ok: 1 files" in p.stdout, p.stdout + p.stderr
    # nothing at all to do (no open files either) is not an error
    p = run("archive", cfg)
    assert p.returncode == 0 and "ok: 0 files" in p.stdout, p.stdout + p.stderr
