"""Helpers for ``headrace verify`` tests: a typed PostgreSQL source table, replicas written by the
real ``sink sql`` target code, the CLI run as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from headrace._db import create_engine
from headrace.relay._schema import avro_schema, schema_fingerprint, table_meta_from_sqlalchemy
from headrace.relay.client import Checkpoint
from headrace.sinks._config import SqlTarget
from headrace.sinks._plan import KEY_COLUMN, Upsert, key_text
from headrace.sinks._sql import SqlSinkTarget

ROOT = Path(__file__).resolve().parents[1]

#: every kind the issue names: NULLs, decimals, timestamps, bytes, unicode text (and more)
ITEMS_DDL = """
CREATE TABLE items (
    id bigint PRIMARY KEY,
    name text,
    amount numeric(14, 2),
    ratio double precision,
    at timestamptz,
    local_at timestamp(6),
    day date,
    payload bytea,
    flag boolean,
    ref uuid
)"""

ITEMS_FILL = """
INSERT INTO items
SELECT i,
       CASE WHEN i % 11 = 0 THEN NULL ELSE 'név ' || i || ' 名前 😀' END,
       CASE WHEN i % 13 = 0 THEN NULL ELSE (i * 1.25)::numeric(14, 2) END,
       CASE WHEN i % 17 = 0 THEN NULL ELSE i / 7.0 END,
       CASE WHEN i % 19 = 0 THEN NULL ELSE timestamptz '2026-01-01 00:00:00+00' + i * interval '1.000001 s' END,
       timestamp '2025-06-30 12:00:00.5' + i * interval '1 min',
       date '2020-02-29' + (i % 1000),
       CASE WHEN i % 23 = 0 THEN NULL ELSE decode(lpad(to_hex(i), 8, '0') || '00ff', 'hex') END,
       i % 2 = 0,
       overlay(overlay(md5(i::text) placing '4' from 13) placing '8' from 17)::uuid  -- valid v4 (MariaDB checks)
FROM generate_series(1, {n}) AS i"""


def make_items(url: str, n: int) -> None:
    """Create and fill ``items`` with ``n`` rows at ``url`` (PostgreSQL)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS items"))
        conn.execute(sa.text(ITEMS_DDL))
        conn.execute(sa.text(ITEMS_FILL.format(n=n)))
    engine.dispose()


def replicate(source_url: str, table: str, target_url: str) -> None:
    """Copy ``table`` into ``target_url`` through the ``sink sql`` target, as ``headrace sink`` writes it
    (the relay's schema of the table, values as a subscriber decodes them, one upsert)."""
    src = create_engine(source_url)
    t = sa.Table(table, sa.MetaData(), autoload_with=src)
    meta = table_meta_from_sqlalchemy(t)
    schema = avro_schema(meta)
    with src.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(t))]
    src.dispose()
    for r in rows:
        r[KEY_COLUMN] = key_text([r[k] for k in meta.key])
    target = SqlSinkTarget(SqlTarget(type="sql", url=target_url), "verify-test")
    try:
        target.ensure(table, schema_fingerprint(schema), schema)
        cols = tuple(c.name for c in meta.columns)
        target.apply([Upsert(table, cols, rows)], Checkpoint(1, "relay", {}))
    finally:
        target.close()


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for s in statements:
            conn.execute(sa.text(s))
    engine.dispose()


def run_verify(*args: str, process: bool = False) -> tuple[int, dict[str, Any], str]:
    """``headrace verify … --json``: exit code, the JSON report (or {}), stderr. In this process through
    click's runner (a process start costs seconds on a loaded machine), or as a process."""
    argv = ["verify", *args, "--json", "--log-format", "json"]
    if process:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.run(
            [sys.executable, "-m", "headrace", *argv], capture_output=True, text=True, env=env, timeout=600
        )
        code, out, err = p.returncode, p.stdout, p.stderr
    else:
        from click.testing import CliRunner

        from headrace.cli import main

        r = CliRunner().invoke(main, argv, catch_exceptions=False)
        code, out, err = r.exit_code, r.stdout, r.stderr
    report = json.loads(out) if out.strip() else {}
    return code, report, err
