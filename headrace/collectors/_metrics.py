"""Prometheus metrics of the collector (one collector per process, default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ACKED_BATCHES",
    "BYTES_IN",
    "CHUNKS_IN",
    "COMMIT_REQUESTS",
    "DUPLICATES",
    "FORWARDED_CHUNKS",
    "FORWARD_PENDING",
    "FORWARD_REJECTED",
    "FSYNC_SECONDS",
    "REJECTS",
    "SINK_FILES",
    "SINK_OPEN_BYTES",
    "STORE_UNAVAILABLE",
    "TORN_NOT_KEPT",
    "TRIMMED_BYTES",
]

CHUNKS_IN = Counter("headrace_collector_chunks", "Chunks received in accepted batches (duplicates included)")
BYTES_IN = Counter("headrace_collector_bytes", "Chunk data bytes received in accepted batches")
DUPLICATES = Counter("headrace_collector_duplicates", "Chunks acked again without being written (re-sends)")
TRIMMED_BYTES = Counter("headrace_collector_trimmed_bytes", "Bytes of re-sent chunks not written again")
ACKED_BATCHES = Counter("headrace_collector_acked_batches", "Batches acked (HTTP 200)")
REJECTS = Counter("headrace_collector_rejects", "Requests refused, by reason", ["reason"])
SINK_FILES = Counter("headrace_collector_sink_files", "Sink files closed into done/")
SINK_OPEN_BYTES = Gauge("headrace_collector_sink_open_bytes", "Size of the open sink file")
FSYNC_SECONDS = Histogram(
    "headrace_collector_fsync_seconds",
    "Latency of one group-commit fsync",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
COMMIT_REQUESTS = Histogram(
    "headrace_collector_commit_requests",
    "Requests served by one group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
FORWARD_PENDING = Gauge("headrace_collector_forward_pending_bytes", "Bytes spooled, not yet acked upstream")
FORWARDED_CHUNKS = Counter("headrace_collector_forwarded_chunks", "Chunks acked by an upstream collector")
FORWARD_REJECTED = Counter(
    "headrace_collector_forward_rejected_chunks",
    "Chunks an upstream collector refused with a 4xx, set aside in <spool_dir>/rejected/",
)
TORN_NOT_KEPT = Counter(
    "headrace_collector_torn_tails_not_kept", "Torn tails cut at recovery but not copied to torn/ (cap or full disk)"
)
STORE_UNAVAILABLE = Gauge(
    "headrace_collector_store_unavailable", "1 while the store waits for disk space (requests get 503), else 0"
)
