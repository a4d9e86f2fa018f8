"""Read a ``headrace sink`` nats target's stream instead of a relay: :class:`JetStreamSubscriber`.

The ``nats`` sink publishes one message per event on ``<subject_prefix>.<table>`` (body: the event's
``headrace subscribe`` JSON line; headers: ``Headrace-Scn``, ``Headrace-Op``, ``Headrace-Table``,
``Headrace-Window-End``, ``Headrace-Schema``, …) and a ``<subject_prefix>._control`` message when a
snapshot starts over (docs/sinks.md). This subscriber reads every subject of the stream with an
ordered consumer, reassembles windows at the ``Headrace-Window-End`` message and delivers them like
:class:`~headrace.relay.client.Subscriber` does: whole windows, in stream order (so in SCN order per
table), a window checkpointed when the loop asks for the next one.

Resume-state contract: the checkpoint is ``Checkpoint(scn, "jetstream", {"stream": S, "seq": Q})``: the
SCN of the last change window delivered (snapshot pages keep it) and the stream sequence of the last
window-end message delivered, saved only at window ends, in the
:class:`~headrace.relay.client.CheckpointStore` given (keep it with what the windows changed — e.g. a
:class:`~headrace.relay.client.SqlCheckpointStore` in the same database — for an exactly-once effect).
On start the consumer begins at ``Q + 1``. A checkpoint without a sequence (one a relay subscriber
saved, ``phase == "relay"``, or ``start_scn``) is resumed **by SCN**: a binary search with ``get_msg``
over the stream for the first window-end message whose ``Headrace-Scn`` is greater (valid outside a
snapshot, where SCNs grow with the sequence), starting after the last window at or before it. In both
cases a change window whose SCN is not above the checkpoint's SCN is skipped (read, not delivered): a
window the sink stored twice — a replay after JetStream's duplicate window — is not delivered twice.
Snapshot reads (``r``) are always delivered.

Values are the JSON forms of ``headrace subscribe`` (decimals as text, bytes as base64, times as
ISO 8601): the message carries the schema fingerprint (``ChangeEvent.fingerprint``) for a consumer
that wants the relay's ``/v1/schemas/<fingerprint>`` types.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from ..._logging import get_logger
from ...errors import Unavailable, UsageError
from .._event import Op
from ._checkpoint import Checkpoint, CheckpointStore, MemoryCheckpointStore
from ._decode import ChangeEvent, Window
from ._subscriber import Consumer
from ._switchover import SnapshotRestarted

__all__ = ["JETSTREAM_PHASE", "JetStreamSubscriber", "WindowAssembler", "event_from_message", "run_subscribe_jetstream"]

log = get_logger("relay.jetstream")

#: the checkpoint phase of a JetStream subscriber
JETSTREAM_PHASE = "jetstream"
T = TypeVar("T")
_OPS = {op.value: op for op in Op}


def event_from_message(data: bytes, headers: dict[str, str]) -> ChangeEvent:
    """The :class:`ChangeEvent` of one message the nats sink published (values in their JSON forms)."""
    d = json.loads(data)
    return ChangeEvent(
        scn=int(d["scn"]),
        table=str(d["table"]),
        op=_OPS[d["op"]],
        key=list(d.get("key") or []),
        before=d.get("before"),
        after=d.get("after"),
        ts_ms=int(d.get("ts_ms") or 0),
        window_end=headers.get("Headrace-Window-End") == "1",
        fingerprint=headers.get("Headrace-Schema", ""),
        schema_version=int(headers.get("Headrace-Schema-Version") or d.get("schema_version") or 0),
        schema_changed=bool(d.get("schema_changed", False)),
    )


class WindowAssembler:
    """Messages in stream order → whole windows and snapshot restarts (sans-io).

    :meth:`add` takes one message (its stream sequence, headers and body) and returns what became
    complete: a ``(Window, seq)`` at a window-end message, a ``(SnapshotRestarted, seq)`` at a control
    message, else None. ``after_scn``: change windows (no ``r`` events) whose SCN is not above it are
    dropped (a replay stored twice); ``sources`` keeps only those tables' events (a window left empty
    is still returned, so it is checkpointed).
    """

    def __init__(self, after_scn: int | None = None, sources: list[str] | None = None) -> None:
        self.after_scn = after_scn
        self.sources = set(sources) if sources is not None else None
        self._events: list[ChangeEvent] = []
        self.skipped = 0

    def add(
        self, seq: int, headers: dict[str, str], data: bytes
    ) -> tuple[Window, int] | tuple[SnapshotRestarted, int] | None:
        if headers.get("Headrace-Control") == "snapshot_restarted":
            self._events = []
            d = json.loads(data or b"{}")
            return SnapshotRestarted(0, [], str(d.get("reason", "snapshot_restarted")), str(d.get("detail", ""))), seq
        e = event_from_message(data, headers)
        self._events.append(e)
        if not e.window_end:
            return None
        events, self._events = self._events, []
        scn = events[-1].scn
        snapshot = any(x.op is Op.READ for x in events)
        if not snapshot and self.after_scn is not None and scn <= self.after_scn:
            self.skipped += 1
            return None
        if not snapshot:
            self.after_scn = scn
        if self.sources is not None:
            events = [x for x in events if x.table in self.sources]
        return Window(scn, events), seq


class JetStreamSubscriber:
    """Whole windows from a JetStream stream the ``nats`` sink fills, resumed from ``store``'s checkpoint.

    ``servers``, ``stream``, ``subject_prefix``: as in the sink's ``nats`` target. ``start_scn``: without a
    checkpoint, start after this SCN (resume by SCN); None: from the stream's first message.
    """

    def __init__(
        self,
        servers: list[str],
        stream: str = "HEADRACE",
        subject_prefix: str = "headrace",
        store: CheckpointStore | None = None,
        sources: list[str] | None = None,
        start_scn: int | None = None,
        credentials: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.servers = servers
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.store: CheckpointStore = store or MemoryCheckpointStore()
        self.sources = sources
        self.start_scn = start_scn
        self.credentials = credentials
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.checkpoint: Checkpoint | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jetstream-sub", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    # -- plumbing ----------------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout or self.timeout * 6)

    async def _connect(self) -> None:
        if self._nc is not None:
            return
        try:
            import nats
        except ImportError as exc:
            raise UsageError("reading JetStream needs nats-py: pip install 'headrace[nats]'") from exc
        opts: dict[str, Any] = {"servers": self.servers, "max_reconnect_attempts": 3, "connect_timeout": 5}
        if self.credentials:
            opts["user_credentials"] = self.credentials
        try:
            self._nc = await nats.connect(**opts)
        except Exception as exc:
            raise Unavailable(f"NATS {self.servers}: {exc!r}") from exc
        self._js = self._nc.jetstream(timeout=self.timeout)

    def stop(self) -> None:
        """Make :meth:`windows` / :meth:`run` return after the current window."""
        self.stop_event.set()

    def close(self) -> None:
        if self._nc is not None:
            try:
                if self._sub is not None:
                    self._run(self._sub.unsubscribe(), timeout=5)
                self._run(self._nc.close(), timeout=5)
            except Exception as exc:  # a dead connection: nothing more to do
                log.debug("jetstream_close_failed", error=repr(exc))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- where to start -----------------------------------------------------------------------------------

    async def _headers(self, seq: int) -> dict[str, str] | None:
        from nats.js.errors import NotFoundError

        try:
            m = await self._js.get_msg(self.stream, seq=seq)
        except NotFoundError:  # deleted or purged
            return None
        return dict(m.headers or {})

    async def seq_after_scn(self, scn: int) -> int:
        """The stream sequence to read from to get the windows after SCN ``scn`` (binary search over window ends).

        Returns the sequence after the last window-end message whose SCN is at most ``scn`` (the stream's
        first sequence when there is none). Messages that are not change window ends are stepped over.
        """
        info = await self._js.stream_info(self.stream)
        first, last = info.state.first_seq, info.state.last_seq
        if not last:
            return 1
        lo, hi, best = first, last, first - 1  # best: a window end with SCN <= scn, or before the stream
        while lo <= hi:
            mid = (lo + hi) // 2
            probe, h = mid, None
            while probe <= hi:  # the next window end of a change window at or after mid
                h = await self._headers(probe)
                if h is not None and h.get("Headrace-Window-End") == "1" and h.get("Headrace-Op") != "r":
                    break
                probe += 1
                h = None
            if h is None:
                hi = mid - 1
            elif int(h.get("Headrace-Scn", "0")) <= scn:
                best, lo = probe, probe + 1
            else:
                hi = mid - 1
        return int(best) + 1

    async def _subscribe(self, start_seq: int) -> Any:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        return await self._js.subscribe(
            f"{self.subject_prefix}.>",
            stream=self.stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_seq, 1)),
        )

    async def _next(self, sub: Any, timeout: float) -> tuple[int, dict[str, str], bytes] | None:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            m = await sub.next_msg(timeout=timeout)
        except (TimeoutError, NatsTimeout):
            return None
        return m.metadata.sequence.stream, dict(m.headers or {}), m.data or b""

    # -- delivery -----------------------------------------------------------------------------------------

    def windows(self, idle_exit: float | None = None) -> Iterator[Window | SnapshotRestarted]:
        """Whole windows (and snapshot restarts) in stream order; each is checkpointed when the loop asks
        for the next one. Ends after :meth:`stop` or ``idle_exit`` seconds without a message."""
        self._run(self._connect())
        cp = self.checkpoint = self.store.load()
        after: int | None
        if cp is not None and cp.phase == JETSTREAM_PHASE and cp.position.get("stream") == self.stream:
            start, after = int(cp.position["seq"]) + 1, cp.scn
        else:
            after = cp.scn if cp is not None else self.start_scn
            start = self._run(self.seq_after_scn(after)) if after is not None else 1
        log.info("jetstream_subscribe", stream=self.stream, start_seq=start, after_scn=after)
        sub = self._sub = self._run(self._subscribe(start))
        asm = WindowAssembler(after, self.sources)
        last_msg = time.monotonic()
        while not self.stop_event.is_set():
            got = self._run(self._next(sub, 0.5))
            if got is None:
                if idle_exit is not None and time.monotonic() - last_msg >= idle_exit:
                    return
                continue
            last_msg = time.monotonic()
            done = asm.add(*got)
            if done is None:
                continue
            item, seq = done
            yield item
            scn = asm.after_scn if asm.after_scn is not None else 0  # the last change window's SCN
            self.checkpoint = Checkpoint(scn, JETSTREAM_PHASE, {"stream": self.stream, "seq": seq})
            self.store.save(self.checkpoint)

    def run(self, consumer: Consumer, idle_exit: float | None = None) -> None:
        """Deliver to ``consumer`` (``on_start_window``, ``on_event``, ``on_end_window``,
        ``on_snapshot_restarted``, ``on_checkpoint``) until :meth:`stop` or idle exit."""
        for item in self.windows(idle_exit):
            if isinstance(item, SnapshotRestarted):
                consumer.on_snapshot_restarted(item)
                continue
            consumer.on_start_window(item)
            for e in item.events:
                consumer.on_event(e)
            consumer.on_end_window(item)
        if self.checkpoint is not None:
            consumer.on_checkpoint(self.checkpoint)


def run_subscribe_jetstream(
    servers: list[str],
    stream: str,
    subject_prefix: str,
    sources: list[str] | None,
    checkpoint: str | None,
    idle_exit: float | None,
) -> None:
    """``headrace subscribe --from-jetstream``: print the stream's windows as ``headrace subscribe`` JSON lines.

    As with a relay, a window's lines go out in one write and the checkpoint (a file) is saved after
    it: killed in between, the window is printed again, whole, on restart.
    """
    import signal

    from ._checkpoint import FileCheckpointStore
    from ._cli import _write, event_json

    sub = JetStreamSubscriber(
        servers, stream, subject_prefix, FileCheckpointStore(checkpoint) if checkpoint else None, sources
    )
    signal.signal(signal.SIGTERM, lambda *_: sub.stop())
    try:
        for item in sub.windows(idle_exit=idle_exit):
            if isinstance(item, SnapshotRestarted):
                line = {"control": "snapshot_restarted", "reason": item.reason, "detail": item.detail}
                _write((json.dumps(line, ensure_ascii=False) + "\n").encode())
            elif item.events:
                _write("".join(event_json(e) + "\n" for e in item.events).encode())
    finally:
        sub.close()
