"""``headrace sink``: deliver a relay's windows into a target with an exactly-once effect.

Modules: :mod:`._config` (the ``sink:`` section), :mod:`._plan` (sans-io: a batch of windows → the
statements that apply its net effect), :mod:`._sqltypes` (row schema → SQL column types),
:mod:`._sql` (the ``sql`` target: a replica in any SQLAlchemy database), :mod:`._nats` (the
``nats`` target: JetStream), :mod:`._lake` (the ``lake`` target: Delta Lake tables) and
:mod:`._lake_compact` (their compaction), :mod:`._loop` (the supervised subscriber loop), :mod:`._cli`.
Each target keeps its checkpoint *inside* the target (see docs/sinks.md).
"""

from ._config import LakeTarget, SinkConfig
from ._lake_compact import compact_lake, compact_sink, lake_tables

__all__ = ["LakeTarget", "SinkConfig", "compact_lake", "compact_sink", "lake_tables"]
