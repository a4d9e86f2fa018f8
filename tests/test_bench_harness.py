"""``python -m bench`` keeps working: one cheap benchmark at --quick size, its JSON record and the README table.

Not a speed test: nothing here asserts a rate, only that the harness runs the script with its peer,
checks completeness, records machine facts, CPU and RSS, and rebuilds the table between the markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_collector_ingest_writes_record_and_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- bench:table -->\nold table\n<!-- /bench:table -->\nafter\n")
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "bench", "--quick", "--only", "collector_ingest", "--results", str(results)]
    cmd += ["--readme", str(readme), "--load-wait", "0"]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = json.loads((results / "collector_ingest.json").read_text())
    assert rec["complete"] is True and rec["problems"] == []
    assert rec["quick"] is True and rec["args"] == {"seconds": 1, "codec": ["null"]}
    assert {"collector_null", "peer_http_only", "peer_write_fsync"} <= rec["result"].keys()
    assert rec["result"]["collector_null"]["mb_s"] > 0 and rec["result"]["peer_write_fsync"]["mb_s"] > 0
    assert rec["cpu_s"] > 0 and rec["peak_rss_mib"] > 0
    assert len(rec["load_before"]) == 3 and "met" in rec["load_gate"]
    assert rec["machine"]["cpus"] == os.cpu_count() and rec["machine"]["packages"]["pyarrow"]
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n<!-- bench:table -->\n| what |")
    assert text.endswith("<!-- /bench:table -->\nafter\n")
    assert "collector ingest, MB/s acked" in text and "bare HTTP server" in text
    assert (results / "table.md").read_text().strip() in text


def test_completeness_checks_reject_short_runs() -> None:
    sys.path.insert(0, str(ROOT))
    from bench._specs import BY_NAME

    export = BY_NAME["export_postgres"]
    good = {"rows": 20_000, "headrace_export_rows_per_s": 1, "peer_copy_binary_rows_per_s": 2}
    assert export.check(good, {"rows": 20_000}) == []
    assert export.check({**good, "rows": 19_999}, {"rows": 20_000})
    agent = BY_NAME["agent_throughput"]
    short = {"agent_mb_s": 1.0, "peer_direct_shipper_mb_s": 1.0, "bytes": 10, "bytes_acked": 9}
    assert agent.check(short, {}) and not agent.check({**short, "bytes_acked": 10}, {})
    relay = BY_NAME["relay_postgres"]
    args = {"txns": 1000, "rows": 5, "rate": 200, "seconds": 2}
    ok = {"txns": 1000, "relay_subscriber_events_per_s": 1, "pg_recvlogical_events_per_s": 2, "latency_events": 2000}
    assert relay.check(ok, args) == [] and relay.check({**ok, "latency_events": 1999}, args)
    fanout = BY_NAME["relay_fanout"]
    args = {"events": 1000, "subscribers": 3, "response_mib": [8]}
    run = {"max_bytes_mib": 8, "complete_subscribers": 3, "incomplete": {}}
    done = {"events": 1000, "reference_ok": True, "subscriber_library_ok": True, "fanout_8mib": run}
    assert fanout.check(done, args) == []
    assert fanout.check({**done, "fanout_8mib": {**run, "complete_subscribers": 2}}, args)
    assert fanout.check({**done, "reference_ok": False}, args)
    assert fanout.check({k: v for k, v in done.items() if k != "fanout_8mib"}, args)


def test_peer_benchmarks_count_every_line_before_a_speed_counts() -> None:
    sys.path.insert(0, str(ROOT))
    from bench._specs import BY_NAME, argv

    assert argv({"lines": 5, "clean": True, "quick": False, "line_bytes": [100, 1024]}) == [
        "--lines",
        "5",
        "--clean",
        "--line-bytes",
        "100",
        "--line-bytes",
        "1024",
    ]
    ship = BY_NAME["ship_peers"]
    run = {"complete": True, "bytes": 800, "bytes_done": 800, "lines": 8, "lines_got": 8, "lines_checksum_ok": True}
    runs = {"headrace": run, "rsyslog": run, "socat": run}
    args = {"line_bytes": [100]}
    assert ship.check({"sizes": {"100": runs}}, args) == []
    lost = {**run, "complete": False, "lines_got": 7}
    assert "7 of 8 lines" in " ".join(ship.check({"sizes": {"100": {**runs, "rsyslog": lost}}}, args))
    assert ship.check({"sizes": {}}, args)

    duck = BY_NAME["demux_duckdb"]
    side = {"accounted": 100}
    kinds = {k: {"headrace": side, "duckdb": side} for k in ["combined", "json", "syslog"]}
    a = {"lines": 100, "others": 100}
    assert duck.check({"results": kinds}, a) == []
    short = {**kinds, "json": {"headrace": {"accounted": 99}, "duckdb": side}}
    assert duck.check({"results": short}, a) and duck.check({"results": kinds}, {**a, "clean": True})

    idle = BY_NAME["idle_agent"]
    one = {"files_confirmed": 1000, "ack_latency_s": [0.1, 0.2, 0.3]}
    a = {"files": 1000, "appends": 3}
    assert idle.check({"headrace": one, "rsyslog": one}, a) == []
    assert idle.check({"headrace": {**one, "ack_latency_s": [0.1, 0.2, float("inf")]}, "rsyslog": one}, a)

    seed = BY_NAME["bootstrap_pg_seed"]
    ok = {"rows": 7000, "rows_per_s": 1, "table_rows": 7000, "peer_copy_binary_rows": 7000}
    ok["peer_copy_binary_rows_per_s"] = 2
    assert seed.check(ok, {"rows": 5000}) == [] and seed.check({**ok, "peer_copy_binary_rows": 6999}, {"rows": 5000})
