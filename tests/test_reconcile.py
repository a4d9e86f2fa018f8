"""``headrace reconcile`` on a small real log-path run: real agent and collector processes, sink files,
archive, demux and load. Every stage's counts agree; a sink file removed before archiving and rows
lost from the loaded table are each named by stream and stage, with exit 7."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from archive_support import corpus
from click.testing import CliRunner
from support import Daemon, free_port, wait_until, write_config
from test_logpath_flow import run_api, sections

from headrace.batch._archive import read_chunks
from headrace.cli import main


def _reconcile(cfg: Path) -> tuple[int, dict[str, Any], str]:
    r = CliRunner().invoke(main, ["reconcile", "--config", str(cfg), "--json"], catch_exceptions=False)
    return r.exit_code, (json.loads(r.stdout) if r.stdout.strip() else {}), r.stderr


def _failing(doc: dict[str, Any]) -> list[str]:
    return [c["check"] for c in doc["checks"] if not c["ok"]]


def test_reconcile_a_log_path_run(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    data = corpus(400, seed=5)
    logs = tmp_path / "logs"
    logs.mkdir()
    cport, aport = free_port(), free_port()
    collector_sec = {"listen": f"127.0.0.1:{cport}", "sink_dir": str(tmp_path / "sink"), "roll_bytes": 20_000}
    agent_sec = {
        "name": "host-a",
        "collectors": [f"http://127.0.0.1:{cport}"],
        "state_dir": str(tmp_path / "agent-state"),
        "listen": f"127.0.0.1:{aport}",
        "sources": [{"path": str(logs / f"{t}.log"), "data_type": t} for t in data],
    }
    collector = daemons(
        ["collector", "--config", str(write_config(tmp_path / "c.yaml", {"collector": collector_sec}))], "collector"
    )
    collector.start().wait_http(f"http://127.0.0.1:{cport}/healthz")
    agent = daemons(["agent", "--config", str(write_config(tmp_path / "a.yaml", {"agent": agent_sec}))], "agent")
    agent.start().wait_http(f"http://127.0.0.1:{aport}/healthz")
    sizes = {str(logs / f"{t}.log"): 0 for t in data}

    def all_acked() -> bool:
        streams = httpx.get(f"http://127.0.0.1:{aport}/v1/status", timeout=5).json()["streams"]
        return len(streams) == len(data) and all(s["acked_offset"] == sizes[s["path"]] for s in streams)

    for i in range(4):  # in rounds, each acked before the next: several sink files (roll_bytes)
        for t, v in data.items():
            with open(logs / f"{t}.log", "ab") as f:
                n = len(v["lines"])
                piece = b"".join(v["lines"][n * i // 4 : n * (i + 1) // 4])
                f.write(piece)
            sizes[str(logs / f"{t}.log")] += len(piece)
        wait_until(all_acked, 120, "every line acked by the collector")
    assert collector.stop() == 0  # closes the open sink file into done/
    secs = sections(tmp_path, f"sqlite:///{tmp_path / 'logs.db'}")
    cfg = write_config(tmp_path / "headrace.yaml", {"agent": agent_sec, "collector": collector_sec, **secs})

    # before the batch jobs: what the agent acked is in the sink files
    rc, doc, err = _reconcile(cfg)
    assert rc == 0, (doc, err)
    assert len(doc["checks"]) == len(data) and all(
        c["check"].endswith("held in sink files or archives") for c in doc["checks"]
    )

    # a sink file lost before archiving: the streams it held are named, with the stage
    done = sorted((tmp_path / "sink" / "done").glob("*.avro"))
    assert len(done) > 2
    victim = done[1]
    lost = sorted({f"{r['source']}/{r['stream']}" for r in read_chunks(victim.read_bytes())})
    aside = tmp_path / victim.name
    shutil.move(victim, aside)
    rc, doc, err = _reconcile(cfg)
    assert rc == 7, doc
    assert sorted(c.split(":")[0] for c in _failing(doc)) == lost
    assert all("bytes acked by the agent = held in sink files or archives" in c for c in _failing(doc))
    assert f"headrace reconcile: {lost[0]}: bytes acked by the agent" in err
    shutil.move(aside, victim)

    run_api(secs)  # archive (deletes the sink files), demux, load
    assert not list((tmp_path / "sink" / "done").glob("*.avro"))
    rc, doc, err = _reconcile(cfg)
    assert rc == 0, (_failing(doc), err)
    assert sorted(doc["stages"]) == ["agent", "archive", "demux", "load", "sink"]
    assert len(doc["checks"]) == 3 * len(data)  # per stream: agent→archives, archive→demux, demux→load
    for stream in doc["streams"].values():
        t = stream["data_type"]
        assert stream["archived_lines"] == len(data[t]["lines"])
        assert stream["parsed_rows"] == stream["loaded_rows"] == data[t]["good"]
        assert stream["error_rows"] == data[t]["bad"]

    # rows lost from the loaded table: that stream, at the load stage
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'logs.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM logs_web WHERE rowid IN (SELECT rowid FROM logs_web LIMIT 3)"))
    engine.dispose()
    rc, doc, err = _reconcile(cfg)
    assert rc == 7
    web = str(logs / "web.log").lstrip("/")
    assert _failing(doc) == [f"host-a/{web}: demux rows = rows loaded"]
    assert next(c for c in doc["checks"] if not c["ok"])["found"] == data["web"]["good"] - 3
