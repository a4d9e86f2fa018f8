"""The demo's reconciliation: every count at each step of both paths, compared with the one before.

Plain code: counts in, :class:`Check` rows out (the CLI prints them as one table and exits 1 naming
each row that does not match).
"""

from __future__ import annotations

from .._counts import Check
from ._changes import TABLES, ChangeCounts
from ._loglines import KINDS
from ._logpath import LogCounts

__all__ = ["Check", "reconcile"]


def reconcile(logs: LogCounts, changes: ChangeCounts) -> list[Check]:
    """Every check of the demo, in path order."""
    out = [Check("log bytes written = acked by the collector", logs.written_bytes, logs.acked_bytes)]
    for t in KINDS:
        w = logs.written.lines[t]
        out += [
            Check(f"{t}: lines written = shipped (in sink files)", w, logs.shipped[t]),
            Check(f"{t}: lines written = archived", w, logs.archived[t]),
            Check(f"{t}: lines written = parsed + errors", w, logs.parsed[t] + logs.errors[t]),
            Check(f"{t}: malformed lines written = demux errors", logs.written.bad[t], logs.errors[t]),
            Check(f"{t}: lines parsed = rows loaded (logs_{t})", logs.parsed[t], logs.loaded[t]),
        ]
    for table, op in sorted(changes.committed.keys() | changes.delivered.keys()):
        out.append(
            Check(f"{table}: '{op}' changes committed = delivered", changes.committed[table, op],
                  changes.delivered[table, op])
        )  # fmt: skip
    for table in TABLES:
        rows = changes.table_rows[table]
        out += [
            Check(f"{table}: table rows = snapshot rows read (bootstrap)", rows, changes.snapshot_rows[table]),
            Check(f"{table}: table rows = rows in the snapshot copy", rows, changes.copy_rows[table]),
            Check(f"{table}: table rows = copy rows equal to them", rows, changes.copy_equal[table]),
            Check(f"{table}: table rows = rows exported (Parquet)", rows, changes.exported[table]),
        ]
    return out
