"""The relay's capture thread: source → encode once → hand whole windows to the event loop.

Theory of operation: one thread iterates ``source.read(after)``; each window is encoded with
:func:`encode_window` (in this thread, so the event loop only copies bytes) and passed to the loop
with ``call_soon_threadsafe``, where it is appended to the ring buffer and waiting long-polls wake
up. On idle ticks the thread tells the source what is durable downstream (:class:`Acks`). A
:class:`~headrace.errors.TransientError` from the source restarts ``read`` after the last window
taken in, with exponential backoff; anything else stops capture and turns ``/healthz`` red.

Resume-state contract: the relay keeps no event state of its own. After a restart it re-reads the
source from its oldest retained change, so the buffer refills from the database. ``acks.json`` in
``state_dir`` holds each durable consumer's acknowledged SCN (written atomically on every change);
schemas are saved by the :class:`~headrace.relay._schema.SchemaRegistry`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._atomic import write_atomic
from .._logging import get_logger
from ..errors import InvalidInput, TransientError
from ._codec import Codecs, EncodedWindow, encode_window
from ._schema import SchemaRegistry
from .sources._base import ChangeSource

__all__ = ["Acks", "Capture"]

log = get_logger("relay.capture")


class Acks:
    """Acknowledged SCNs of the configured durable consumers, saved atomically in ``acks.json``."""

    def __init__(self, state_dir: str | Path, consumers: list[str]) -> None:
        self.consumers = list(consumers)
        self.path = Path(state_dir) / "acks.json"
        self._lock = threading.Lock()
        self._scns: dict[str, int] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self._scns = {k: int(v) for k, v in data.items() if k in self.consumers}

    def ack(self, consumer: str, scn: int) -> int:
        """Record ``consumer``'s durable SCN (never moves back); returns the recorded value."""
        if consumer not in self.consumers:
            raise InvalidInput(
                "unknown_consumer", f"{consumer!r} is not in relay.durable_consumers ({', '.join(self.consumers)})"
            )
        with self._lock:
            if scn > self._scns.get(consumer, -1):
                self._scns[consumer] = scn
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, json.dumps(self._scns, sort_keys=True).encode())
            return self._scns[consumer]

    def durable(self) -> int | None:
        """The SCN every durable consumer has; None when none is configured."""
        if not self.consumers:
            return None
        with self._lock:
            return min(self._scns.get(c, 0) for c in self.consumers)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._scns)


class Capture:
    """Runs the source in a background thread and delivers encoded windows to ``deliver`` on ``loop``."""

    def __init__(
        self,
        source: ChangeSource,
        registry: SchemaRegistry,
        acks: Acks,
        max_window_bytes: int,
        after_scn: int,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[EncodedWindow], None],
    ) -> None:
        self.source = source
        self.codecs = Codecs(registry)
        self.acks = acks
        self.max_window_bytes = max_window_bytes
        self.after = after_scn
        self.loop = loop
        self.deliver = deliver
        self.stop_event = threading.Event()
        self.failed: str | None = None
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="relay-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self.stop_event.is_set():
            try:
                self.source.acknowledge(self.acks.durable())
                for item in self.source.read(self.after, self.stop_event):
                    self.connected = True
                    backoff = 0.1
                    if item is None:
                        self.source.acknowledge(self.acks.durable())
                        for meta in self.source.tables():  # new tables and shapes get their schema now
                            self.codecs.registry.register(meta)
                        continue
                    ew = encode_window(item, self.codecs, limit=self.max_window_bytes)
                    if ew is None:
                        continue
                    if not ew.data:
                        log.warning("window_larger_than_buffer", scn=ew.scn, events=ew.count)
                    self.after = item.scn
                    self.loop.call_soon_threadsafe(self.deliver, ew)
                    if self.stop_event.is_set():
                        break
            except TransientError as exc:
                self.connected = False
                log.warning("source_unavailable", error=str(exc), retry_in_s=backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                self.failed = f"{type(exc).__name__}: {exc}"
                log.exception("capture_failed", error=self.failed)
                return
        try:
            self.source.close()
        except Exception as exc:  # closing is best effort at shutdown
            log.warning("source_close_failed", error=str(exc))

    def describe(self) -> dict[str, Any]:
        return {"connected": self.connected, "failed": self.failed, "read_scn": self.after, "at": time.time()}
