"""Prometheus metrics of the bootstrap server."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "APPLIED_SCN",
    "APPLIED_WINDOWS",
    "COMPACTED_WINDOWS",
    "LOGGED_EVENTS",
    "LOGGED_WINDOWS",
    "LOG_SCN",
    "REJECTS",
    "RESEEDS",
    "SERVED_EVENTS",
    "SERVED_ROWS",
    "TOAST_FILLED",
    "TOAST_UNFILLED",
]

LOGGED_WINDOWS = Counter("headrace_bootstrap_logged_windows_total", "Windows written to the log store")
LOGGED_EVENTS = Counter("headrace_bootstrap_logged_events_total", "Events written to the log store")
APPLIED_WINDOWS = Counter("headrace_bootstrap_applied_windows_total", "Windows merged into the snapshot store")
COMPACTED_WINDOWS = Counter("headrace_bootstrap_compacted_windows_total", "Log windows removed by compaction")
SERVED_ROWS = Counter("headrace_bootstrap_snapshot_rows_total", "Snapshot rows served")
SERVED_EVENTS = Counter("headrace_bootstrap_catchup_events_total", "Catch-up events served")
REJECTS = Counter("headrace_bootstrap_rejects_total", "Refused requests by reason", ["reason"])
LOG_SCN = Gauge("headrace_bootstrap_log_scn", "Newest SCN in the log store")
APPLIED_SCN = Gauge("headrace_bootstrap_applied_scn", "SCN the snapshot store is applied to")
RESEEDS = Counter(
    "headrace_bootstrap_reseeds_total", "Seeds of a new generation after the first, by reason", ["reason"]
)
TOAST_FILLED = Counter(
    "headrace_bootstrap_toast_filled_total", "Unchanged-TOAST placeholders filled in from the stored row"
)
TOAST_UNFILLED = Counter(
    "headrace_bootstrap_toast_unfilled_total", "Unchanged-TOAST placeholders left (no previous value known)"
)
