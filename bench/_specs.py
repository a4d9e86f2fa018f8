"""The benchmarks ``python -m bench`` knows: script, sizes (full and ``--quick``), completeness checks, table rows.

Each benchmark is one script in bench/ that runs headrace and its peer in the same process tree and
writes its figures as JSON (bench/_result.py). Here, per benchmark:

* ``full`` / ``quick``: the script's arguments (the full sizes are the ones the README quotes);
* ``check(result, args)``: what must hold before a speed counts (row and event counts, bytes acked);
  a non-empty list of problems marks the run incomplete;
* ``rows(result)``: rows of the README performance table (what, headrace, peer, ratio).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Args = dict[str, Any]
Result = dict[str, Any]
Row = dict[str, str]


@dataclass(frozen=True)
class Bench:
    """One named benchmark: a script in bench/ with its sizes, checks and table rows."""

    name: str
    script: str
    full: Args
    quick: Args
    check: Callable[[Result, Args], list[str]]
    rows: Callable[[Result], list[Row]]
    out_flag: str | None = None  # scripts that take their output path as a flag rather than HEADRACE_BENCH_JSON
    needs: tuple[str, ...] = field(default=())  # programs on PATH the benchmark needs
    modules: tuple[str, ...] = field(default=())  # Python modules it needs (the `bench` extra)
    apt: dict[str, str] = field(default_factory=dict)  # program → Debian package (`--install-peers`)


def argv(args: Args) -> list[str]:
    """``{"rows": 5, "codec": ["null"], "clean": True}`` → ``["--rows", "5", "--codec", "null", "--clean"]``."""
    out: list[str] = []
    for k, v in args.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):  # a switch: given when true
            out += [flag] if v else []
            continue
        for one in v if isinstance(v, list) else [v]:
            out += [flag, str(one)]
    return out


def _n(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}" if a and b else "—"


def _row(what: str, headrace: str, peer: str = "", ratio: str = "") -> Row:
    return {"what": what, "headrace": headrace, "peer": peer, "ratio": ratio}


def _missing(result: Result, *keys: str) -> list[str]:
    return [f"no {k!r} in the result" for k in keys if result.get(k) is None]


# collector ingest ------------------------------------------------------------------------------------------------


def _collector_check(r: Result, a: Args) -> list[str]:
    problems = _missing(r, "peer_http_only", "peer_write_fsync")
    for codec in a.get("codec", ["null", "deflate"]):
        problems += _missing(r, f"collector_{codec}")
    return problems + [f"{k}: nothing acked" for k, v in r.items() if isinstance(v, dict) and not v.get("mb_s")]


def _collector_rows(r: Result) -> list[Row]:
    c, h, w = r["collector_null"], r["peer_http_only"], r["peer_write_fsync"]
    return [
        _row(
            f"collector ingest, MB/s acked (fsynced, {r['posters']} posters of 1 MiB batches, {r['seconds']:g} s)",
            f"{c['mb_s']:.1f} ({c['cpu_ms_per_mb']:.1f} CPU-ms/MB)",
            f"bare HTTP server, no writes: {h['mb_s']:.1f}; write + fsync alone: {w['mb_s']:.1f}",
            f"{_ratio(c['mb_s'], h['mb_s'])} of HTTP, {_ratio(c['mb_s'], w['mb_s'])} of fsync",
        )
    ]


# agent throughput ------------------------------------------------------------------------------------------------


def _agent_check(r: Result, a: Args) -> list[str]:
    return _missing(r, "agent_mb_s", "peer_direct_shipper_mb_s") + (
        [] if r.get("bytes_acked") == r.get("bytes") else [f"acked {r.get('bytes_acked')} of {r.get('bytes')} bytes"]
    )


def _agent_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"agent, files → fsynced collector ack, MB/s ({r['mb']:g} MB, {r['files']} files)",
            _n(r["agent_mb_s"], 1),
            f"direct shipper, no files or spool: {_n(r['peer_direct_shipper_mb_s'], 1)}",
            _ratio(r["agent_mb_s"], r["peer_direct_shipper_mb_s"]),
        )
    ]


# log shipping and idle agent against rsyslog and socat ------------------------------------------------------------

SHIPPERS = ("headrace", "rsyslog", "socat")


def _ship_check(r: Result, a: Args) -> list[str]:
    problems = []
    for size in a.get("line_bytes", [100, 1024]):
        per = (r.get("sizes") or {}).get(str(size)) or {}
        for name in SHIPPERS:
            run = per.get(name)
            if run is None:
                problems.append(f"{size}-byte lines: no {name} run")
            elif not run.get("complete"):
                problems.append(
                    f"{size}-byte lines, {name}: {run.get('bytes_done')} of {run.get('bytes')} bytes, "
                    f"{run.get('lines_got')} of {run.get('lines')} lines, checksum ok: {run.get('lines_checksum_ok')}"
                )
    return problems


def _ship_rows(r: Result) -> list[Row]:
    rows = []
    for size, per in r["sizes"].items():
        h, rs, so = per["headrace"], per["rsyslog"], per["socat"]
        rows.append(
            _row(
                f"log shipping, {size}-byte lines, files → receiver, MB/s ({h['bytes'] / 1e6:.0f} MB in "
                f"{r['files']} files; headrace: agent → collector, fsynced acks; CPU-s per GB of both ends)",
                f"{h['mb_s']:.1f} ({h['cpu_s_per_gb']:g} CPU-s/GB)",
                f"rsyslog {r['rsyslog_version']} imfile → omfwd → imtcp → omfile: {rs['mb_s']:.1f} "
                f"({rs['cpu_s_per_gb']:g} CPU-s/GB); `socat` copy over TCP: {so['mb_s']:.1f} "
                f"({so['cpu_s_per_gb']:g} CPU-s/GB)",
                f"{_ratio(h['mb_s'], rs['mb_s'])}× rsyslog, {_ratio(h['mb_s'], so['mb_s'])} of socat",
            )
        )
    return rows


def _idle_check(r: Result, a: Args) -> list[str]:
    problems = []
    for name in ("headrace", "rsyslog"):
        run = r.get(name)
        if run is None:
            problems.append(f"no {name} run")
            continue
        if run.get("files_confirmed") != a["files"]:
            problems.append(f"{name}: {run.get('files_confirmed')} of {a['files']} files shipped before the window")
        lat = run.get("ack_latency_s") or []
        if len(lat) != a.get("appends", 5) or not all(x < 30 for x in lat):
            problems.append(f"{name}: appended lines not all delivered: {lat}")
    return problems


def _idle_rows(r: Result) -> list[Row]:
    h, rs = r["headrace"], r["rsyslog"]

    def fig(x: Result) -> str:
        return (
            f"{x['cpu_percent']:.3g} % CPU, {x['wakeups_per_s']:g} wakeups/s, {x['rss_mib']:.1f} MiB RSS; "
            f"appended line delivered in {x['ack_latency_s_median']:.3g} s (median)"
        )

    return [
        _row(
            f"idle agent, {r['files']:,} quiet files, {r['seconds']:g} s "
            "(headrace: appended line acked by the collector)",
            fig(h),
            f"rsyslog imfile (inotify) → omfwd, its sending rsyslogd: {fig(rs)} (in the output file, no ack)",
            f"{_ratio(h['rss_mib'], rs['rss_mib'])}× the RSS",
        )
    ]


# demux against DuckDB --------------------------------------------------------------------------------------------

DUCKDB_PEER = {
    "combined": "DuckDB `regexp_extract` → Parquet",
    "json": "DuckDB `read_json` → Parquet",
    "json_clean": "DuckDB `read_json` → Parquet",
    "syslog": "DuckDB `regexp_extract` → Parquet",
}


def _duckdb_check(r: Result, a: Args) -> list[str]:
    problems = []
    per = r.get("results") or {}
    kinds = ["combined", "json", "syslog"] + (["json_clean"] if a.get("clean") else [])
    for kind in kinds:
        want = a["lines"] if kind == "combined" else a["others"]
        k = per.get(kind)
        if k is None:
            problems.append(f"no {kind} run")
            continue
        for side in ("headrace", "duckdb"):
            if k[side]["accounted"] != want:
                problems.append(f"{kind}, {side}: {k[side]['accounted']} lines accounted for (rows + errors), {want}")
    return problems


def _duckdb_rows(r: Result) -> list[Row]:
    rows = []
    for kind, k in r["results"].items():
        h, d = k["headrace"], k["duckdb"]
        bad = f"{k['bad_lines']} bad" if k["bad_lines"] else "no bad lines"
        rows.append(
            _row(
                f"demux `{kind.replace('_clean', '')}` → Parquet vs DuckDB, lines/s ({k['lines']:,} varied lines, {bad}"
                f"; rows/errors: headrace {h['rows']:,}/{h['errors']:,}, DuckDB {d['rows']:,}/{d['rejected']:,})",
                _n(h["lines_per_s"]),
                f"{DUCKDB_PEER[kind]} ({r['duckdb_threads']} threads): {_n(d['lines_per_s'])}",
                _ratio(h["lines_per_s"], d["lines_per_s"]),
            )
        )
    return rows


# demux -----------------------------------------------------------------------------------------------------------


def _demux_check(r: Result, a: Args) -> list[str]:
    per = r.get("results") or {}
    problems = []
    for kind in ["combined", "json", "syslog", "regex", "raw"]:
        want = a["lines"] if kind == "combined" else a["others"]
        got = (per.get(kind) or {}).get("lines")
        if got != want:  # the script asserts run_demux's summary: records == lines, errors == 0
            problems.append(f"demux {kind}: {got} lines, expected {want}")
    if "combined_peer_python_re" not in per:
        problems.append("no peer run")
    return problems


def _demux_rows(r: Result) -> list[Row]:
    per = r["results"]
    c, p = per["combined"], per["combined_peer_python_re"]
    z, d = per["combined_archive_zstandard"], per["combined_archive_deflate"]
    others = ", ".join(f"`{k}` {_n(per[k]['lines_per_s'])}" for k in ["json", "regex", "syslog", "raw"] if k in per)
    return [
        _row(
            f"demux `combined` → Parquet, lines/s ({c['lines']:,} lines)",
            _n(c["lines_per_s"]),
            f"Python `re` loop + Parquet: {_n(p['lines_per_s'])}",
            _ratio(c["lines_per_s"], p["lines_per_s"]),
        ),
        _row(
            "archive build (sink files → zstandard parts), MB/s",
            _n(z["mb_per_s"], 1),
            f"the same with `deflate` parts: {_n(d['mb_per_s'], 1)}",
            _ratio(z["mb_per_s"], d["mb_per_s"]),
        ),
        _row(f"demux, other processors, lines/s ({per['json']['lines']:,} lines)", others),
    ]


# export ----------------------------------------------------------------------------------------------------------


def _export_check(r: Result, a: Args) -> list[str]:
    # the script asserts run_export's summary (ok, records == rows) before it times anything else
    problems = _missing(r, "headrace_export_rows_per_s", "peer_copy_binary_rows_per_s")
    if r.get("paths_agree") is False:
        problems.append("the default reader and the reference path wrote different values")
    return problems + ([] if r.get("rows") == a["rows"] else [f"exported {r.get('rows')} rows, expected {a['rows']}"])


def _export_rows(r: Result) -> list[Row]:
    rows = [
        _row(
            f"export, PostgreSQL table → Parquet, rows/s ({r['rows']:,} rows, 8 columns; reader: "
            f"{r.get('headrace_export_reader', 'sqlalchemy')})",
            _n(r["headrace_export_rows_per_s"]),
            f"`COPY … TO STDOUT (FORMAT binary)`, nothing parsed: {_n(r['peer_copy_binary_rows_per_s'])}",
            _ratio(r["headrace_export_rows_per_s"], r["peer_copy_binary_rows_per_s"]),
        )
    ]
    if r.get("reference_export_rows_per_s"):
        rows.append(
            _row(
                "export, the reference path (SQLAlchemy rows → Arrow), rows/s",
                _n(r["reference_export_rows_per_s"]),
                f"COPY binary: {_n(r['peer_copy_binary_rows_per_s'])}",
                _ratio(r["reference_export_rows_per_s"], r["peer_copy_binary_rows_per_s"]),
            )
        )
    for source, key, peer, peer_key in (
        ("SQLite", "sqlite_export_rows_per_s", "`sqlite3` `fetchmany` of the same SELECT", "peer_sqlite3_rows_per_s"),
        ("MariaDB", "mariadb_export_rows_per_s", "PyMySQL unbuffered `fetchmany`", "peer_pymysql_rows_per_s"),
    ):
        if r.get(key):
            rows.append(
                _row(
                    f"export, {source} table → Parquet, rows/s (same 8 columns; reader: sqlalchemy)",
                    _n(r[key]),
                    f"{peer}: {_n(r.get(peer_key))}",
                    _ratio(r[key], r.get(peer_key)),
                )
            )
    return rows


# relays ----------------------------------------------------------------------------------------------------------


def _latency_events_check(r: Result, a: Args) -> list[str]:
    want = int(a["seconds"] * a["rate"]) * a.get("rows", 5)
    got = r.get("latency_events")
    return [] if got is None or got >= want else [f"latency run: {got} events delivered, expected {want}"]


def _relay_check(*keys: str) -> Callable[[Result, Args], list[str]]:
    def check(r: Result, a: Args) -> list[str]:
        # the scripts follow the relay until txns × rows events have arrived (or time out)
        problems = _missing(r, *keys)
        if r.get("txns") != a["txns"]:
            problems.append(f"{r.get('txns')} transactions, expected {a['txns']}")
        return problems + _latency_events_check(r, a)

    return check


def _reached(r: Result) -> str:
    """The latency run's achieved commit rate, where the benchmark records it (a writer that fell behind
    its target rate would flatter the latency)."""
    got = r.get("latency_rate_achieved_txn_per_s")
    return f" (writer reached {got:,})" if got is not None else ""


def _relay_rows(source: str, eps: str, peer_name: str, peer: str) -> Callable[[Result], list[Row]]:
    def rows(r: Result) -> list[Row]:
        return [
            _row(
                f"relay, {source}, commit → subscriber, events/s ({r['txns']:,} txns × {r['rows_per_txn']} rows)",
                _n(r[eps]),
                f"{peer_name}: {_n(r[peer])}",
                _ratio(r[eps], r[peer]),
            ),
            _row(
                f"relay, {source}, commit → delivery latency at {r['latency_rate_txn_per_s']:g} txn/s" + _reached(r),
                f"p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms",
            ),
        ]

    return rows


# bootstrap -------------------------------------------------------------------------------------------------------


def _boot_sqlite_check(r: Result, a: Args) -> list[str]:
    problems = _missing(r, "snapshot_serving_rows_per_s", "peer_sqlite_read_rows_per_s")
    if r.get("rows") != a["rows"]:
        problems.append(f"{r.get('rows')} rows, expected {a['rows']}")
    if (r.get("subscriber_events") or 0) < a["rows"]:
        problems.append(f"new subscriber got {r.get('subscriber_events')} events, fewer than the {a['rows']} rows")
    return problems


def _boot_sqlite_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"bootstrap, snapshot serving, rows/s ({r['rows']:,}-row table)",
            _n(r["snapshot_serving_rows_per_s"]),
            f"reading the table directly: {_n(r['peer_sqlite_read_rows_per_s'])}"
            + (
                f"; the server alone (frames not parsed): {_n(r['snapshot_server_only_rows_per_s'])}"
                if r.get("snapshot_server_only_rows_per_s")
                else ""
            ),
            _ratio(r["snapshot_serving_rows_per_s"], r["peer_sqlite_read_rows_per_s"]),
        ),
        _row(
            f"bootstrap, new subscriber of a {r['rows']:,}-row table until it is on the relay",
            f"{r['new_subscriber_to_relay_seconds']} s",
        ),
    ]


def _fanout_check(r: Result, a: Args) -> list[str]:
    problems = _missing(r, "reference_ok", "subscriber_library_ok")
    if r.get("events") != a["events"]:
        problems.append(f"{r.get('events')} events in the buffer, expected {a['events']}")
    for key in ("reference_ok", "subscriber_library_ok"):
        if r.get(key) is False:
            problems.append(f"{key}: the reference read did not see every event exactly once")
    for mib in a.get("response_mib", [8, 1]):
        run = r.get(f"fanout_{mib}mib")
        if run is None:
            problems.append(f"no {mib} MiB fan-out run")
        elif run["complete_subscribers"] != a["subscribers"]:
            problems.append(
                f"{mib} MiB: {run['complete_subscribers']} of {a['subscribers']} subscribers got every event "
                f"exactly once: {run['incomplete']}"
            )
    return problems


def _fanout_rows(r: Result) -> list[Row]:
    rows = []
    for key in sorted((k for k in r if k.startswith("fanout_")), key=lambda k: -r[k]["max_bytes_mib"]):
        f = r[key]
        rows.append(
            _row(
                f"relay fan-out, {r['subscribers']} subscribers each reading a {r['events']:,}-event buffer "
                f"({r['buffer_bytes_mib']:g} MiB held, {r['buffer_capacity_mib']:g} MiB configured), "
                f"{f['max_bytes_mib']} MiB responses: events/s delivered in all; relay peak RSS",
                f"{_n(f['events_per_s'])} ({f['relay_cpu_us_per_event']:g} relay CPU-µs/event); "
                f"{f['relay_peak_rss_mib']:g} MiB RSS (+{f['relay_peak_rss_over_filled_mib']:g} MiB over the "
                "filled relay)",
                f"target: ≥ 1,000,000 events/s; RSS ≤ buffer + 64 MiB ({r['buffer_capacity_mib'] + 64:g} MiB)",
                f"{_ratio(f['events_per_s'], 1e6)}× the events/s target",
            )
        )
    return rows


def _boot_pg_check(r: Result, a: Args) -> list[str]:
    want = a["rows"] + 2000  # plus the composite-key table's 2,000 rows
    problems = _missing(r, "rows_per_s", "peer_copy_binary_rows_per_s")
    if r.get("rows") != want:
        problems.append(f"seeded {r.get('rows')} rows, expected {want}")
    if r.get("peer_copy_binary_rows") != want or r.get("table_rows") != want:
        problems.append(f"COPY gave {r.get('peer_copy_binary_rows')} rows of {r.get('table_rows')}, expected {want}")
    return problems


def _boot_pg_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"bootstrap, seeding from PostgreSQL, rows/s ({r['rows']:,} rows)",
            _n(r["rows_per_s"]),
            f"`COPY … TO STDOUT (FORMAT binary)` of the same tables, nothing decoded: "
            f"{_n(r['peer_copy_binary_rows_per_s'])}",
            _ratio(r["rows_per_s"], r["peer_copy_binary_rows_per_s"]),
        )
    ]


# sinks -----------------------------------------------------------------------------------------------------------


def _sink_sql_check(r: Result, a: Args) -> list[str]:
    # the script counts the target table's rows after the end-to-end run and waits for the checkpoint
    problems = _missing(r, "sink_end_to_end_rows_per_s", "peer_copy_csv_rows_per_s")
    return problems + ([] if r.get("rows") == a["rows"] else [f"{r.get('rows')} rows, expected {a['rows']}"])


def _sink_sql_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"sink `sql` → PostgreSQL, end to end (relay → upserts + checkpoint), rows/s ({r['rows']:,} rows, "
            f"windows of {r['rows_per_window']})",
            _n(r["sink_end_to_end_rows_per_s"]),
            f"`COPY … FROM STDIN`: {_n(r['peer_copy_csv_rows_per_s'])}; `execute_values` insert: "
            f"{_n(r['peer_execute_values_insert_rows_per_s'])}",
            _ratio(r["sink_end_to_end_rows_per_s"], r["peer_copy_csv_rows_per_s"]),
        ),
        _row(
            "sink `sql` target alone (decoded windows → upsert transactions), rows/s",
            _n(r["sink_target_only_rows_per_s"]),
            f"`execute_values` insert: {_n(r['peer_execute_values_insert_rows_per_s'])}",
            _ratio(r["sink_target_only_rows_per_s"], r["peer_execute_values_insert_rows_per_s"]),
        ),
    ]


def _sink_nats_check(r: Result, a: Args) -> list[str]:
    problems = _missing(r, "sink_target_events_per_s", "peer_publish_async_events_per_s")
    return problems + ([] if r.get("events") == a["events"] else [f"{r.get('events')} events, expected {a['events']}"])


def _sink_nats_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"sink `nats` → JetStream, events/s (msg ids, headers, acks, KV checkpoint; {r['events']:,} events)",
            _n(r["sink_target_events_per_s"]),
            f"nats-py `publish_async` of the same bodies: {_n(r['peer_publish_async_events_per_s'])}",
            _ratio(r["sink_target_events_per_s"], r["peer_publish_async_events_per_s"]),
        )
    ]


def _sink_lake_check(r: Result, a: Args) -> list[str]:
    problems = _missing(r, "sink_target_events_per_s", "peer_write_deltalake_events_per_s")
    for k in ("events", "current_rows", "change_rows"):
        if r.get(k) != a["events"]:
            problems.append(f"{k}: {r.get(k)}, expected {a['events']}")
    return problems


def _sink_lake_rows(r: Result) -> list[Row]:
    return [
        _row(
            f"sink `lake` → Delta Lake, events/s (change append + current MERGE + log, checkpoint in each commit; "
            f"{r['events']:,} events, {r['events_per_commit']:,} per commit)",
            _n(r["sink_target_events_per_s"]),
            f"deltalake `write_deltalake` of the same rows, one append: {_n(r['peer_write_deltalake_events_per_s'])}",
            _ratio(r["sink_target_events_per_s"], r["peer_write_deltalake_events_per_s"]),
        )
    ]


# wire compression and TLS ----------------------------------------------------------------------------------------


def _wire_check(r: Result, a: Args) -> list[str]:
    data = (r.get("corpus") or {}).get("data_bytes")
    modes = r.get("results") or []
    if len(modes) != 3:
        return [f"{len(modes)} modes measured, expected 3"]
    return [f"{m['mode']}: {m['data_bytes']} bytes acked, corpus {data}" for m in modes if m["data_bytes"] != data]


def _wire_rows(r: Result) -> list[Row]:
    by = {m["mode"]: m for m in r["results"]}
    none, z1, z3 = by["none"], by["zstd-1"], by["zstd-3"]
    return [
        _row(
            f"wire compression, agent → collector, bytes on the wire ({r['corpus']['data_bytes'] / 1e6:.0f} MB of "
            "varied access/JSON/syslog/traceback lines)",
            f"zstd level 3: {z3['wire_bytes'] / 1e6:.1f} MB, +{z3['extra_cpu_s_per_gb_saved']} CPU-s per GB saved; "
            f"level 1: {z1['wire_bytes'] / 1e6:.1f} MB, +{z1['extra_cpu_s_per_gb_saved']} CPU-s/GB",
            f"uncompressed: {none['wire_bytes'] / 1e6:.1f} MB",
            f"{none['wire_bytes'] / z3['wire_bytes']:.2g}× smaller",
        )
    ]


def _tls_check(r: Result, a: Args) -> list[str]:
    # the shipper raises unless every batch is acked; both runs ship the same bytes
    problems = _missing(r, "http", "https")
    if not problems and r["http"]["mb"] != r["https"]["mb"]:
        problems.append("the two runs shipped different amounts")
    return problems


def _tls_rows(r: Result) -> list[Row]:
    h, s = r["http"], r["https"]
    extra_col = 1000 * (s["collector_cpu_s"] - h["collector_cpu_s"]) / s["mb"]
    extra_ship = 1000 * (s["shipper_cpu_s"] - h["shipper_cpu_s"]) / s["mb"]
    return [
        _row(
            f"TLS (mTLS, TLS 1.3), agent shipper → collector, MB/s acked ({s['mb']:g} MB)",
            f"{s['mb_s']:.1f} (collector {extra_col:+.1f} ms, shipper {extra_ship:+.1f} ms CPU per MB)",
            f"plain HTTP: {h['mb_s']:.1f}",
            _ratio(s["mb_s"], h["mb_s"]),
        )
    ]


BENCHES: list[Bench] = [
    Bench(
        "collector_ingest",
        "collector_ingest.py",
        {"seconds": 8},
        {"seconds": 1, "codec": ["null"]},
        _collector_check,
        _collector_rows,
    ),
    Bench(
        "agent_throughput",
        "agent_throughput.py",
        {"mb": 200, "files": 20},
        {"mb": 16, "files": 4},
        _agent_check,
        _agent_rows,
    ),
    Bench(
        "ship_peers",
        "ship_peers.py",
        {"mb": 200, "files": 20, "line_bytes": [100, 1024], "repeat": 2},
        {"mb": 4, "files": 2, "line_bytes": [100, 1024], "repeat": 1},
        _ship_check,
        _ship_rows,
        needs=("rsyslogd", "socat"),
        apt={"rsyslogd": "rsyslog", "socat": "socat"},
    ),
    Bench(
        "idle_agent",
        "idle_agent.py",
        {"files": 1000, "seconds": 60, "appends": 5},
        {"files": 200, "seconds": 3, "appends": 2},
        _idle_check,
        _idle_rows,
        needs=("rsyslogd",),
        apt={"rsyslogd": "rsyslog"},
    ),
    Bench(
        "demux",
        "bench_demux.py",
        {"lines": 1_000_000, "others": 300_000, "repeat": 3},
        {"lines": 50_000, "others": 20_000, "repeat": 1},
        _demux_check,
        _demux_rows,
        out_flag="out",
    ),
    Bench(
        "demux_duckdb",
        "demux_duckdb.py",
        {"lines": 1_000_000, "others": 500_000, "repeat": 3, "clean": True},
        {"lines": 50_000, "others": 20_000, "repeat": 1},
        _duckdb_check,
        _duckdb_rows,
        modules=("duckdb",),
    ),
    Bench(
        "export_postgres",
        "export_postgres.py",
        {"rows": 1_000_000, "repeat": 3},
        {"rows": 20_000, "repeat": 1},
        _export_check,
        _export_rows,
        needs=("initdb", "pg_ctl"),
    ),
    Bench(
        "relay_sqlite",
        "relay_sqlite.py",
        {"txns": 10_000, "rows": 5, "rate": 200, "seconds": 10},
        {"txns": 1_000, "rows": 5, "rate": 200, "seconds": 2},
        _relay_check("relay_events_per_s", "peer_changelog_read_events_per_s"),
        _relay_rows(
            "SQLite", "relay_events_per_s", "reading the change log directly", "peer_changelog_read_events_per_s"
        ),
    ),
    Bench(
        "relay_postgres",
        "bench_relay_postgres.py",
        {"txns": 20_000, "rows": 5, "rate": 1000, "seconds": 10},  # the latency target: 1,000 tx/s
        {"txns": 1_000, "rows": 5, "rate": 1000, "seconds": 2},
        _relay_check("relay_subscriber_events_per_s", "pg_recvlogical_events_per_s"),
        _relay_rows(
            "PostgreSQL",
            "relay_subscriber_events_per_s",
            "`pg_recvlogical` (server decoding only)",
            "pg_recvlogical_events_per_s",
        ),
        needs=("initdb", "pg_ctl", "pg_recvlogical"),
    ),
    Bench(
        "relay_mysql",
        "bench_relay_mysql.py",
        {"txns": 20_000, "rows": 5, "rate": 200, "seconds": 10},
        {"txns": 1_000, "rows": 5, "rate": 200, "seconds": 2},
        _relay_check("relay_subscriber_events_per_s", "mariadb_binlog_events_per_s"),
        _relay_rows(
            "MariaDB",
            "relay_subscriber_events_per_s",
            "`mariadb-binlog` reading the same binlog (rows left encoded)",
            "mariadb_binlog_events_per_s",
        ),
        needs=("mariadbd", "mariadb-binlog"),
    ),
    Bench(
        "relay_fanout",
        "relay_fanout.py",
        {"events": 1_000_000, "subscribers": 100, "response_mib": [8, 1], "workers": 4},
        {"events": 100_000, "subscribers": 100, "response_mib": [8, 1], "workers": 4},
        _fanout_check,
        _fanout_rows,
    ),
    Bench(
        "bootstrap_sqlite",
        "bootstrap_sqlite.py",
        {"rows": 1_000_000, "write_sleep_ms": 50},
        {"rows": 20_000, "write_sleep_ms": 50},
        _boot_sqlite_check,
        _boot_sqlite_rows,
    ),
    Bench(
        "bootstrap_pg_seed",
        "bootstrap_pg_seed.py",
        {"rows": 100_000},
        {"rows": 5_000},
        _boot_pg_check,
        _boot_pg_rows,
        needs=("initdb", "pg_ctl"),
    ),
    Bench(
        "sink_sql",
        "sink_sql.py",
        {"rows": 200_000},
        {"rows": 5_000},
        _sink_sql_check,
        _sink_sql_rows,
        needs=("initdb", "pg_ctl"),
    ),
    Bench(
        "sink_nats",
        "sink_nats.py",
        {"events": 100_000},
        {"events": 5_000},
        _sink_nats_check,
        _sink_nats_rows,
        needs=("nats-server",),
    ),
    Bench(
        "sink_lake",
        "sink_lake.py",
        {"events": 100_000},
        {"events": 10_000, "commit_events": 2_000},
        _sink_lake_check,
        _sink_lake_rows,
    ),
    Bench(
        "wire_compression",
        "wire_compression.py",
        {"mb": 256, "files": 16, "repeat": 3},
        {"mb": 8, "files": 2, "repeat": 1},
        _wire_check,
        _wire_rows,
        out_flag="out",
    ),
    Bench("tls_overhead", "tls_overhead.py", {"mb": 400}, {"mb": 16}, _tls_check, _tls_rows),
]

BY_NAME = {b.name: b for b in BENCHES}
