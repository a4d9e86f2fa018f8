"""Compaction of a ``lake`` sink's Delta tables: many small commits' files into few, then a vacuum.

Every sink commit adds a small file to each table it touches; readers (DuckDB, Spark, Trino) slow down
with thousands of them. :func:`compact_lake` runs ``optimize.compact`` (bin-packing the small files
into large ones, a commit that changes no rows) and ``vacuum`` (deleting files no version newer than
the retention needs) on every table the sink manages: each current and change table and the sink's
log. Compaction commits carry no sink checkpoint, so the sink's resume point is unchanged; the sink
reads its checkpoint from the newest commit that carries one. Run it on a schedule (the DAG
``headrace_lake_compact``, or ``headrace sink --config FILE --compact``) while the sink runs: delta-rs
detects a conflict between a compaction and a concurrent MERGE that rewrote the same files, and the
loser fails cleanly (the sink restarts from its checkpoint; the compaction is retried next time).
"""

from __future__ import annotations

import json
from typing import Any

from .._logging import get_logger
from ._config import LakeTarget
from ._lake import lake_name

__all__ = ["compact_lake", "compact_sink", "lake_tables"]

log = get_logger("sink.lake")


def lake_tables(cfg: LakeTarget, sink_name: str) -> list[str]:
    """The URIs of every Delta table the sink ``sink_name`` manages below ``cfg.uri`` (its log last)."""
    import deltalake

    root = cfg.uri.rstrip("/")
    log_uri = f"{root}/_headrace_sink/{sink_name}"
    opts = dict(cfg.storage_options) or None
    if not deltalake.DeltaTable.is_deltatable(log_uri, storage_options=opts):
        return []
    sources: set[str] = set()
    logt = deltalake.DeltaTable(log_uri, storage_options=opts)
    for lst in logt.to_pyarrow_table(columns=["tables"]).column("tables").to_pylist():
        sources.update(json.loads(lst))
    out = []
    for source in sorted(sources):
        for kind in ("current", "changes"):
            uri = f"{root}/{kind}/{lake_name(source, cfg)}"
            if deltalake.DeltaTable.is_deltatable(uri, storage_options=opts):
                out.append(uri)
    return [*out, log_uri]


def compact_lake(cfg: LakeTarget, sink_name: str, retention_hours: int | None = None) -> dict[str, Any]:
    """Compact and vacuum every table of the sink; returns counts (tables, files added/removed, vacuumed)."""
    import deltalake

    opts = dict(cfg.storage_options) or None
    hours = cfg.vacuum_retention_hours if retention_hours is None else retention_hours
    out = {"tables": 0, "files_added": 0, "files_removed": 0, "vacuumed": 0}
    for uri in lake_tables(cfg, sink_name):
        t = deltalake.DeltaTable(uri, storage_options=opts)
        m = t.optimize.compact()
        gone = t.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
        out["tables"] += 1
        out["files_added"] += int(m.get("numFilesAdded", 0))
        out["files_removed"] += int(m.get("numFilesRemoved", 0))
        out["vacuumed"] += len(gone)
        log.info(
            "lake_compacted",
            table=uri,
            added=m.get("numFilesAdded"),
            removed=m.get("numFilesRemoved"),
            vacuumed=len(gone),
        )
    return out


def compact_sink(config_path: str | None) -> dict[str, Any]:
    """Compact the lake of the ``sink:`` section in ``config_path`` (``headrace sink --compact``, the DAG)."""
    from .._config import load_section
    from ..errors import UsageError
    from ._config import SinkConfig

    cfg = load_section(config_path, "sink", SinkConfig, require=True)
    if not isinstance(cfg.target, LakeTarget):
        raise UsageError("compaction needs a sink.target of type lake")
    return compact_lake(cfg.target, cfg.name)
