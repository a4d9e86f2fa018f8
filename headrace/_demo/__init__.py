"""``headrace demo``: the whole mission on embedded defaults, in a temporary directory, reconciled.

The log path: a collector and an agent as real processes tail three generated logs (a combined
access log, rotated by rename half way; a syslog file; a JSON application log; a few malformed lines
in each); once every byte is acked the daemons stop (closing the sink file), and the batch jobs run:
archive → demux (one processor per data type) → load into SQLite, and a SQL query over the access
log's table is printed.

The change path: a relay captures a SQLite shop database, a bootstrap server follows it; the demo
commits transactions and a subscriber in this process receives them; then a late ``headrace
subscribe --from-snapshot`` reads the snapshot and the tables are rebuilt from its output and
compared with the database row by row. The database is also exported to Parquet.

The end is one reconciliation table (``_reconcile``): lines written = shipped = archived = parsed +
errors, parsed = loaded; changes committed = delivered; table rows = snapshot copy = export. Any
mismatch exits 1, naming it. ``--keep`` then leaves the daemons running under ``headrace up``.

Modules: ``_loglines`` (the generated lines), ``_setup`` (the one config file), ``_procs`` (daemon
processes), ``_logpath``, ``_changes``, ``_reconcile``, ``_cli``.
"""

from ._cli import demo

__all__ = ["demo"]
