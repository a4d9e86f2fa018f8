"""archive → demux → load from the command line: every line in its table once, bad lines in _errors,
re-runs idempotent, new data grows partitions and schemas; also on PostgreSQL and on S3."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa
from archive_support import DAY1_MS, DEMUX_TYPES, corpus, corpus_sinks
from support import free_port, write_config

from headrace._db import create_engine
from headrace.batch import ArchiveConfig, DemuxConfig, LoadConfig, run_archive, run_demux, run_load


def sections(tmp: Path, url: str, archive: str | None = None, tables: str | None = None) -> dict[str, Any]:
    archive = archive or str(tmp / "archive")
    tables = tables or str(tmp / "tables")
    return {
        "archive": {"sink_dir": str(tmp / "sink"), "archive_dir": archive, "part_bytes": 200_000},
        "demux": {"archive_dir": archive, "output": tables, "types": DEMUX_TYPES, "batch_bytes": 100_000},
        "load": {"input": tables, "url": url},
    }


def cli(cmd: str, cfg: Path) -> str:
    p = subprocess.run([sys.executable, "-m", "headrace", cmd, "--config", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    summary = next(line for line in p.stdout.splitlines() if line.startswith(f"headrace {cmd}:"))
    assert summary.startswith(f"headrace {cmd}: ok:") and "MB/s" in summary, summary
    return summary


def run_api(secs: dict[str, Any]) -> None:
    for job, model, fn in (
        ("archive", ArchiveConfig, run_archive),
        ("demux", DemuxConfig, run_demux),
        ("load", LoadConfig, run_load),
    ):
        summary = fn(model.model_validate(secs[job]))  # type: ignore[operator]
        assert summary.ok, summary.failures


def check_tables(engine: sa.Engine, data: dict[str, dict[str, Any]], factor: int = 1) -> None:
    with engine.connect() as conn:
        for t, v in data.items():
            rows = conn.execute(sa.text(f"SELECT count(*) FROM logs_{t}")).scalar()
            assert rows == v["good"] * factor, f"{t}: {rows} rows, wrote {v['good'] * factor} good lines"
            for expr, total in v["check"].items():
                got = conn.execute(sa.text(f"SELECT {expr} FROM logs_{t}")).scalar()
                assert got == total * factor, f"{t}: {expr} = {got}, expected {total * factor}"
            dups = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM (SELECT _stream, _offset FROM logs_{t} "
                    "GROUP BY _stream, _offset HAVING count(*) > 1) d"
                )
            ).scalar()
            assert dups == 0


def check_errors(tables: str, data: dict[str, dict[str, Any]], filesystem: Any = None) -> None:
    errors = ds.dataset(f"{tables}/_errors", format="parquet", partitioning="hive", filesystem=filesystem).to_table()
    got = sorted((r["data_type"], r["raw"]) for r in errors.to_pylist())
    want = sorted((t, line.decode().rstrip("\n")) for t, v in data.items() for line in v["bad_lines"])
    assert got == want
    assert all(r["reason"] and r["_stream"] and r["_offset"] >= 0 for r in errors.to_pylist())


def test_cli_flow_sqlite_idempotent_and_growing(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = corpus(400)
    corpus_sinks(tmp_path / "sink" / "done", data, rng)
    db = tmp_path / "logs.db"
    cfg = write_config(tmp_path / "headrace.yaml", sections(tmp_path, f"sqlite:///{db}"))
    cli("archive", cfg)
    demux_line = cli("demux", cfg)
    assert (
        f"{sum(v['good'] for v in data.values())} records, {sum(v['bad'] for v in data.values())} errors" in demux_line
    )
    cli("load", cfg)
    engine = sa.create_engine(f"sqlite:///{db}")
    check_tables(engine, data)
    check_errors(str(tmp_path / "tables"), data)
    # Parquet: hive partitions, typed columns, origin columns that point at the line's bytes
    web = ds.dataset(str(tmp_path / "tables" / "data_type=web"), format="parquet", partitioning="hive").to_table()
    assert (
        str(web.schema.field("time").type) == "timestamp[us, tz=UTC]" and str(web.schema.field("size").type) == "int64"
    )
    stream = b"".join(data["web"]["lines"])
    for r in web.slice(0, 50).to_pylist():
        line = stream[r["_offset"] :].split(b"\n", 1)[0].decode()
        assert f'"{r["request"]}" {r["status"]} {r["size"]}' in line

    # the database holds the same typed values as the Parquet table
    logs_web = sa.Table("logs_web", sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(logs_web).order_by(logs_web.c._offset).limit(20)).mappings().all()
    pq_rows = sorted(web.to_pylist(), key=lambda r: r["_offset"])[:20]
    for db_row, pq_row in zip(rows, pq_rows, strict=True):
        assert db_row["time"] == pq_row["time"]  # stored in UTC with its zone, read back zoned
        assert (db_row["status"], db_row["size"], db_row["path"]) == (pq_row["status"], pq_row["size"], pq_row["path"])
        assert str(db_row["_date"]) == str(pq_row["date"])
    # the stored text carries its zone: SQLite's own date functions read it as UTC
    with engine.connect() as conn:
        text, epoch = conn.execute(
            sa.text("SELECT time, CAST(strftime('%s', time) AS INTEGER) FROM logs_web ORDER BY _offset LIMIT 1")
        ).one()
    assert text.endswith("+00:00"), text
    assert epoch == int(pq_rows[0]["time"].timestamp())

    # idempotent: demux and load again change nothing
    cli("demux", cfg)
    cli("load", cfg)
    check_tables(engine, data)

    # more data for the same day (a second stream of each type, JSON grew a field): partitions grow
    more = corpus(400, extra_json_field=True)
    corpus_sinks(tmp_path / "sink" / "done", more, rng, received_ms=DAY1_MS + 60_000, stream_prefix="b-")
    cli("archive", cfg)
    cli("demux", cfg)
    cli("load", cfg)
    check_tables(engine, data, factor=2)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(new_field) FROM logs_app")).scalar() == more["app"]["good"]
    engine.dispose()


@pytest.mark.postgres
def test_flow_into_postgresql_idempotent(tmp_path: Path, pg_server: Any) -> None:
    data = corpus(300, seed=5)
    corpus_sinks(tmp_path / "sink" / "done", data, random.Random(5))
    url = pg_server.url(pg_server.create_database("headrace_load"))
    secs = sections(tmp_path, url)
    run_api(secs)
    engine = create_engine(url)  # the bare postgresql:// URL a user writes, resolved as load resolves it
    check_tables(engine, data)
    summary = run_load(LoadConfig.model_validate(secs["load"]))
    assert summary.ok and summary.records == 0, "unchanged partitions are skipped"
    # force a reload of every partition: still the same rows, once
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM _headrace_loads"))
    assert run_load(LoadConfig.model_validate(secs["load"])).records == sum(v["good"] for v in data.values())
    check_tables(engine, data)
    with engine.connect() as conn:
        col = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("logs_web")}
    assert isinstance(col["time"], sa.DateTime) and isinstance(col["status"], sa.BigInteger)
    engine.dispose()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="logs")
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def test_flow_on_s3(tmp_path: Path, s3: str) -> None:
    data = corpus(200, seed=9)
    corpus_sinks(tmp_path / "sink" / "done", data, random.Random(9))
    query = f"?endpoint_override={s3}&scheme=http&region=us-east-1"
    secs = sections(
        tmp_path,
        f"sqlite:///{tmp_path / 'logs.db'}",
        archive=f"s3://logs/archive{query}",
        tables=f"s3://logs/tables{query}",
    )
    run_api(secs)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'logs.db'}")
    check_tables(engine, data)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3, scheme="http", region="us-east-1")
    check_errors("logs/tables", data, filesystem=fs)
    listing = [i.path for i in fs.get_file_info(pafs.FileSelector("logs/archive", recursive=True))]
    assert any(p.endswith("MANIFEST.json") for p in listing) and not any(".tmp" in p for p in listing)
    # re-running everything on S3 changes nothing
    run_api(secs)
    check_tables(engine, data)
    engine.dispose()


def test_config_errors_name_the_key_and_exit_2(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "bad.yaml",
        {"demux": {"archive_dir": str(tmp_path), "types": {"web": {"processor": "combined", "patern": "x"}}}},
    )
    p = subprocess.run(
        [sys.executable, "-m", "headrace", "demux", "--config", str(cfg)], capture_output=True, text=True
    )
    assert p.returncode == 2 and "demux.types.web.patern: unknown key" in p.stderr
    cfg = write_config(tmp_path / "bad2.yaml", {"archive": {"sink_dir": str(tmp_path), "part_byte": 1}})
    p = subprocess.run(
        [sys.executable, "-m", "headrace", "archive", "--config", str(cfg)], capture_output=True, text=True
    )
    assert p.returncode == 2 and "archive.part_byte: unknown key" in p.stderr


def test_demux_reports_a_corrupt_part_and_goes_on(tmp_path: Path) -> None:
    data = corpus(50, seed=2)
    corpus_sinks(tmp_path / "sink" / "done", data, random.Random(2))
    secs = sections(tmp_path, f"sqlite:///{tmp_path / 'db'}")
    assert run_archive(ArchiveConfig.model_validate(secs["archive"])).ok
    part = next((tmp_path / "archive" / "data_type=web").rglob("part-*.avro"))
    part.write_bytes(part.read_bytes()[:-20])  # torn
    summary = run_demux(DemuxConfig.model_validate(secs["demux"]))
    assert not summary.ok and "data_type=web" not in summary.failures[0] and "web/" in summary.failures[0]
    assert summary.records == sum(v["good"] for t, v in data.items() if t != "web")


def test_demux_while_archive_runs_sees_whole_parts(tmp_path: Path) -> None:
    """Archive runs (a subprocess) keep replacing parts while demux runs: demux never fails or
    doubles rows, and once both have caught up the tables hold every good line once."""
    rng = random.Random(4)
    secs = sections(tmp_path, f"sqlite:///{tmp_path / 'db'}")
    secs["archive"]["part_bytes"] = 10_000_000  # one growing part per day: every archive run replaces it
    cfg = write_config(tmp_path / "headrace.yaml", secs)
    batches = [corpus(150, seed=s) for s in range(6)]
    archiver = None
    demux_cfg = DemuxConfig.model_validate(secs["demux"])
    for i, data in enumerate(batches):
        corpus_sinks(tmp_path / "sink" / "done", data, rng, stream_prefix=f"r{i}-")
        archiver = subprocess.Popen([sys.executable, "-m", "headrace", "archive", "--config", str(cfg)])
        while archiver.poll() is None:
            summary = run_demux(demux_cfg)
            assert summary.ok, summary.failures
        assert archiver.returncode == 0
    assert run_demux(demux_cfg).ok
    tables = ds.dataset(str(tmp_path / "tables"), format="parquet", partitioning="hive", exclude_invalid_files=True)
    counts = tables.to_table(columns=["data_type"]).group_by("data_type").aggregate([([], "count_all")])
    got = dict(zip(counts["data_type"].to_pylist(), counts["count_all"].to_pylist(), strict=True))
    assert got == {t: sum(b[t]["good"] for b in batches) for t in batches[0]}
