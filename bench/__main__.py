"""``python -m bench``: run the benchmarks with their peers, check them, record them, rebuild the README table.

Usage (from the repository root)::

    python -m bench                      # every benchmark at full size → bench/results/NAME.json, README table
    python -m bench --quick              # small sizes (a few minutes) → bench/results/quick/NAME.json
    python -m bench --only demux --only export_postgres
    python -m bench --table-only         # rebuild the README table from the JSON files already there
    python -m bench --list
    python -m bench --install-peers      # first apt-get install the peers' Debian packages (rsyslog, socat)

Each benchmark is a script in bench/ (see bench/_specs.py) that runs headrace and its peer in one run;
the harness runs it as a child process with the repository and tests/ on ``PYTHONPATH``, and:

* waits, before each benchmark, until the 1-minute load average is below ``--max-load`` (at most
  ``--load-wait`` seconds; whether the gate was met is recorded), and records the load before and after;
* takes the CPU seconds and peak RSS of the script's process tree from ``wait4`` (its own and its
  reaped children's; database servers started with ``pg_ctl`` or detached are not counted);
* checks completeness (the counts the script reports against the sizes asked for) before the figures
  count: an incomplete run is recorded with ``"complete": false`` and left out of the table;
* writes ``RESULTS/NAME.json`` (arguments, figures, table rows, load, CPU, RSS, machine facts,
  package versions) and rebuilds the table between ``<!-- bench:table -->`` and
  ``<!-- /bench:table -->`` in the README from every JSON file in RESULTS (``table.md`` next to them too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench._specs import BENCHES, BY_NAME, Bench, Row, argv

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BEGIN, END = "<!-- bench:table -->", "<!-- /bench:table -->"
PACKAGES = [
    "headrace",
    "pyarrow",
    "sqlalchemy",
    "psycopg2-binary",
    "fastavro",
    "httpx",
    "uvicorn",
    "starlette",
    "pymysql",
    "mysql-replication",
    "nats-py",
    "zstandard",
    "adbc-driver-postgresql",
    "duckdb",
]


def machine_facts() -> dict[str, Any]:
    """CPU count, Python, OS and the versions of the packages the benchmarks touch."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
    }


def load_gate(max_load: float, wait_s: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load``, at most ``wait_s`` seconds."""
    t0 = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        if load < max_load or time.monotonic() - t0 >= wait_s:
            break
        time.sleep(min(5.0, max(0.0, wait_s - (time.monotonic() - t0))))
    return {"max_load_1m": max_load, "waited_s": round(time.monotonic() - t0, 1), "met": load < max_load}


def missing_parts(bench: Bench) -> list[str]:
    """The programs (on PATH) and Python modules ``bench`` needs that are not here."""
    programs = [p for p in bench.needs if shutil.which(p) is None]
    return programs + [f"Python module {m}" for m in bench.modules if importlib.util.find_spec(m) is None]


def install_peers(benches: list[Bench]) -> None:
    """``apt-get install`` the Debian packages of the peer programs the chosen benchmarks miss.

    Installs only; every benchmark runs its peer as a private process with its own config (on a host
    whose init starts services, the package's own rsyslog service starts too: this is for bench machines).
    """
    packages = sorted({b.apt[p] for b in benches for p in b.needs if p in b.apt and shutil.which(p) is None})
    if packages:
        print(f"apt-get install -y {' '.join(packages)}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], check=True)


def run_one(bench: Bench, quick: bool, timeout: float, log_dir: Path) -> dict[str, Any]:
    """Run one benchmark script; its result, checks, load, CPU-s and peak RSS."""
    args = bench.quick if quick else bench.full
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        out = Path(tmp) / f"{bench.name}.json"
        cmd = [sys.executable, str(HERE / bench.script), *argv(args)]
        if bench.out_flag:
            cmd += [f"--{bench.out_flag}", str(out)]
        env = {
            **os.environ,
            "HEADRACE_BENCH_JSON": str(out),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        }
        log_path = log_dir / f"{bench.name}.log"
        load_before = os.getloadavg()
        started = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = started + timeout
            status, usage = 0, None
            while True:  # wait4 with a deadline: poll, then kill the whole group if it runs over
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
            proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        record: dict[str, Any] = {
            "name": bench.name,
            "script": f"bench/{bench.script}",
            "command": " ".join(["python", f"bench/{bench.script}", *argv(args)]),
            "args": args,
            "quick": quick,
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(wall, 1),
            "exit_code": proc.returncode,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2) if usage else None,
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1) if usage else None,
            "cpu_rss_scope": "the script's process and the children it reaped (not servers started with pg_ctl)",
        }
        result: dict[str, Any] = {}
        problems: list[str] = []
        if proc.returncode != 0:
            problems.append(f"exit code {proc.returncode}; log: {log_path}")
        if out.exists():
            result = json.loads(out.read_text())
        else:
            problems.append(f"no result written; log: {log_path}")
        if result:
            problems += bench.check(result, args)
        record["result"] = result
        record["problems"] = problems
        record["complete"] = not problems
        rows: list[Row] = []
        if not problems:
            try:
                rows = bench.rows(result)
            except (KeyError, TypeError, ZeroDivisionError) as exc:
                problems.append(f"table rows: {exc!r}")
                record["complete"] = False
        record["rows"] = rows
        return record


def render_table(results_dir: Path) -> str:
    """The performance table (markdown) from every complete NAME.json in ``results_dir``, in harness order."""
    lines = [
        "| what | headrace | peer in the same run | ratio | measured (UTC), load 1 min before → after | command |",
        "|---|---|---|---|---|---|",
    ]
    notes = set()
    for bench in BENCHES:
        path = results_dir / f"{bench.name}.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        if "rows" not in rec or not rec.get("complete"):
            continue  # a script's own JSON from a run by hand, or an incomplete run
        when = rec["when"][:16].replace("T", " ")
        load = f"{rec['load_before'][0]:.1f} → {rec['load_after'][0]:.1f}"
        gate = rec.get("load_gate", {}).get("max_load_1m") or 0.75 * (rec["machine"]["cpus"] or 1)
        if max(rec["load_before"][0], rec["load_after"][0]) > gate:
            load += " (loaded)"
            notes.add("loaded")
        cmd = f"`{rec['command']}`"
        if rec.get("quick"):
            notes.add("quick")
        for i, row in enumerate(rec["rows"]):
            first = i == 0
            lines.append(
                f"| {row['what']} | {row['headrace']} | {row['peer']} | {row['ratio']} | "
                f"{f'{when}, {load}' if first else ''} | {cmd if first else '(same run)'} |"
            )
    if "loaded" in notes:
        lines += [
            "",
            "(loaded): the 1-minute load average was above the load gate (0.75 × CPUs by default) during that "
            "run; its wall-clock figures are lower than an idle machine gives, the ratios are from the same run.",
        ]
    if "quick" in notes:
        lines += [
            "",
            "`--quick` sizes: start-up and fixed costs dominate these runs; they keep the harness working and "
            "are not comparable with full-size figures.",
        ]
    return "\n".join(lines)


def write_readme_table(readme: Path, table: str) -> None:
    """Replace the text between the table markers in ``readme``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes; results in bench/results/quick/")
    ap.add_argument("--only", action="append", choices=list(BY_NAME), metavar="NAME", help="run only NAME (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and their sizes")
    ap.add_argument("--results", type=Path, help="where NAME.json go (default bench/results, --quick: …/quick)")
    ap.add_argument(
        "--readme",
        type=Path,
        help="README whose table to rebuild (default README.md for full runs; quick runs touch none unless given)",
    )
    ap.add_argument("--no-readme", action="store_true", help="do not rebuild any README table")
    ap.add_argument("--table-only", action="store_true", help="run nothing; rebuild the table from the JSON files")
    ap.add_argument("--max-load", type=float, help="load gate: 1-minute load below this (default: 0.75 × CPUs)")
    ap.add_argument(
        "--load-wait", type=float, help="load gate: longest wait (default 90 s; quick: 0, load only recorded)"
    )
    ap.add_argument("--timeout", type=float, help="per benchmark, seconds (default 1800, quick 300)")
    ap.add_argument(
        "--install-peers", action="store_true", help="apt-get install the missing peer programs (rsyslog, socat) first"
    )
    a = ap.parse_args()

    if a.list:
        for b in BENCHES:
            print(f"{b.name:18} bench/{b.script:26} full: {' '.join(argv(b.full))}   quick: {' '.join(argv(b.quick))}")
        return
    results = a.results or (HERE / "results" / "quick" if a.quick else HERE / "results")
    results.mkdir(parents=True, exist_ok=True)
    readme = None if a.no_readme else (a.readme or (None if a.quick else ROOT / "README.md"))
    max_load = a.max_load if a.max_load is not None else 0.75 * (os.cpu_count() or 1)
    load_wait = a.load_wait if a.load_wait is not None else (0.0 if a.quick else 90.0)
    timeout = a.timeout or (300.0 if a.quick else 1800.0)
    facts = machine_facts()
    failed = []
    if not a.table_only:
        log_dir = Path(tempfile.mkdtemp(prefix="headrace-bench-logs-"))
        chosen = [BY_NAME[n] for n in a.only] if a.only else BENCHES
        if a.install_peers:
            install_peers(chosen)
        for bench in chosen:
            missing = missing_parts(bench)
            if missing:
                hint = " (--install-peers; Python modules: pip install 'headrace[bench]')"
                print(f"{bench.name:18} skipped: {', '.join(missing)} not found{hint}", flush=True)
                continue
            gate = load_gate(max_load, load_wait)
            met = "met" if gate["met"] else "NOT met"
            print(f"{bench.name:18} load {os.getloadavg()[0]:.2f} (gate {met}) …", end="")
            sys.stdout.flush()
            rec = run_one(bench, a.quick, timeout, log_dir)
            rec["load_gate"] = gate
            rec["machine"] = facts
            (results / f"{bench.name}.json").write_text(json.dumps(rec, indent=2) + "\n")
            if rec["complete"]:
                print(f" {rec['wall_s']} s, {rec['cpu_s']} CPU-s, peak RSS {rec['peak_rss_mib']} MiB")
                for row in rec["rows"]:
                    print(f"    {row['what']}: {row['headrace']} | {row['peer']} | {row['ratio']}")
            else:
                failed.append(bench.name)
                print(f" INCOMPLETE: {'; '.join(rec['problems'])}")
        print(f"logs in {log_dir}")
    table = render_table(results)
    (results / "table.md").write_text(table + "\n")
    if readme is not None:
        write_readme_table(readme, table)
        print(f"table rebuilt in {readme}")
    if failed:
        raise SystemExit(f"incomplete: {', '.join(failed)}")


if __name__ == "__main__":
    main()
