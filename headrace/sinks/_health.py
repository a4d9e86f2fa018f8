"""``headrace sink``'s Prometheus metrics and its optional health/metrics listener (``sink.listen``).

Metrics (all labelled with the sink's ``name``):

``headrace_sink_windows_applied_total``, ``headrace_sink_rows_applied_total``, ``headrace_sink_commits_total``
    windows and rows (events) committed into the target, and the commits that carried them;
``headrace_sink_errors_total``
    supervised failures (each one restarts the run from the target's checkpoint);
``headrace_sink_checkpoint_scn``, ``headrace_sink_checkpoint_timestamp_seconds``
    the SCN of the last committed checkpoint and the wall-clock time of that commit;
``headrace_sink_relay_newest_scn``, ``headrace_sink_lag_scn``
    the newest SCN the relay reported in its last response, and how far the checkpoint is behind it;
``headrace_sink_lag_seconds``
    now minus the source commit time of the newest event committed, while the relay holds newer
    windows; 0 once the checkpoint has reached the relay's newest SCN (caught up).

The listener (a thread; bound before the sink starts, so a port in use stops it with exit 6 as the
daemons do) answers ``GET /healthz`` — 200 ``{"ok": true, …}`` while the sink runs, 503 while it is
backing off after a failure — and ``GET /metrics``. It has no access control: keep it on loopback or
a private address. State: none; the counters start at zero with the process.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from .._http import bind_listen
from .._logging import get_logger

__all__ = ["HealthServer", "SinkMetrics"]

log = get_logger("sink.health")

WINDOWS = Counter("headrace_sink_windows_applied", "Windows committed into the target", ["sink"])
ROWS = Counter("headrace_sink_rows_applied", "Rows (events) committed into the target", ["sink"])
COMMITS = Counter("headrace_sink_commits", "Target commits (data and checkpoint together)", ["sink"])
ERRORS = Counter("headrace_sink_errors", "Failures that restarted the sink from its checkpoint", ["sink"])
CHECKPOINT_SCN = Gauge("headrace_sink_checkpoint_scn", "SCN of the last committed checkpoint", ["sink"])
CHECKPOINT_TIME = Gauge(
    "headrace_sink_checkpoint_timestamp_seconds", "Wall-clock time of the last committed checkpoint", ["sink"]
)
RELAY_NEWEST = Gauge("headrace_sink_relay_newest_scn", "Newest SCN the relay reported", ["sink"])
LAG_SCN = Gauge("headrace_sink_lag_scn", "Relay's newest SCN minus the checkpoint's SCN", ["sink"])
LAG_SECONDS = Gauge(
    "headrace_sink_lag_seconds", "Age of the newest committed event while the relay holds newer ones", ["sink"]
)


class SinkMetrics:
    """What one sink reports: updated by the loop, read by the metrics and ``/healthz``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.checkpoint_scn: int | None = None
        self.checkpoint_phase: str | None = None
        self.relay_newest: int | None = None
        self.newest_event_ms: int | None = None
        self.failing: str | None = None  # the last failure, while backing off
        self.windows = 0
        self.rows = 0
        self._lock = threading.Lock()
        for g in (LAG_SCN, LAG_SECONDS):
            g.labels(name).set_function(self._lag_scn if g is LAG_SCN else self._lag_seconds)

    def committed(self, scn: int, phase: str, windows: int, rows: int, newest_event_ms: int | None) -> None:
        """A commit moved the checkpoint to ``scn``, carrying ``windows`` windows and ``rows`` rows."""
        with self._lock:
            self.checkpoint_scn, self.checkpoint_phase = scn, phase
            self.windows += windows
            self.rows += rows
            if newest_event_ms:
                self.newest_event_ms = newest_event_ms
            self.failing = None
        WINDOWS.labels(self.name).inc(windows)
        ROWS.labels(self.name).inc(rows)
        COMMITS.labels(self.name).inc()
        CHECKPOINT_SCN.labels(self.name).set(scn)
        CHECKPOINT_TIME.labels(self.name).set(time.time())

    def loaded(self, scn: int | None) -> None:
        """The checkpoint the target holds at the start of a run."""
        with self._lock:
            self.checkpoint_scn = scn
            self.failing = None
        if scn is not None:
            CHECKPOINT_SCN.labels(self.name).set(scn)

    def relay_head(self, newest: int | None) -> None:
        """The relay's newest SCN, from a stream response."""
        if newest is None:
            return
        with self._lock:
            self.relay_newest = newest
        RELAY_NEWEST.labels(self.name).set(newest)

    def failed(self, error: str) -> None:
        """A failure: the sink backs off and starts over."""
        with self._lock:
            self.failing = error
        ERRORS.labels(self.name).inc()

    def _caught_up(self) -> bool:
        return self.relay_newest is None or (
            self.checkpoint_scn is not None and self.checkpoint_scn >= self.relay_newest
        )

    def _lag_scn(self) -> float:
        with self._lock:
            if self._caught_up() or self.relay_newest is None:
                return 0.0
            return float(self.relay_newest - (self.checkpoint_scn or 0))

    def _lag_seconds(self) -> float:
        with self._lock:
            if self._caught_up() or self.newest_event_ms is None:
                return 0.0
            return max(0.0, time.time() - self.newest_event_ms / 1000)

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document (``ok`` False while backing off after a failure)."""
        with self._lock:
            return {
                "ok": self.failing is None,
                "sink": self.name,
                "checkpoint_scn": self.checkpoint_scn,
                "phase": self.checkpoint_phase,
                "relay_newest_scn": self.relay_newest,
                "windows_applied": self.windows,
                "rows_applied": self.rows,
                "error": self.failing,
            }


class HealthServer:
    """``GET /healthz`` and ``GET /metrics`` on ``listen`` from a daemon thread; bound when constructed."""

    def __init__(self, listen: str, metrics: SinkMetrics) -> None:
        self.metrics = metrics
        sock = bind_listen(listen, "sink.listen")
        server = ThreadingHTTPServer(sock.getsockname()[:2], _handler(metrics), bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.server_activate()
        server.daemon_threads = True
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="sink-health", daemon=True)

    def start(self) -> None:
        self.thread.start()
        host, port = self.server.server_address[:2]
        log.info("sink_listening", host=str(host), port=int(port))

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()


def _handler(metrics: SinkMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                doc = metrics.health()
                self._send(200 if doc["ok"] else 503, "application/json", json.dumps(doc).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest())
            else:
                self._send(404, "application/json", b'{"error": "not_found", "detail": "GET /healthz or /metrics"}')

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
