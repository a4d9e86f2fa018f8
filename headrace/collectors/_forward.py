"""The forwarding store: a collector that passes chunks on to upstream collectors (Scribe's network store).

A collector with ``upstream`` set writes no sink files. It appends each accepted chunk to a bounded
on-disk spool (``headrace._spool``, the agent's spool) and fsyncs it once per group commit; that is
when the sender gets its ack. A pump thread (``headrace._ship.pump``) ships the spool's head to the
upstream list with failover and backoff, and releases chunks from the spool only when an upstream
collector acked them (itself after an fsync). So collectors form a tree, and an upstream outage
only fills the spool: while it is full, requests are answered 503 ``spool_full`` (nothing of such a
batch is acked; the sender keeps it and retries or fails over), never dropped.

Resume-state contract: the spool's own (see ``headrace._spool``): appended chunks are durable once
acked downstream; the head position is saved at each upstream ack; after a crash everything after
the head is shipped again. Re-sending is harmless: the collector that writes sink files removes
duplicates by chunk identity. A forwarding collector therefore keeps no dedupe index of its own (a
chunk re-sent to it is spooled and forwarded again, and dropped upstream). A batch upstream refuses
for its token (401/403) is retried with backoff, never set aside, and ``/healthz`` answers 503
("collector refused our token") until upstream accepts it. A batch upstream refuses
with another 4xx is kept whole in ``<spool_dir>/rejected/`` (with a ``.json`` naming the upstream's answer),
logged (``ship_rejected``), counted (``headrace_collector_forward_rejected_chunks_total``, and
``rejected_upstream_chunks`` in ``/v1/status``) and released, so it cannot stall the spool. Such a
chunk can only be one spooled by an older collector: this one accepts a batch only after the same
strict parser its upstream uses (``headrace._chunk.parse_chunk``), so it never forwards what a root
would refuse. The spool reads its own records back without the name/range rules (only framing, CRC
and JSON types), so a record written under older rules is set aside, never cut with what follows.
"""

from __future__ import annotations

import threading
from typing import Any

from .._chunk import Chunk
from .._logging import get_logger
from .._ship import Ack as ShipAck
from .._ship import Shipper, pump
from .._spool import Spool, SpoolDiskFull, SpoolEntry, SpoolFull
from .._supervise import Supervisor
from . import _metrics as m
from ._commit import Ack, Refused

__all__ = ["ForwardStore"]

log = get_logger("collector.forward")


class ForwardStore:
    """Spool + pump thread; :meth:`commit` runs in the group-commit thread, shipping in its own thread."""

    def __init__(
        self,
        spool: Spool,
        shipper: Shipper,
        *,
        batch_chunks: int = 1000,
        batch_bytes: int = 4 << 20,
        join_seconds: float = 20.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.spool = spool
        self.shipper = shipper
        self.stop = shipper.stop
        self.batch_chunks = batch_chunks
        self.batch_bytes = batch_bytes
        self.join_seconds = join_seconds
        self.forwarded_chunks = 0
        self.rejected_chunks = 0
        self.last_upstream: str | None = None
        self.supervisor = supervisor or Supervisor("collector")
        self._thread: threading.Thread | None = None
        m.FORWARD_PENDING.set(spool.used_bytes())

    def start(self) -> None:
        """Start the pump thread (``forward-pump``); when it dies the supervisor restarts it or the collector exits."""
        self._thread = self.supervisor.run("forward-pump", self._pump)

    def _pump(self) -> None:
        pump(
            self.spool,
            self.shipper,
            self.stop,
            max_chunks=self.batch_chunks,
            max_bytes=self.batch_bytes,
            on_acked=self._on_acked,
            dead_letter_dir=self.spool.dir.parent / "rejected",  # <spool_dir>/rejected, beside chunks/
        )

    def _on_acked(self, entries: list[SpoolEntry], ack: ShipAck | None) -> None:
        if ack is None:
            self.rejected_chunks += len(entries)
            m.FORWARD_REJECTED.inc(len(entries))
            m.FORWARD_PENDING.set(self.spool.used_bytes())
            return
        self.forwarded_chunks += len(entries)
        self.last_upstream = ack.url
        m.FORWARDED_CHUNKS.inc(len(entries))
        m.FORWARD_PENDING.set(self.spool.used_bytes())

    def commit(self, batches: list[list[Chunk]]) -> list[Ack | Refused]:
        results: list[Ack | Refused] = []
        nbytes = chunks = 0
        for batch in batches:
            need = sum(len(c.data) for c in batch)
            if need > self.spool.room():
                results.append(
                    Refused("spool_full", f"forwarding spool full ({self.spool.cap_bytes} bytes); retry later")
                )
                continue
            try:
                for c in batch:
                    self.spool.append(c)
            except SpoolFull as exc:
                # The part appended is forwarded; the sender re-sends the whole batch, upstream dedupes.
                results.append(Refused("disk_full" if isinstance(exc, SpoolDiskFull) else "spool_full", str(exc)))
                continue
            results.append(Ack(len(batch), 0))
            nbytes += need
            chunks += len(batch)
        self.spool.sync()
        m.CHUNKS_IN.inc(chunks)
        m.BYTES_IN.inc(nbytes)
        m.FORWARD_PENDING.set(self.spool.used_bytes())
        return results

    @property
    def upstream_refused(self) -> str | None:
        """Why upstream refuses this collector's token (401/403), while it does; None otherwise."""
        return self.shipper.refused

    def deadline(self) -> float | None:
        return None

    def maintain(self) -> None:
        pass

    def close(self) -> None:
        self.supervisor.stop()
        self.stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(self.join_seconds)
        self.spool.close()
        self.shipper.close()

    def abandon(self) -> None:
        self.supervisor.stop()
        self.stop.set()

    def status(self) -> dict[str, Any]:
        return {
            "mode": "forward",
            "upstream": self.shipper.urls,
            "last_upstream": self.last_upstream,
            "spool_dir": str(self.spool.dir),
            "spool_chunks": len(self.spool),
            "spool_bytes": self.spool.used_bytes(),
            "spool_cap_bytes": self.spool.cap_bytes,
            "forwarded_chunks": self.forwarded_chunks,
            "rejected_upstream_chunks": self.rejected_chunks,
            "upstream_refused": self.shipper.refused,
        }
