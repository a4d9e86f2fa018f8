"""The whole log path with real processes: lines in log files → agent → collector → sink files →
headrace archive → demux → Parquet → load → database. Row counts equal the good lines written,
parsed values match for every processor, bad lines are in ``_errors`` with their reasons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from archive_support import corpus
from support import Daemon, free_port, wait_until, write_config
from test_logpath_flow import check_errors, check_tables, cli, sections


def test_lines_to_agent_to_collector_to_archive_demux_load(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    data = corpus(2000, seed=17)
    logs = tmp_path / "logs"
    logs.mkdir()
    cport, aport = free_port(), free_port()
    ccfg = write_config(
        tmp_path / "collector.yaml",
        {"collector": {"listen": f"127.0.0.1:{cport}", "sink_dir": str(tmp_path / "sink"), "roll_bytes": 200_000}},
    )
    collector = daemons(["collector", "--config", str(ccfg)], "collector").start()
    collector.wait_http(f"http://127.0.0.1:{cport}/healthz")
    acfg = write_config(
        tmp_path / "agent.yaml",
        {
            "agent": {
                "name": "host-a",
                "collectors": [f"http://127.0.0.1:{cport}"],
                "state_dir": str(tmp_path / "agent-state"),
                "listen": f"127.0.0.1:{aport}",
                "sources": [{"path": str(logs / f"{t}.log"), "data_type": t} for t in data],
            }
        },
    )
    agent = daemons(["agent", "--config", str(acfg)], "agent").start()
    agent.wait_http(f"http://127.0.0.1:{aport}/healthz")
    for t, v in data.items():  # written in pieces while the agent tails the files
        lines = v["lines"]
        for i in range(0, len(lines), 500):
            with open(logs / f"{t}.log", "ab") as f:
                f.write(b"".join(lines[i : i + 500]))
    sizes = {str(logs / f"{t}.log"): sum(len(x) for x in v["lines"]) for t, v in data.items()}

    def all_acked() -> bool:
        streams = httpx.get(f"http://127.0.0.1:{aport}/v1/status", timeout=5).json()["streams"]
        return len(streams) == len(data) and all(s["acked_offset"] == sizes[s["path"]] for s in streams)

    wait_until(all_acked, 120, "every line acked by the collector")
    assert collector.stop() == 0  # closes the open sink file into done/
    assert list((tmp_path / "sink" / "done").glob("*.avro"))

    cfg = write_config(tmp_path / "headrace.yaml", sections(tmp_path, f"sqlite:///{tmp_path / 'logs.db'}"))
    cli("archive", cfg)
    cli("demux", cfg)
    cli("load", cfg)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'logs.db'}")
    check_tables(engine, data)  # counts and parsed values (sums) per processor, no row twice
    with engine.connect() as conn:
        streams = {t: conn.execute(sa.text(f"SELECT DISTINCT _stream FROM logs_{t}")).scalars().all() for t in data}
    assert all(s == [str(logs / f"{t}.log").lstrip("/")] for t, s in streams.items())
    check_errors(str(tmp_path / "tables"), data)
    engine.dispose()
