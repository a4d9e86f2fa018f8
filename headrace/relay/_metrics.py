"""Prometheus metrics of the relay's buffer and HTTP API."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "BUFFER_BYTES",
    "BUFFER_NEWEST",
    "BUFFER_OLDEST",
    "EVENTS_IN",
    "REJECTS",
    "SERVED_BYTES",
    "SERVED_EVENTS",
    "WINDOWS_IN",
]

WINDOWS_IN = Counter("headrace_relay_windows_total", "Windows taken into the buffer")
EVENTS_IN = Counter("headrace_relay_events_total", "Events taken into the buffer")
SERVED_BYTES = Counter("headrace_relay_served_bytes_total", "Event bytes served to subscribers")
SERVED_EVENTS = Counter("headrace_relay_served_events_total", "Events served to subscribers")
REJECTS = Counter("headrace_relay_rejects_total", "Refused requests by reason", ["reason"])
BUFFER_BYTES = Gauge("headrace_relay_buffer_bytes", "Bytes held by the ring buffer")
BUFFER_OLDEST = Gauge("headrace_relay_buffer_oldest_scn", "Oldest SCN the buffer serves from")
BUFFER_NEWEST = Gauge("headrace_relay_buffer_newest_scn", "Newest window SCN in the buffer")
