"""The subscriber client library: ``Subscriber``, consumers, checkpoint stores, decoded events."""

from ..._tls import ClientTLS
from ._checkpoint import Checkpoint, CheckpointStore, FileCheckpointStore, MemoryCheckpointStore, SqlCheckpointStore
from ._decode import ChangeEvent, EventDecoder, Window
from ._jetstream import JetStreamSubscriber
from ._relay_client import Batch, CaptureStopped, RelayClient
from ._subscriber import Consumer, Subscriber
from ._switchover import BootstrapClient, SnapshotPage, SnapshotRestarted

__all__ = [
    "Batch",
    "BootstrapClient",
    "CaptureStopped",
    "ChangeEvent",
    "Checkpoint",
    "CheckpointStore",
    "ClientTLS",
    "Consumer",
    "EventDecoder",
    "FileCheckpointStore",
    "JetStreamSubscriber",
    "MemoryCheckpointStore",
    "RelayClient",
    "SnapshotPage",
    "SnapshotRestarted",
    "SqlCheckpointStore",
    "Subscriber",
    "Window",
]
