"""``headrace verify`` against real databases: a PostgreSQL source table of every kind, replicas written
by the ``sink sql`` target's own code into SQLite, MariaDB and PostgreSQL, and a Parquet export. Equal
copies exit 0; copies changed behind the replica's back report exactly the changed keys, with a number
of queries bounded by the tree's depth, not by the table's size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from db_servers import MariaDbServer, PgServer
from verify_support import execute, make_items, replicate, run_verify

from headrace.batch._config import ExportConfig
from headrace.batch._export import run_export

N = 3000
LEAF = 64


def _bound(n: int) -> int:
    """Most queries per side: the root, the temporary table, one per level down to buckets of LEAF rows
    on average, the leaf rows (a bucket larger than average at that depth would need one more level:
    the tables here are deterministic, and their buckets do not)."""
    return 1 + math.ceil(math.log(max(n / LEAF, 1), 16)) + 1 + 1


def _plant(url: str, replica: str, dialect: str) -> tuple[set[int], set[int], set[int]]:
    """Change ``replica`` behind the sink's back: 2 rows gone, 2 rows added, one change per kind."""
    hexval = {"postgresql": "'\\xdeadbeef'::bytea", "mysql": "X'DEADBEEF'", "sqlite": "X'DEADBEEF'"}[dialect]
    ts = {
        "postgresql": "at + interval '1 microsecond'",
        "mysql": "at + INTERVAL 1 MICROSECOND",
        "sqlite": "'2026-01-01 00:00:00.000001'",
    }[dialect]
    execute(
        url,
        f"DELETE FROM {replica} WHERE id IN (5, 2900)",
        f"UPDATE {replica} SET name = 'név 10 名前 😁' WHERE id = 10",  # one character of text
        f"UPDATE {replica} SET amount = 2 * amount + 0.01 WHERE id = 12",  # a decimal
        f"UPDATE {replica} SET at = {ts} WHERE id = 14",  # a timestamp, by one microsecond
        f"UPDATE {replica} SET payload = {hexval} WHERE id = 15",  # bytes
        f"UPDATE {replica} SET name = NULL WHERE id = 16",  # a value became NULL
        f"UPDATE {replica} SET amount = 1 WHERE id = 26",  # a NULL became a value (26 % 13 == 0)
        f"UPDATE {replica} SET local_at = NULL WHERE id = 30",
    )
    for i in (N + 1, N + 2):
        execute(url, f"INSERT INTO {replica} (_headrace_key, id, name) VALUES ('[{i}]', {i}, 'x')")
    return {5, 2900}, {N + 1, N + 2}, {10, 12, 14, 15, 16, 26, 30}


def _keys(report: dict, what: str) -> set[int]:
    return {int(k["id"]) for k in report[what]}


def _check_found(report: dict, planted: tuple[set[int], set[int], set[int]]) -> None:
    missing, extra, different = planted
    assert (_keys(report, "missing"), _keys(report, "extra"), _keys(report, "different")) == planted
    assert {int(k["id"]) for k in report["repair"]["resnapshot"]} == missing | different
    assert {int(k["id"]) for k in report["repair"]["delete"]} == extra
    k = len(missing) + len(extra) + len(different)
    for side in ("source", "replica"):
        assert report[side]["round_trips"] <= _bound(N), report
        assert report[side]["rows"] <= k * LEAF, report  # only the differing leaf buckets' rows


@pytest.fixture(scope="module")
def source(pg_server: PgServer) -> str:
    url = pg_server.url(pg_server.create_database("verify_src"))
    make_items(url, N)
    return url


def test_equal_replicas_exit_0_in_two_queries(
    source: str, pg_server: PgServer, mariadb_server: MariaDbServer, tmp_path: Path
) -> None:
    replicas = {
        "sqlite": f"sqlite:///{tmp_path / 'replica.db'}",
        "postgresql": pg_server.url(pg_server.create_database("verify_rep_eq")),
        "mariadb": mariadb_server.url(mariadb_server.create_database("verify_rep_eq")),
    }
    for name, url in replicas.items():
        replicate(source, "items", url)
        # one as a process: the real exit code of the real command
        rc, report, err = run_verify("--source", source, "--against", url, "--table", "items", process=name == "sqlite")
        assert rc == 0, (name, report, err)
        assert report["equal"] and report["source_rows"] == report["replica_rows"] == N, name
        assert report["round_trips"] == 2 and report["rows_fetched"] == 0, (name, report)
        assert set(report["columns"]) == {
            "id",
            "name",
            "amount",
            "ratio",
            "at",
            "local_at",
            "day",
            "payload",
            "flag",
            "ref",
        }


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_planted_differences_are_found_exactly(
    dialect: str, source: str, pg_server: PgServer, mariadb_server: MariaDbServer, tmp_path: Path
) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'replica.db'}"
    elif dialect == "mysql":
        url = mariadb_server.url(mariadb_server.create_database("verify_rep_diff"))
    else:
        url = pg_server.url(pg_server.create_database("verify_rep_diff"))
    replicate(source, "items", url)
    planted = _plant(url, "items", dialect)
    rc, report, err = run_verify("--source", source, "--against", url, "--table", "items", "--leaf-rows", str(LEAF))
    assert rc == 7, (report, err)
    assert not report["equal"]
    _check_found(report, planted)


def test_parquet_export_equal_then_missing_rows(source: str, tmp_path: Path) -> None:
    out = tmp_path / "export"
    run_export(ExportConfig(url=source, output=str(out), tables=["items"]))
    rc, report, err = run_verify("--source", source, "--against", str(out), "--table", "items")
    assert rc == 0, (report, err)
    assert report["replica_rows"] == N
    execute(source, "UPDATE items SET amount = amount + 1 WHERE id = 7", "DELETE FROM items WHERE id = 8")
    try:
        rc, report, err = run_verify("--source", source, "--against", str(out), "--table", "items")
        assert rc == 7, (report, err)
        assert (_keys(report, "missing"), _keys(report, "extra"), _keys(report, "different")) == (set(), {8}, {7})
    finally:
        execute(source, "UPDATE items SET amount = amount - 1 WHERE id = 7")
        make_items(source, N)


def test_bad_arguments_exit_2(source: str, tmp_path: Path) -> None:
    rc, _, err = run_verify("--source", source, "--against", str(tmp_path), "--table", "items")
    assert rc == 2 and "export folder" in err
    rc, _, err = run_verify("--source", source, "--against", source, "--table", "nope")
    assert rc == 2 and "no table 'nope'" in err
    rc, _, err = run_verify("--source", source, "--against", source, "--table", "items", "--key", "zzz")
    assert rc == 2 and "zzz" in err


def _copy(url: str, n: int, name: str, fill: bool = True) -> None:
    if fill:
        make_items(url, n)
    execute(
        url,
        f"DROP TABLE IF EXISTS {name}",
        f"CREATE TABLE {name} AS TABLE items",
        f"ALTER TABLE {name} ADD PRIMARY KEY (id)",
    )


def _measure(url: str, n: int, changed: list[int]) -> dict:
    _copy(url, n, "items_copy", fill=False)
    if changed:
        execute(url, f"UPDATE items_copy SET flag = NOT flag WHERE id IN ({','.join(map(str, changed))})")
    rc, report, err = run_verify("--source", url, "--against", url, "--table", "items", "--against-table", "items_copy")
    assert rc == (7 if changed else 0), (report, err)
    assert _keys(report, "different") == set(changed)
    return report


def test_queries_grow_with_the_depth_not_the_rows(pg_server: PgServer) -> None:
    """1 and 20 differences among 2 000 and 20 000 rows: queries stay within the tree's depth, rows
    fetched within the differing leaf buckets."""
    url = pg_server.url(pg_server.create_database("verify_scale"))
    for n in (2_000, 20_000):
        make_items(url, n)
        for k in (1, 20):
            changed = list(range(7, 7 + 97 * k, 97))
            report = _measure(url, n, changed)
            for side in ("source", "replica"):
                assert report[side]["round_trips"] <= _bound(n), (n, k, report)
                assert report[side]["rows"] <= k * LEAF, (n, k, report)
                assert report[side]["buckets"] <= 1 + 16 * k * _bound(n), (n, k, report)


@pytest.mark.slow
def test_one_million_rows_few_differences(pg_server: PgServer) -> None:
    """The issue's measurement: 1 000 000 rows, 10 keys changed behind the replica's back."""
    url = pg_server.url(pg_server.create_database("verify_1m"))
    n = 1_000_000
    _copy(url, n, "items_copy")
    execute(
        url,
        "DELETE FROM items_copy WHERE id IN (11, 500000)",
        "INSERT INTO items_copy (id, name) VALUES (2000001, 'x'), (2000002, 'y')",
        "UPDATE items_copy SET amount = amount + 0.01 WHERE id IN (3, 99999, 123456)",
        "UPDATE items_copy SET at = NULL WHERE id IN (777777, 888888, 999999)",
    )
    rc, report, err = run_verify("--source", url, "--against", url, "--table", "items", "--against-table", "items_copy")
    assert rc == 7, (report, err)
    assert _keys(report, "missing") == {11, 500000}
    assert _keys(report, "extra") == {2000001, 2000002}
    assert _keys(report, "different") == {3, 99999, 123456, 777777, 888888, 999999}
    print("verify 1M rows, 10 differences:", {k: report[k] for k in ("round_trips", "rows_fetched", "seconds")},
          report["source"], report["replica"])  # fmt: skip
    for side in ("source", "replica"):
        assert report[side]["round_trips"] <= _bound(n)
        assert report[side]["rows"] <= 10 * LEAF


def test_recheck_drops_keys_the_replica_caught_up_on(source: str, tmp_path: Path) -> None:
    """Changes in flight: keys that converge while verify waits are not reported; the others are."""
    from headrace.verify import verify

    url = f"sqlite:///{tmp_path / 'replica.db'}"
    replicate(source, "items", url)
    execute(url, "UPDATE items SET name = 'old' WHERE id IN (40, 41)")

    def replica_catches_up(seconds: float) -> None:
        assert seconds == 5
        execute(url, "UPDATE items SET name = 'név 40 名前 😀' WHERE id = 40")  # the sink applied it meanwhile

    report = verify(source, url, "items", recheck_seconds=5, wait=replica_catches_up)
    assert not report.equal
    assert [k["id"] for k in report.different] == [41] and report.settled == 1
    assert verify(source, url, "items").different != []  # 41 still differs without a recheck too


def test_config_mode_verifies_every_table_of_the_sink(source: str, tmp_path: Path) -> None:
    """``headrace verify --config FILE``: every table the sink's registry names, against relay.source."""
    from support import write_config

    url = f"sqlite:///{tmp_path / 'replica.db'}"
    replicate(source, "items", url)
    cfg = write_config(
        tmp_path / "headrace.yaml",
        {
            "relay": {"source": source},
            "sink": {"name": "verify-test", "relays": ["http://127.0.0.1:1"], "target": {"type": "sql", "url": url}},
        },
    )
    rc, report, err = run_verify("--config", str(cfg))
    assert rc == 0 and report["equal"] and report["table"] == "items", (report, err)
    execute(url, "DELETE FROM items WHERE id = 3")
    rc, report, err = run_verify("--config", str(cfg))
    assert rc == 7 and report["missing"] == [{"id": 3}], (report, err)
    rc, _, err = run_verify("--config", str(cfg), "--table", "items")
    assert rc == 2 and "or only --config" in err
