"""``headrace verify``: prove that a copy of a table equals its source, without moving the table.

Both sides hash their rows into key-hash buckets with their own SQL (or Arrow, for a Parquet export),
and only the buckets whose digests differ are looked into (a Merkle descent, :mod:`._merkle`), so a
copy with k differences among N rows costs about log16(N) queries per side and k·64 row hashes on the
wire. Canonical value texts (:mod:`._canon`, :mod:`._sqlcanon`) make a row hash the same whichever
database holds the row. ``reconcile`` compares the log path's counts per stream, stage by stage.
See docs/verify.md.
"""

from __future__ import annotations

from .._counts import Check
from ._jobs import Reconciliation, ReplicaTable, reconcile, sink_replicas
from ._run import VerifyReport, verify

__all__ = ["Check", "Reconciliation", "ReplicaTable", "VerifyReport", "reconcile", "sink_replicas", "verify"]
