"""State files are typed and versioned: older files (no version) are read and migrated, a file a newer
headrace wrote is refused with a clear message, a damaged one names the file and field; a relay and
an agent refuse to start on state from the future instead of silently misreading it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from support import free_port, write_config

from headrace._statefile import StateFile
from headrace.agents._checkpoint import CHECKPOINTS_FILE, Checkpoints
from headrace.batch._demux import DEMUX_STATE_FILE
from headrace.errors import FatalError
from headrace.relay._capture import Acks


class Body(BaseModel):
    n: int
    names: list[str] = []


SF = StateFile("test", Body, 2, {0: lambda d: {"n": d["count"]}, 1: lambda d: {**d, "names": ["migrated"]}})


def test_round_trip_migrations_and_refusals(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    SF.save(p, Body(n=3, names=["a"]))
    assert json.loads(p.read_text())["kind"] == "test" and json.loads(p.read_text())["version"] == 2
    assert SF.load(p) == Body(n=3, names=["a"])
    assert SF.load(tmp_path / "missing.json") is None
    p.write_text('{"count": 7}')  # version 0: before versions existed
    assert SF.load(p) == Body(n=7, names=["migrated"])
    for text, message in (
        ('{"kind": "test", "version": 3, "n": 1}', "written by a newer headrace"),
        ('{"kind": "other", "version": 2, "n": 1}', "a 'other' state file where a 'test' one belongs"),
        ('{"kind": "test", "version": 2, "n": "x"}', "field n"),
        ("{not json", "not a JSON test file"),
        ("[1]", "not a test file"),
    ):
        p.write_text(text)
        with pytest.raises(FatalError, match=message):
            SF.load(p)


def test_the_real_state_files_read_what_earlier_releases_wrote(tmp_path: Path) -> None:
    # checkpoints.json as written before kinds existed (it already carried version 1)
    legacy = {"version": 1, "streams": {"s": {"path": "/x.log", "data_type": "t", "acked": {"seq": 5}}}}
    (tmp_path / "checkpoints.json").write_text(json.dumps({**legacy, "seen_sources": ["a"]}))
    cp = Checkpoints.load(tmp_path)
    assert cp.streams["s"].acked is not None and cp.streams["s"].acked.seq == 5 and cp.seen_sources == {"a"}
    cp.save()
    assert json.loads((tmp_path / "checkpoints.json").read_text())["kind"] == "agent checkpoints"
    assert CHECKPOINTS_FILE.load(tmp_path / "checkpoints.json") is not None
    # relay acks.json: a bare consumer -> SCN mapping before versions
    (tmp_path / "acks.json").write_text('{"bootstrap": 42, "gone": 7}')
    acks = Acks(tmp_path, ["bootstrap"])
    assert acks.durable() == 42
    acks.ack("bootstrap", 50)
    assert json.loads((tmp_path / "acks.json").read_text()) == {
        "kind": "relay acks",
        "version": 1,
        "scns": {"bootstrap": 50},
    }
    # demux day state: a bare part -> generation mapping before versions
    assert DEMUX_STATE_FILE.decode(b'{"part-00000": 3}', "x").parts == {"part-00000": 3}


def test_an_agent_on_state_from_a_newer_release_refuses_to_start(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    state.mkdir()
    (state / "checkpoints.json").write_text('{"kind": "agent checkpoints", "version": 99, "streams": {}}')
    cfg = write_config(
        tmp_path / "h.yaml",
        {
            "agent": {
                "listen": f"127.0.0.1:{free_port()}",
                "state_dir": str(state),
                "collectors": ["http://127.0.0.1:1"],
            }
        },
    )
    p = subprocess.run([sys.executable, "-m", "headrace", "agent", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "checkpoints.json was written by a newer headrace (agent checkpoints version 99" in p.stderr
    assert json.loads((state / "checkpoints.json").read_text())["version"] == 99  # left as it was
