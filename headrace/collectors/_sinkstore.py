"""The sink store: dedupe each accepted chunk, append the new pieces to the sink file, roll on policy.

This is the :class:`~headrace.collectors._commit.Store` of a collector that writes sink files (the
root of a collector tree). Its resume state is the sink folder itself, see ``_sink`` (files, torn
tails, the saved index) and ``_dedupe`` (what the index covers and how a restart rebuilds it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._chunk import Chunk, chunk_to_record
from .._logging import get_logger
from . import _metrics as m
from ._commit import Ack, Refused
from ._dedupe import DedupeIndex
from ._roll import RollPolicy
from ._sink import SinkFiles

__all__ = ["SinkStore"]

log = get_logger("collector.sink")


class SinkStore:
    """Dedupe + sink files + roll policy; every method runs in the group-commit thread, one at a time."""

    def __init__(
        self,
        sink: SinkFiles,
        index: DedupeIndex,
        policy: RollPolicy,
        *,
        forget_after_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.forget_after_ms = forget_after_ms
        self.sink = sink
        self.index = index
        self.policy = policy
        self.clock = clock
        self.wall_ms = wall_ms

    def commit(self, batches: list[list[Chunk]]) -> list[Ack | Refused]:
        now_ms = self.wall_ms()
        records: list[dict[str, Any]] = []
        acks: list[Ack | Refused] = []
        nbytes = chunks = dups = 0
        for batch in batches:
            batch_dups = 0
            for c in batch:
                a = self.index.admit(c, now_ms)
                batch_dups += a.duplicate
                nbytes += len(c.data)
                if a.trimmed_bytes:
                    m.TRIMMED_BYTES.inc(a.trimmed_bytes)
                records.extend(chunk_to_record(p, now_ms) for p in a.pieces)
            acks.append(Ack(len(batch), batch_dups))
            chunks += len(batch)
            dups += batch_dups
        if records:
            m.FSYNC_SECONDS.observe(self.sink.append(records, self.clock()))
            m.SINK_OPEN_BYTES.set(self.sink.size)
        m.CHUNKS_IN.inc(chunks)
        m.BYTES_IN.inc(nbytes)
        m.DUPLICATES.inc(dups)
        return acks

    def deadline(self) -> float | None:
        return self.policy.deadline(self.sink.opened_at)

    def maintain(self) -> None:
        if self.policy.due(self.sink.size, self.sink.opened_at, self.clock()):
            self._roll()

    def close(self) -> None:
        self._roll()

    def roll_now(self) -> str | None:
        """Close the open sink file into ``done/`` now (``POST /v1/roll``); its name, or None if none was open."""
        return self._roll()

    def _roll(self) -> str | None:
        if self.forget_after_ms is not None and self.sink.opened_at is not None:
            forgotten = self.index.forget_before(self.wall_ms() - self.forget_after_ms)
            if forgotten:
                log.info("dedupe index forgot idle streams", streams=forgotten)
        name = self.sink.roll(self.index.dumps)
        if name is not None:
            m.SINK_FILES.inc()
            m.SINK_OPEN_BYTES.set(0)
            log.info("sink file closed", file=name)
        return name

    def abandon(self) -> None:
        self.sink.abandon()

    def status(self) -> dict[str, Any]:
        opened = self.sink.opened_at
        return {
            "mode": "sink",
            "open_file": self.sink.open_name,
            "open_bytes": self.sink.size,
            "open_records": self.sink.records,
            "open_age_seconds": None if opened is None else round(self.clock() - opened, 3),
            "files_closed": self.sink.files_closed,
            "streams_tracked": len(self.index),
        }
