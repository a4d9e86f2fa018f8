"""``headrace demo``: run what headrace has on embedded defaults, in a temporary directory.

The log path: a collector and an agent as real processes; the agent tails three generated log files
(one of them rotated by rename half way), and the demo waits until the agent reports every byte
acked, stops both daemons cleanly, and counts the lines in the closed sink files.

The change path: a relay captures a SQLite database that the demo writes transactions into
(inserts, updates, deletes over two tables), and a subscriber in this process pulls the changes
back and compares them, operation by operation, with what was written.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import fastavro
import httpx
import yaml
from rich.console import Console
from rich.table import Table

from .errors import FatalError

__all__ = ["demo"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "headrace", *args, "--log-format", "json"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FatalError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise FatalError(f"{self.name} did not answer {url} within {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STREAMS = ("web", "app", "db")


def _write_lines(logs: Path, lines: int, first: int = 0, rotate_at: int = -1) -> dict[str, int]:
    """Append lines ``first``..``lines`` over three files, rotating ``web.log`` by rename at ``rotate_at``."""
    per_stream: Counter[str] = Counter()
    files = {name: (logs / f"{name}.log").open("a") for name in STREAMS}
    try:
        for i in range(first, lines):
            name = STREAMS[i % 3]
            files[name].write(f"{time.time():.6f} {name} line {i} of the headrace demo\n")
            per_stream[name] += 1
            if i == rotate_at:
                files["web"].close()
                os.rename(logs / "web.log", logs / "web.log.1")
                files["web"] = (logs / "web.log").open("a")
    finally:
        for f in files.values():
            f.close()
    return dict(per_stream)


def _agent_status(port: int) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=5).json()
    return status


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise FatalError(f"timed out after {timeout:.0f} s waiting for {what}")


def _count_sink_lines(done: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in sorted(done.glob("*.avro")):
        with path.open("rb") as f:
            for rec in fastavro.reader(f):
                assert isinstance(rec, dict)
                found[Path(str(rec["stream"])).name.split(".")[0]] += bytes(rec["data"]).count(b"\n")
    return found


def _run_log_path(base: Path, lines: int, console: Console) -> bool:
    logs = base / "logs"
    logs.mkdir(parents=True)
    cport, aport = _free_port(), _free_port()
    config = {
        "collector": {"listen": f"127.0.0.1:{cport}", "sink_dir": str(base / "sink"), "roll_seconds": 5},
        "agent": {
            "name": "demo-host",
            "collectors": [f"http://127.0.0.1:{cport}"],
            "state_dir": str(base / "agent"),
            "listen": f"127.0.0.1:{aport}",
            "sources": [{"path": str(logs / "*.log"), "data_type": "app"}],
        },
    }
    cfg_path = base / "headrace.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    console.print(f"[bold]log path[/]: config {cfg_path}")
    collector = _Proc("collector", ["collector", "--config", str(cfg_path)], base)
    agent: _Proc | None = None
    try:
        collector.wait_http(f"http://127.0.0.1:{cport}/healthz")
        agent = _Proc("agent", ["agent", "--config", str(cfg_path)], base)
        agent.wait_http(f"http://127.0.0.1:{aport}/healthz")
        # Start the three files and let the agent find them, as it would find long-lived logs.
        written = Counter(_write_lines(logs, len(STREAMS)))
        _wait(lambda: len(_agent_status(aport)["streams"]) == len(STREAMS), 30, "the agent to find the files")
        written.update(_write_lines(logs, lines, first=len(STREAMS), rotate_at=lines // 2))
        total_bytes = sum(p.stat().st_size for p in logs.iterdir())

        def all_acked() -> bool:
            streams = _agent_status(aport)["streams"]
            return bool(sum(s["acked_offset"] for s in streams) >= total_bytes)

        _wait(all_acked, 60, "the collector to acknowledge every byte")
    finally:
        if agent is not None:
            agent.stop()
        collector.stop()
    found = _count_sink_lines(base / "sink" / "done")
    table = Table(title=f"{sum(written.values())} lines written → {base / 'sink' / 'done'}")
    for col in ("stream", "written", "in sink files"):
        table.add_column(col)
    for name in sorted(written):
        table.add_row(name, str(written[name]), str(found[name]))
    console.print(table)
    return found == written


def _write_transactions(db: Path, transactions: int) -> Counter[tuple[str, str]]:
    """Commit ``transactions`` small transactions; return how many changes of each (table, op)."""
    rng = random.Random(7)
    expected: Counter[tuple[str, str]] = Counter()
    con = sqlite3.connect(db, isolation_level=None)
    try:
        live: list[int] = []
        for t in range(transactions):
            con.execute("BEGIN")
            con.execute("INSERT INTO customers (id, name) VALUES (?, ?)", (t, f"customer {t}"))
            expected["customers", "c"] += 1
            for _ in range(rng.randint(1, 3)):
                cur = con.execute(
                    "INSERT INTO orders (customer_id, amount, placed_at) VALUES (?, ?, ?)",
                    (t, round(rng.uniform(1, 500), 2), time.strftime("%Y-%m-%d %H:%M:%S")),
                )
                live.append(int(cur.lastrowid or 0))
                expected["orders", "c"] += 1
            if len(live) > 5 and rng.random() < 0.5:
                con.execute("UPDATE orders SET amount = amount + 1 WHERE id = ?", (live[0],))
                expected["orders", "u"] += 1
            if len(live) > 5 and rng.random() < 0.3:
                con.execute("DELETE FROM orders WHERE id = ?", (live.pop(0),))
                expected["orders", "d"] += 1
            con.execute("COMMIT")
    finally:
        con.close()
    return expected


def _run_change_path(base: Path, transactions: int, console: Console) -> bool:
    from .relay.client import Subscriber
    from .relay.client._cli import event_json

    db = base / "shop.db"
    con = sqlite3.connect(db)
    con.executescript(
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id INTEGER NOT NULL,"
        " amount NUMERIC(10, 2) NOT NULL, placed_at TIMESTAMP NOT NULL);"
    )
    con.close()
    port = _free_port()
    cfg_path = base / "relay.yaml"
    cfg_path.write_text(
        yaml.safe_dump({"relay": {"listen": f"127.0.0.1:{port}", "source": f"sqlite:///{db}"}}, sort_keys=False)
    )
    console.print(f"[bold]change path[/]: config {cfg_path}")
    relay = _Proc("relay", ["relay", "--config", str(cfg_path)], base)
    try:
        relay.wait_http(f"http://127.0.0.1:{port}/healthz")
        expected = _write_transactions(db, transactions)
        seen: Counter[tuple[str, str]] = Counter()
        sample: list[str] = []
        sub = Subscriber([f"http://127.0.0.1:{port}"], ["customers", "orders"])
        try:
            for window in sub.windows(idle_exit=5.0):
                for e in window.events:
                    seen[e.table, e.op.value] += 1
                    if len(sample) < 3:
                        sample.append(event_json(e))
                if seen == expected:
                    break
        finally:
            sub.close()
    finally:
        relay.stop()
    table = Table(title=f"{transactions} transactions committed to {db} → relay → subscriber")
    for col in ("table", "op", "committed", "received"):
        table.add_column(col)
    for key in sorted(expected):
        table.add_row(key[0], key[1], str(expected[key]), str(seen[key]))
    console.print(table)
    for line in sample:
        console.print(line, markup=False, highlight=False)
    return seen == expected


def _run_export(base: Path, console: Console) -> bool:
    from .batch._config import ExportConfig
    from .batch._export import read_export, run_export

    db = base / "shop.db"
    out = base / "exports"
    summary = run_export(ExportConfig(url=f"sqlite:///{db}", output=str(out), incremental={"orders": "id"}))
    con = sqlite3.connect(db)
    try:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("customers", "orders")}
    finally:
        con.close()
    table = Table(title=f"{db} → headrace export → Parquet in {out}")
    for col in ("table", "rows in the database", "rows exported"):
        table.add_column(col)
    exported = {t: read_export(str(out), t).num_rows for t in counts}
    for t, n in counts.items():
        table.add_row(t, str(n), str(exported[t]))
    console.print(table)
    return summary.ok and exported == counts


@click.command()
@click.option("--lines", default=5000, show_default=True, help="How many log lines to generate.")
@click.option("--transactions", default=300, show_default=True, help="How many transactions to commit.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to run (default: a new temporary directory, kept afterwards).",
)
def demo(lines: int, transactions: int, directory: str | None) -> None:
    """Run both paths on embedded defaults: agent → collector, SQLite → relay → subscriber, and an export."""
    console = Console(stderr=False)
    base = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="headrace-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        logs_ok = _run_log_path(base, lines, console)
        changes_ok = _run_change_path(base, transactions, console)
        export_ok = _run_export(base, console)
    except FatalError as exc:
        console.print(f"[red]demo failed[/]: {exc}")
        sys.exit(1)
    console.print(f"files, configs and daemon logs are in {base}")
    if not logs_ok:
        console.print("[red]some lines are missing or duplicated[/]")
    if not changes_ok:
        console.print("[red]the subscriber did not receive exactly the committed changes[/]")
    if not export_ok:
        console.print("[red]the export does not hold exactly the database's rows[/]")
    if not (logs_ok and changes_ok and export_ok):
        sys.exit(1)
    console.print(
        "[green]every line arrived exactly once, every committed change reached the subscriber, "
        "and the export holds every row[/]"
    )
