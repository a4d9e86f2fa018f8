"""Each batch run leaves a run record, and ``headrace status`` shows the last run of each batch job of
the config: a failed demux (the wrong processor) makes status exit 1 naming it; a good run is healthy."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from archive_support import corpus, corpus_sinks
from chromium_cdp import Chromium, chromium_path
from support import free_port, wait_until, write_config

from headrace._config import load_section
from headrace._up_status import StatusServer
from headrace.batch import DemuxConfig


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "headrace", *args], capture_output=True, text=True, timeout=120)


def _status(cfg: Path) -> tuple[int, dict[str, Any]]:
    p = run("status", "--config", str(cfg), "--json", "--timeout", "2")
    return p.returncode, json.loads(p.stdout)


def test_run_records_and_status_report_the_last_demux_run(tmp_path: Path) -> None:
    data = corpus(300)
    corpus_sinks(tmp_path / "sink" / "done", {"web": data["web"]}, random.Random(5))

    def config(processor: str) -> Path:
        return write_config(
            tmp_path / "h.yaml",
            {
                "archive": {"sink_dir": str(tmp_path / "sink"), "archive_dir": str(tmp_path / "archive")},
                "demux": {
                    "archive_dir": str(tmp_path / "archive"),
                    "output": str(tmp_path / "out"),
                    "types": {"web": {"processor": processor}},
                },
            },
        )

    cfg = config("json")
    code, doc = _status(cfg)  # nothing ran yet: healthy, each job "never ran"
    assert code == 0, doc
    assert {p["name"]: p["figures"] for p in doc["parts"]} == {
        "archive": {"never_ran": True},
        "demux": {"never_ran": True},
    }

    assert run("archive", "--config", str(cfg)).returncode == 0
    arch = json.loads((tmp_path / "archive" / "_runs" / "archive.json").read_text())
    assert arch["kind"] == "run_record" and arch["job"] == "archive" and arch["exit_code"] == 0
    assert arch["files"] >= 1 and arch["records"] > 0 and arch["seconds"] >= 0

    p = run("demux", "--config", str(cfg))  # the wrong processor: fails
    assert p.returncode == 1, p.stdout + p.stderr
    rec = json.loads((tmp_path / "out" / "_runs" / "demux.json").read_text())
    total = data["web"]["good"] + 1
    assert rec["exit_code"] == 1 and rec["errors"] == total and rec["records"] == 0
    assert rec["error_rate"] == 1.0 and rec["top_reasons"] and "failed to parse" in rec["failures"][0]
    code, doc = _status(cfg)
    assert code == 1, doc
    parts = {p["name"]: p for p in doc["parts"]}
    assert parts["archive"]["ok"] is True
    demux = parts["demux"]
    assert demux["ok"] is False and demux["kind"] == "batch"
    assert demux["error"].startswith("last run failed (exit 1)") and "failed to parse" in demux["error"]
    assert demux["figures"]["errors"] == total and demux["figures"]["error_rate"] == 1.0
    assert any(pr.startswith("demux: last run failed") for pr in doc["problems"]), doc["problems"]
    table = run("status", "--config", str(cfg))  # the terminal table says the same
    assert table.returncode == 1 and "demux" in table.stdout and "FAILED" in table.stdout, table.stdout
    # and `headrace up`'s /v1/overview (the status page's source)
    server = StatusServer(f"127.0.0.1:{free_port()}", [], batch={"demux": load_section(str(cfg), "demux", DemuxConfig)})
    server.start()
    try:
        ov = httpx.get(server.url + "v1/overview", timeout=10).json()
        if chromium_path() is not None:  # the status page draws the job's card: failed, with its figures
            browser = Chromium(tmp_path)
            try:
                browser.navigate(server.url)
                card = "document.querySelector('[data-part=demux]')"
                wait_until(lambda: browser.eval(f"{card} && {card}.dataset.health") == "failed", 20, "the demux card")
                errors = browser.eval(f"{card}.querySelector('[data-fig=errors]').dataset.value")
                assert errors == str(total) and "failed to parse" in browser.eval(f"{card}.innerText")
                assert browser.eval("document.getElementById('overall').dataset.overall") == "failed"
                browser.screenshot(tmp_path / "status-page-batch.png")
                assert not browser.exceptions, browser.exceptions
            finally:
                browser.close()
    finally:
        server.stop()
    (part,) = ov["parts"]
    assert part["name"] == "demux" and part["kind"] == "batch" and part["ok"] is False
    assert part["status"]["errors"] == total and ov["problems"] == [f"demux: {part['error']}"]

    # the right processor: the next run replaces the record and status is healthy again
    (tmp_path / "out").rename(tmp_path / "out-wrong")
    (tmp_path / "out").mkdir()
    cfg = config("combined")
    p = run("demux", "--config", str(cfg))
    assert p.returncode == 0, p.stdout + p.stderr
    code, doc = _status(cfg)
    assert code == 0, doc
    demux = {p["name"]: p for p in doc["parts"]}["demux"]
    assert demux["ok"] is True and demux["figures"]["records"] == data["web"]["good"]
    assert demux["figures"]["errors"] == 1 and demux["figures"]["exit_code"] == 0


def test_a_run_that_raises_is_recorded_as_failed(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "app.db").execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").connection.close()
    cfg = write_config(
        tmp_path / "h.yaml",
        {"export": {"url": f"sqlite:///{tmp_path / 'app.db'}", "output": str(tmp_path / "out"), "tables": ["nope"]}},
    )
    p = run("export", "--config", str(cfg))  # an unknown table: raises before anything is exported
    assert p.returncode == 2, p.stdout + p.stderr
    rec = json.loads((tmp_path / "out" / "_runs" / "export.json").read_text())
    assert rec["job"] == "export" and rec["exit_code"] == 2 and "nope" in rec["failures"][0], rec
    code, doc = _status(cfg)
    assert code == 1 and doc["problems"][0].startswith("export: last run failed (exit 2)"), doc
