"""The checks a config file implies, for the nightly DAG and the CLI: every table a ``sink sql``
replica holds (verified against the relay's source), and the log path's reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._counts import Check
from ._reconcile import StreamCounts, checks, gather, read_loaded

__all__ = ["Reconciliation", "ReplicaTable", "reconcile", "sink_replicas"]


@dataclass(frozen=True, slots=True)
class ReplicaTable:
    """One table to verify: the source database and table, the replica database and table."""

    source: str
    table: str
    against: str
    against_table: str


def sink_replicas(config_path: str) -> list[ReplicaTable]:
    """The tables the config's ``sink`` (an ``sql`` target) replicates from ``relay.source``, as its
    registry in the replica names them (tables it has not created yet are not listed)."""
    import sqlalchemy as sa

    from .._config import load_section
    from .._db import create_engine
    from ..errors import ConfigError
    from ..relay._config import RelayConfig
    from ..sinks._config import SinkConfig, SqlTarget
    from ..sinks._sql import TABLES_TABLE

    relay = load_section(config_path, "relay", RelayConfig, require=True)
    sink = load_section(config_path, "sink", SinkConfig, require=True)
    if not isinstance(sink.target, SqlTarget):
        raise ConfigError([f"sink.target.type: verify compares sql replicas, not {sink.target.type}"])
    engine = create_engine(sink.target.url)
    try:
        if not sa.inspect(engine).has_table(TABLES_TABLE):
            return []
        sql = sa.text(f"SELECT source_table, replica_table FROM {TABLES_TABLE} WHERE sink_name = :n ORDER BY 1")
        with engine.connect() as conn:
            rows = conn.execute(sql, {"n": sink.name}).all()
    finally:
        engine.dispose()
    return [ReplicaTable(relay.source, str(s), sink.target.url, str(r)) for s, r in rows]


@dataclass
class Reconciliation:
    """The log path's checks and the counts behind them."""

    checks: list[Check]
    counts: StreamCounts
    stages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stages": self.stages,
            "checks": [c.to_json() for c in self.checks],
            "streams": self.counts.to_json(),
        }


def reconcile(
    config_path: str, agents: Sequence[str] = (), agent_token: str | None = None, joined_types: Sequence[str] = ()
) -> Reconciliation:
    """Read every stage of the log path the config's sections point at and compare them per stream
    (``agent``: its ``/v1/status``, unless ``agents`` are given; ``collector.sink_dir``;
    ``archive.archive_dir``; ``demux.output``; ``load.url``). An absent section is a stage not read."""
    from .._config import _read_file, load_section

    present = _read_file(config_path)
    urls = list(agents)
    if not urls and "agent" in present:
        from ..agents._config import AgentConfig

        urls = [f"http://{load_section(config_path, 'agent', AgentConfig).listen}"]
    sink_dirs: list[str] = []
    if "collector" in present:
        from ..collectors._config import CollectorConfig

        sink_dirs = [load_section(config_path, "collector", CollectorConfig).sink_dir]
    archive_dir = demux_output = None
    if "archive" in present:
        from ..batch._config import ArchiveConfig

        archive_dir = load_section(config_path, "archive", ArchiveConfig).archive_dir
    if "demux" in present:
        from ..batch._config import DemuxConfig

        demux_output = load_section(config_path, "demux", DemuxConfig).output
    counts = gather(
        agents=urls,
        agent_token=agent_token,
        sink_dirs=sink_dirs,
        archive_dir=archive_dir,
        demux_output=demux_output,
        joined_types=joined_types,
    )
    if "load" in present:
        from ..batch._config import LoadConfig

        load = load_section(config_path, "load", LoadConfig)
        types = set(load.data_types or []) | {t for t in counts.data_type.values() if t}
        read_loaded(load.url, {t: load.tables.get(t, f"{load.table_prefix}{t}") for t in types}, counts)
    return Reconciliation(checks(counts), counts, sorted(counts.stages))
