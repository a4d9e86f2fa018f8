"""MariaDB: ``TRUNCATE TABLE`` (logged as a statement, never as row deletions) becomes a truncate event."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from db_servers import MariaDbServer

from headrace.relay import Op
from headrace.relay._config import RelayConfig
from headrace.relay.sources import ChangeWindow, RowChange
from headrace.relay.sources.mysql import MysqlSource

pytestmark = pytest.mark.mariadb


def test_truncate_table_is_an_event(mariadb_server: MariaDbServer, tmp_path: Path) -> None:
    db = mariadb_server.create_database("mytrunc")
    mariadb_server.execute("CREATE TABLE a (id INT PRIMARY KEY, v TEXT)", db)
    mariadb_server.execute("CREATE TABLE other (id INT PRIMARY KEY)", db)
    cfg = RelayConfig(
        source=mariadb_server.url(db),
        tables=["a"],
        state_dir=str(tmp_path / "state"),
        mysql={"server_id": 4343, "stall_seconds": 5},
    )
    src = MysqlSource(cfg)
    src.open()
    after = src.start_scn()
    with contextlib.closing(mariadb_server.connect(db)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO a VALUES (1, 'x'), (2, 'y')")
        cur.execute("TRUNCATE TABLE a")
        cur.execute("TRUNCATE TABLE other")  # not captured
        cur.execute(f"TRUNCATE `{db}`.`a`")
        cur.execute("INSERT INTO a VALUES (3, 'z')")
    windows: list[tuple[int, list[RowChange]]] = []
    stop = threading.Event()
    deadline = time.monotonic() + 30
    reader = src.read(after, stop)
    for w in reader:
        if isinstance(w, ChangeWindow):
            windows.append((w.scn, list(w.changes)))
        if len(windows) >= 4 or time.monotonic() > deadline:
            break
    stop.set()
    reader.close()
    ops = [[(c.op, c.table.name, c.key, c.before, c.after) for c in cs] for _scn, cs in windows]
    assert ops == [
        [(Op.INSERT, "a", (1,), None, {"id": 1, "v": "x"}), (Op.INSERT, "a", (2,), None, {"id": 2, "v": "y"})],
        [(Op.TRUNCATE, "a", (), None, None)],
        [(Op.TRUNCATE, "a", (), None, None)],
        [(Op.INSERT, "a", (3,), None, {"id": 3, "v": "z"})],
    ]
    scns = [scn for scn, _ in windows]
    assert scns == sorted(scns) and len(set(scns)) == 4
    assert all(c.scn == scn for scn, cs in windows for c in cs)
    # the truncate's table metadata is the one row events use (one schema version)
    assert windows[1][1][0].table == windows[0][1][0].table
    src.close()
