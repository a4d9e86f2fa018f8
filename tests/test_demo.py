"""The README's first command: ``headrace demo`` succeeds on embedded defaults and says so truthfully."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fastavro


def test_demo_delivers_every_line_and_change(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "demo", "--lines", "3000", "--transactions", "100", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every line arrived exactly once" in r.stdout
    # Count independently of the demo: 3,000 lines in the closed sink files, none twice.
    lines: list[bytes] = []
    for path in (tmp_path / "sink" / "done").glob("*.avro"):
        with path.open("rb") as f:
            for rec in fastavro.reader(f):
                lines += bytes(rec["data"]).splitlines()  # type: ignore[index,call-overload]
    numbers = sorted(int(line.split()[3]) for line in lines)
    assert numbers == list(range(3000))
    # and the export holds the shop database's rows, counted independently too
    import sqlite3

    import pyarrow.parquet as pq

    con = sqlite3.connect(tmp_path / "shop.db")
    for table in ("customers", "orders"):
        (want,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        files = list((tmp_path / "exports" / f"table={table}").rglob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == want > 0
    con.close()
