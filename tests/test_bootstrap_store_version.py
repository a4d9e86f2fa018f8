"""The bootstrap store's state rows are versioned and typed (like the state files): a store from
before the version row is migrated, one a newer headrace wrote is refused before anything changes,
and a damaged JSON value names its row and field."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from headrace.bootstrap import Store
from headrace.bootstrap._store_state import STATE_VERSION
from headrace.errors import FatalError

V1 = """
CREATE TABLE headrace_boot_state (k VARCHAR(64) PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO headrace_boot_state VALUES ('serving', '3'), ('last_gen', '3'), ('g3.log_scn', '40'),
    ('g3.applied_scn', '40'), ('g3.log_floor', '10'), ('g3.seed', '{"done": true, "high_scn": 9, "start_scn": 9}'),
    ('reseeds', '{"count": 2, "last_reason": "relay_no_longer_has_log_scn"}');
"""


def _rows(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM headrace_boot_state").fetchall())
    finally:
        conn.close()


def _make(path: Path, script: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()


def test_a_store_without_version_row_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _make(path, V1)
    store = Store(f"sqlite:///{path}")
    st = store.state()
    assert (st["gen"], st["log_scn"], st["applied_scn"], st["log_floor"]) == (3, 40, 40, 10)
    assert st["seed"] == {"done": True, "high_scn": 9, "start_scn": 9} and st["reseeds"]["count"] == 2
    store.close()
    assert _rows(path)["version"] == str(STATE_VERSION)
    Store(f"sqlite:///{path}").close()  # and opens again as the current version


def test_a_new_store_gets_the_current_version_and_keeps_it_after_reset(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = Store(f"sqlite:///{path}")
    assert _rows(path) == {"version": str(STATE_VERSION)}
    store.init_positions(5)
    store.reset()
    store.close()
    assert _rows(path) == {"version": str(STATE_VERSION)}


def test_a_store_from_a_newer_headrace_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "v9.db"
    _make(path, V1 + f"INSERT INTO headrace_boot_state VALUES ('version', '{STATE_VERSION + 1}');")
    before = _rows(path)
    with pytest.raises(
        FatalError, match=r"written by a newer headrace \(bootstrap store version 3; this one reads up to 2\)"
    ):
        Store(f"sqlite:///{path}")
    assert _rows(path) == before


@pytest.mark.parametrize(
    ("row", "value", "message"),
    [
        ("g3.seed", '{"done": true}', r"row 'g3.seed': field start_scn: Field required"),
        ("g3.seed", "{not json", r"row 'g3.seed': not JSON"),
        ("reseeds", json.dumps({"count": "many"}), r"row 'reseeds': field count: Input should be a valid integer"),
    ],
)
def test_a_damaged_value_names_its_row_and_field(tmp_path: Path, row: str, value: str, message: str) -> None:
    path = tmp_path / "bad.db"
    _make(path, V1)
    store = Store(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE headrace_boot_state SET v = ? WHERE k = ?", (value, row))
    conn.commit()
    conn.close()
    with pytest.raises(FatalError, match=message):
        store.state()
    store.close()


def test_a_seed_progress_of_the_wrong_shape_is_not_written(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    g = store.begin_generation(10, {"start_scn": 10, "high_scn": 10, "done": False}, "initial")
    with pytest.raises(ValueError, match="field high_scn"):
        store.set_seed({"start_scn": 10, "done": True}, gen=g)
    assert store.state()["building"]["seed"] == {"start_scn": 10, "high_scn": 10, "done": False}
    store.close()
