"""``headrace sink`` from a PostgreSQL source (rich column types) into Delta Lake tables on local disk:
writers throughout, the sink killed with SIGKILL inside the initial snapshot and later, a TRUNCATE and
an added column in the source while it is down; at the end the lake's current tables equal the source
(values compared as the lake holds them: uuids and enums as text, JSON and arrays as JSON text)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from db_servers import PgServer
from sink_support import sink_config
from support import wait_until
from test_bootstrap_postgres import TABLES, PgStack, Writers, _source_rows
from test_sink_lake import lake_checkpoint, lake_rows
from test_sink_postgres import dropped_after  # noqa: F401  (fixture)

pytestmark = pytest.mark.postgres
deltalake = pytest.importorskip("deltalake")

KEYS = {"accounts": ("id",), "lines": ("order_id", "line")}


def _same(src: Any, lake: Any) -> bool:
    if isinstance(src, dict | list):
        return isinstance(lake, str) and json.loads(lake) == src
    if src is not None and not isinstance(src, int | float | str | bytes | bool) and isinstance(lake, str):
        return str(src) == lake  # uuid
    return bool(src == lake)


def test_postgres_source_to_lake_with_kills_truncate_and_new_column(
    dropped_after: str,  # noqa: F811  (first: torn down after ``daemons`` killed the relay)
    pg_server: PgServer,
    tmp_path: Path,
    daemons: Any,
) -> None:
    stack = PgStack(pg_server, tmp_path, daemons, dropped_after, page_rows=2_000)
    uri = str(tmp_path / "lake")
    writers = Writers(pg_server, stack.db).start()
    rng = random.Random(11)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        target = {"type": "lake", "uri": uri, "batch_rows": 1500, "batch_seconds": 0.5}
        cfg = sink_config(tmp_path / "sink.yaml", stack.relay_url, stack.boot_url, target, sources=TABLES)
        sink = daemons(["sink", "--config", str(cfg)], "sink")
        sink.start()
        wait_until(lambda: lake_checkpoint(uri) is not None, 90, "a first commit", 0.02)
        sink.kill9()
        assert (lake_checkpoint(uri) or {}).get("phase") == "snapshot"  # killed inside the initial copy

        sink.start()
        wait_until(lambda: (lake_checkpoint(uri) or {}).get("phase") == "relay", 120, "the sink to reach the relay")
        time.sleep(rng.uniform(0.1, 1.0))  # a random kill moment (not a synchronisation)
        sink.kill9()

        pg_server.execute("ALTER TABLE accounts ADD COLUMN extra int", stack.db)
        pg_server.execute("UPDATE accounts SET extra = id WHERE id <= 50", stack.db)
        pg_server.execute("TRUNCATE lines", stack.db)
        pg_server.execute("INSERT INTO lines VALUES (-1, 1, 1, 'after truncate'), (-2, 2, 2, NULL)", stack.db)

        sink.start()
        last = (lake_checkpoint(uri) or {})["scn"]
        wait_until(lambda: (lake_checkpoint(uri) or {})["scn"] > last, 90, "the checkpoint to move")
        time.sleep(rng.uniform(0.1, 1.0))
        sink.kill9()

        writers.stop()
        sink.args = ["sink", "--config", str(cfg), "--idle-exit", "4"]
        sink.start()
        assert sink.proc is not None
        assert sink.proc.wait(180) == 0, sink.output()
    finally:
        if not writers.stop_event.is_set():
            writers.stop()
        stack.relay.kill9()
        stack.boot.kill9()

    src = _source_rows(pg_server, stack.db)
    rep: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    for table, key in KEYS.items():
        for r in lake_rows(uri, f"current/{table}"):
            r.pop("_headrace_key")
            rep[(table, tuple(r[k] for k in key))] = r
    missing, extra = src.keys() - rep.keys(), rep.keys() - src.keys()
    wrong = [
        (k, c, src[k][c], rep[k].get(c))
        for k in src.keys() & rep.keys()
        for c in src[k]
        if not _same(src[k][c], rep[k].get(c))
    ]
    assert not missing and not extra and not wrong, (sorted(missing)[:5], sorted(extra)[:5], wrong[:5])
    assert rep[("lines", (-1, 1))]["note"] == "after truncate"  # the truncate arrived, then the new rows
    assert sum(1 for t, _ in rep if t == "lines") < 100
    assert rep[("accounts", (7,))]["extra"] == 7 or ("accounts", (7,)) not in src  # the added column arrived
    # the truncate is in the change table, once, and every change once
    ch = lake_rows(uri, "changes/lines")
    assert sum(1 for r in ch if r["_headrace_op"] == "t") == 1
    for table in KEYS:
        rows = lake_rows(uri, f"changes/{table}")
        ids = [(r["_headrace_scn"], r["_headrace_index"]) for r in rows if r["_headrace_op"] != "r"]
        assert len(ids) == len(set(ids)), f"{table}: a change twice"
    assert (lake_checkpoint(uri) or {}).get("phase") == "relay"
