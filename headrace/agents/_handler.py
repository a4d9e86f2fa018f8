"""A :class:`logging.Handler` that sends records to a local agent's Log API (Scribe's Log API).

``AgentLogHandler("http://127.0.0.1:7071", data_type="app")`` formats each record with its formatter
and queues the line; a background thread POSTs queued lines in batches to ``/v1/log``. Logging never
blocks on the network: the queue holds up to ``capacity`` lines; when it is full (the agent is down
for a long time) :meth:`emit` waits up to ``block_seconds`` and then drops the record and counts it
in :attr:`AgentLogHandler.dropped`. A failed POST (agent down, 503 spool full) is retried with
backoff; :meth:`close` (called by ``logging.shutdown`` at exit) flushes what is queued, for up to
``close_timeout`` seconds. ``token`` is sent as ``Authorization: Bearer …`` (an agent with
``agent.tokens`` needs one with the ``write`` scope); a 401/403 is retried like an outage (the
records are kept and counted in :attr:`AgentLogHandler.refused`), any other 4xx drops the batch.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import ssl
import threading

import httpx

from .._backoff import Backoff
from .._tls import ClientTLS, as_context

__all__ = ["AgentLogHandler"]


class AgentLogHandler(logging.Handler):
    """Ships formatted log records to ``POST {url}/v1/log`` as records of ``data_type``."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:7071",
        data_type: str = "app",
        *,
        tags: dict[str, str] | None = None,
        token: str | None = None,
        capacity: int = 100_000,
        batch: int = 500,
        block_seconds: float = 1.0,
        close_timeout: float = 10.0,
        level: int = logging.NOTSET,
        tls: ClientTLS | ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: how an https:// agent is verified (and the client certificate presented)."""
        super().__init__(level)
        self._tls = as_context(tls)
        self.url = url.rstrip("/") + "/v1/log"
        self.data_type = data_type
        self.tags = dict(tags or {})
        self.batch = batch
        self.block_seconds = block_seconds
        self.close_timeout = close_timeout
        self.dropped = 0
        self.sent = 0
        self.refused = 0  # POSTs answered 401/403 (retried)
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=capacity)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-log-handler", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self._queue.put(line, timeout=self.block_seconds)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        client = httpx.Client(timeout=10.0, headers=self._headers, verify=self._tls)
        pending: list[str] = []
        backoff = Backoff(0.05, 5.0)
        stop_seen = False
        try:
            while True:
                if not pending:
                    item = self._queue.get()
                    if item is None:
                        return
                    pending.append(item)
                while len(pending) < self.batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop_seen = True
                        break
                    pending.append(item)
                try:
                    resp = client.post(
                        self.url, json={"data_type": self.data_type, "records": pending, "tags": self.tags}
                    )
                    ok = resp.status_code == 200
                    if resp.status_code in (401, 403):  # the token: keep the records, retry with backoff
                        self.refused += 1
                    elif 400 <= resp.status_code < 500:  # bad request: retrying cannot help
                        self.dropped += len(pending)
                        pending = []
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.sent += len(pending)
                    pending = []
                    backoff.succeeded()
                elif pending and self._closing.wait(backoff.failed()) and stop_seen:
                    return
                if stop_seen and not pending:
                    return
        finally:
            client.close()

    def flush(self) -> None:
        """Wait (up to ``close_timeout``) until the sender took every queued record (:meth:`close` awaits delivery)."""
        deadline = threading.Event()
        waited = 0.0
        while not self._queue.empty() and waited < self.close_timeout and self._thread.is_alive():
            deadline.wait(0.05)
            waited += 0.05

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=self.close_timeout)
        self._thread.join(self.close_timeout)
        self._closing.set()
        self._thread.join(1.0)
        super().close()
