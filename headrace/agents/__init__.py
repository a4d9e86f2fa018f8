"""headrace agents: tail log files and ship them, as chunks, to collectors.

Data flow (one private module per step): ``_discover`` (globs, stream names, watchdog wake-ups) →
``_tailer`` (stat, read large blocks, the I/O shell) with ``_rotation`` (which file of a stream to
read, sans-io) and ``_chunker`` (record boundaries, sans-io) → :mod:`headrace._spool` (bounded
on-disk spool) → :mod:`headrace._ship` (batches to collectors with failover). ``_checkpoint`` keeps
acked cursors; ``_agent`` wires it together; ``_app`` is the HTTP control API; ``_handler`` is the
logging handler applications use to log straight to an agent.
"""

from ._config import AgentConfig, SourceConfig
from ._handler import AgentLogHandler

__all__ = ["AgentConfig", "AgentLogHandler", "SourceConfig"]
