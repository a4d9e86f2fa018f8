"""headrace: a toolkit for moving data.

The log path: agents tail files into collectors, which write durable sink files that the archive
builder merges and demux parses into Parquet. The change path: a relay captures committed row
changes from SQLite, PostgreSQL or MySQL/MariaDB into an Avro ring buffer that subscribers pull from,
with a bootstrap server for new and lagging subscribers.
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    FatalError,
    HeadraceError,
    InvalidInput,
    ScnTooOld,
    TransientError,
    Unavailable,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FatalError",
    "HeadraceError",
    "InvalidInput",
    "ScnTooOld",
    "TransientError",
    "Unavailable",
    "UsageError",
    "__version__",
]
