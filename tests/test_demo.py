"""``headrace demo``: the whole mission on embedded defaults, reconciled, with clean piped output."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from support import wait_until

ROW = re.compile(r"^│ (?P<what>.+?) +│ +(?P<expected>\d+) │ +(?P<found>\d+) │ +(?P<ok>\S+) +│$")


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``headrace demo`` piped (stdout and stderr are pipes, not a terminal), from ``cwd``, with no
    config and no --dir: its temporary directory goes under ``cwd/tmp`` (TMPDIR)."""
    (cwd / "tmp").mkdir()
    return subprocess.run(
        [sys.executable, "-m", "headrace", "demo", "--lines", "3000", "--transactions", "100", *args],
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(cwd / "tmp"), "COLUMNS": "80"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )


def _checks(stdout: str) -> dict[str, tuple[int, int, str]]:
    return {
        m["what"]: (int(m["expected"]), int(m["found"]), m["ok"])
        for m in (ROW.match(line) for line in stdout.splitlines())
        if m
    }


def _base(cwd: Path) -> Path:
    (base,) = (cwd / "tmp").iterdir()
    return base


def test_demo_from_an_empty_folder_reconciles_every_count_with_clean_piped_output(tmp_path: Path) -> None:
    r = _demo(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = _checks(r.stdout)
    # every step of both paths is in the table, and every count equals the one before it
    for t in ("web", "sys", "app"):
        for what in ("shipped (in sink files)", "archived", "parsed + errors"):
            assert checks[f"{t}: lines written = {what}"][0] == 1000
        assert checks[f"{t}: malformed lines written = demux errors"][:2] == (4, 4)
        assert checks[f"{t}: lines parsed = rows loaded (logs_{t})"][:2] == (996, 996)
    for table in ("customers", "orders"):
        for what in ("snapshot rows read (bootstrap)", "rows in the snapshot copy", "copy rows equal to them"):
            assert f"{table}: table rows = {what}" in checks
    assert "customers: 'c' changes committed = delivered" in checks
    assert len(checks) >= 29
    assert all(e == f and ok == "ok" for e, f, ok in checks.values()), checks
    assert f"all {len(checks)} counts match" in r.stdout
    # clean when piped: no log lines, no wrapping (the tables are not cut at 80 columns), nothing on stderr
    lines = r.stdout.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("{") or '"level":' in line]
    assert not [line for line in lines if len(line) > 200]
    assert "web: lines written = shipped (in sink files)" in r.stdout
    assert r.stderr == ""
    # nothing written to the current folder (no ./headrace-data): all of it is in the demo's directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    base = _base(tmp_path)
    # counted independently of the demo: log lines on disk = loaded rows + rows in demux's _errors
    con = sqlite3.connect(base / "logs.db")
    for t, pattern in (("web", "access.log*"), ("sys", "syslog"), ("app", "app.json.log")):
        on_disk = sum(p.read_bytes().count(b"\n") for p in (base / "logs").glob(pattern))
        (loaded,) = con.execute(f"SELECT count(*) FROM logs_{t}").fetchone()
        errors = sum(pq.read_metadata(p).num_rows for p in (base / "tables" / "_errors").rglob(f"*{t}*/**/*.parquet"))
        assert on_disk == 1000 and loaded + errors == 1000 and errors == 4, (t, on_disk, loaded, errors)
    (ok_200,) = con.execute("SELECT count(*) FROM logs_web WHERE status = 200").fetchone()
    assert re.search(rf"│ +200 │ +{ok_200} │", r.stdout)
    con.close()
    # the late subscriber's output rebuilds the shop tables
    copy: dict[tuple[str, int], dict[str, object]] = {}
    for line in (base / "late-subscriber.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["op"] == "d":
            copy.pop((e["table"], e["key"][0]), None)
        else:
            copy[(e["table"], e["key"][0])] = e["after"]
    shop = sqlite3.connect(base / "shop.db")
    for table in ("customers", "orders"):
        ids = {i for (i,) in shop.execute(f"SELECT id FROM {table}")}
        assert {k for t, k in copy if t == table} == ids
    shop.close()
    # without --keep no daemon is left: nothing answers on the demo's ports
    cfg = (base / "headrace.yaml").read_text()
    for port in re.findall(r"listen: 127\.0\.0\.1:(\d+)", cfg):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            raise AssertionError(f"something still answers on port {port}")
        except httpx.TransportError:
            pass


def test_demo_keep_leaves_the_daemons_running_under_up(tmp_path: Path) -> None:
    r = _demo(tmp_path, "--keep")
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(re.search(r"headrace up is running \(pid (\d+)\)", r.stdout)[1])  # type: ignore[index]
    try:
        urls = dict(re.findall(r"^  (collector|agent|relay|bootstrap) +(http://\S+)", r.stdout, re.M))
        assert sorted(urls) == ["agent", "bootstrap", "collector", "relay"], r.stdout
        for url in urls.values():
            assert httpx.get(url + "/v1/status", timeout=5).status_code == 200
        # the kept stack still moves data: a line appended to the access log gets acked
        base = _base(tmp_path)
        with (base / "logs" / "access.log").open("a") as f:
            f.write('192.0.2.1 - - [06/Dec/2026:21:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "curl/8.5.0"\n')
        size = sum(p.stat().st_size for p in (base / "logs").iterdir())
        wait_until(
            lambda: sum(s["acked_offset"] for s in httpx.get(urls["agent"] + "/v1/status").json()["streams"]) >= size,
            30,
            "the kept agent to ship the new line",
            0.2,
        )
    finally:
        os.kill(pid, 15)  # as the demo says: kill PID stops everything

    def stopped() -> bool:
        try:
            httpx.get(urls["collector"] + "/healthz", timeout=1)
            return False
        except httpx.TransportError:
            return True

    wait_until(stopped, 60, "`headrace up` to stop its daemons", 0.2)


def test_a_count_that_does_not_reconcile_fails_the_demo_naming_it(tmp_path: Path, capsys: object) -> None:
    import io

    from rich.console import Console

    from headrace._demo._changes import ChangeCounts
    from headrace._demo._cli import conclude
    from headrace._demo._logpath import LogCounts

    logs, changes = LogCounts(written_bytes=100, acked_bytes=100), ChangeCounts()
    for t in ("web", "sys", "app"):
        logs.written.lines[t] = logs.shipped[t] = logs.archived[t] = 10
        logs.written.bad[t] = logs.errors[t] = 1
        logs.parsed[t] = logs.loaded[t] = 9
    for table in ("customers", "orders"):
        changes.committed[table, "c"] = changes.delivered[table, "c"] = 5
        for c in (changes.table_rows, changes.snapshot_rows, changes.copy_rows, changes.copy_equal, changes.exported):
            c[table] = 5
    out = io.StringIO()
    assert conclude(Console(file=out, width=160), tmp_path, logs, changes, []) == 0
    assert "all 26 counts match" in out.getvalue()
    logs.archived["web"] = 9  # a line lost between the sink files and the archive
    changes.delivered["orders", "u"] = 1  # a change delivered that was never committed
    out = io.StringIO()
    assert conclude(Console(file=out, width=160), tmp_path, logs, changes, ["load: boom"]) == 1
    text = out.getvalue()
    assert "mismatch: web: lines written = archived: expected 10, found 9 (-1)" in text
    assert "mismatch: orders: 'u' changes committed = delivered: expected 0, found 1 (+1)" in text
    assert "load: boom" in text
    assert "counts match" not in text
