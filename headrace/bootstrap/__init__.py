"""headrace bootstrap: log store, applier, snapshot store, bootstrap HTTP server.

Data flow: ``_follow`` (relay → log store, one transaction per fetched batch of whole windows) →
``_applier`` / ``_apply`` (log → snapshot store: latest row per key, sans-io merge) → ``_serve``
(``/v1/snapshot`` and ``/v1/catchup``). ``_seed`` fills the snapshot store with the rows that
existed before capture began; ``_store`` holds both stores in one SQL database.
"""

from ._applier import apply_once, compact_once, lag
from ._apply import RowOp, merge, snapshot_frame, sort_key
from ._config import BootstrapConfig
from ._seed import seed, seed_sqlite
from ._store import LogWindow, Store

__all__ = [
    "BootstrapConfig",
    "LogWindow",
    "RowOp",
    "Store",
    "apply_once",
    "compact_once",
    "lag",
    "merge",
    "seed",
    "seed_sqlite",
    "snapshot_frame",
    "sort_key",
]
