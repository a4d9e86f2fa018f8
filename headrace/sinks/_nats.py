"""The ``nats`` target: every event published to NATS JetStream, once per window after JetStream's dedupe.

Each event becomes one message on ``<subject_prefix>.<table>`` (characters other than ``A-Za-z0-9_-``
in the table name become ``_``)
whose body is the event's JSON line (the ``headrace subscribe`` format) and whose headers are:

``Nats-Msg-Id``
    ``<scn>-<index>`` (``index``: the event's place among the events of its window with the same
    SCN); snapshot reads (``r``) get ``r<run>-<scn>-<crc32 of table and key>``, where ``run``
    (also the ``Headrace-Snapshot`` header) names the snapshot run: ``<control seq>.<snapshot_scn>``,
    the stream sequence of the last ``snapshot_restarted`` control message before it (0: none) and
    the snapshot's SCN. JetStream drops a message whose id it stored within the stream's duplicate
    window, so a replayed window is not stored again, while the unchanged rows of a restarted
    snapshot (same row SCN, same key) are: every restart publishes a new control message first.
``Headrace-Scn``, ``Headrace-Op``, ``Headrace-Table``
    the event's SCN, operation letter and source table.
``Headrace-Window-End``
    ``1`` on the last event of a window (a source transaction): a consumer applying whole
    transactions applies up to it.
``Headrace-Schema``, ``Headrace-Schema-Version``
    the row schema's fingerprint (``GET /v1/schemas/<fingerprint>`` on the relay) and version.
``Headrace-Sink``, ``Headrace-Commit``, ``Headrace-Checkpoint``
    on the last message of each commit only: the sink's name, commit number and checkpoint (JSON).

A snapshot restart is a message on ``<subject_prefix>._control`` with ``Headrace-Control:
snapshot_restarted``: a consumer keeping a copy replaces it with the ``r`` messages that follow. It has
no message id (never a duplicate); its publish ack is awaited before the next message, whose run
takes its sequence. A replay that starts another snapshot than the one a cut-short commit left ``r``
messages of (the stream's last message) publishes one first (reason ``replay_of_another_snapshot``).

Resume contract: a commit publishes its messages in order, waits for every publish ack (the messages
are stored, or were duplicates), then writes ``{"commit": n, "checkpoint": …}`` under the sink's name
in the KV bucket ``headrace_sink`` (created with the stream when missing). On start the sink reads
that value *and* the stream's last message: when the last message carries a newer commit number (the
sink died after the acks, before the KV write), its ``Headrace-Checkpoint`` wins. The subscriber
resumes after that checkpoint. Messages of a commit that was cut short were published with the same
ids they get again on replay, so JetStream drops them, provided the sink comes back within the
duplicate window (``duplicate_window_seconds``, default 10 minutes). One sink per stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import zlib
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from .._logging import get_logger
from ..errors import Unavailable, UsageError
from ..relay import Op
from ..relay.client import Checkpoint, SnapshotRestarted, Window
from ..relay.client._cli import event_json
from ._config import NatsTarget
from ._plan import key_text
from ._target import SchemaOf

__all__ = ["KV_BUCKET", "NatsSinkTarget", "msg_id", "subject_for"]

log = get_logger("sink.nats")

KV_BUCKET = "headrace_sink"
T = TypeVar("T")


_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def subject_for(prefix: str, table: str) -> str:
    """The subject of ``table``'s events: every character but ``A-Za-z0-9_-`` becomes ``_`` (dots would
    split the token, ``*`` and ``>`` are wildcards NATS refuses in a published subject)."""
    return f"{prefix}.{_SUBJECT_UNSAFE.sub('_', table) or '_'}"


def msg_id(e: Any, index: int, run: str = "") -> str:
    """The message id of an event (``index``: its place among its window's events of the same SCN;
    ``run``: the snapshot run of a snapshot read, see the module docstring)."""
    if e.op is Op.READ:
        return f"r{run}-{e.scn}-{zlib.crc32((e.table + chr(0) + key_text(e.key)).encode()):08x}"
    return f"{e.scn}-{index}"


Message = tuple[str, bytes, dict[str, str]]


def control_message(item: SnapshotRestarted, prefix: str) -> Message:
    """The ``snapshot_restarted`` control message of a restart (no message id: never a duplicate)."""
    body = json.dumps({"control": "snapshot_restarted", "reason": item.reason, "detail": item.detail})
    return f"{prefix}._control", body.encode(), {"Headrace-Control": "snapshot_restarted"}


def window_messages(window: Window, prefix: str, run: str) -> list[Message]:
    """(subject, body, headers) of every event of ``window``, in order (sans-io); ``run`` names the
    snapshot run its snapshot reads belong to."""
    out: list[Message] = []
    seen: dict[int, int] = {}
    last = len(window.events) - 1
    for i, e in enumerate(window.events):
        idx = seen[e.scn] = seen.get(e.scn, -1) + 1
        headers = {
            "Nats-Msg-Id": msg_id(e, idx, run),
            "Headrace-Scn": str(e.scn),
            "Headrace-Op": e.op.value,
            "Headrace-Table": e.table,
            "Headrace-Schema": e.fingerprint,
            "Headrace-Schema-Version": str(e.schema_version),
        }
        if e.op is Op.READ:
            headers["Headrace-Snapshot"] = run
        if i == last:
            headers["Headrace-Window-End"] = "1"
        out.append((subject_for(prefix, e.table), event_json(e).encode(), headers))
    return out


def snapshot_scns(
    items: Sequence[Window | SnapshotRestarted], marks: Sequence[tuple[int, Checkpoint]]
) -> list[int | None]:
    """Per item, the ``snapshot_scn`` of the checkpoint saved after it (None outside a snapshot)."""
    out: list[int | None] = []
    j = 0
    for i in range(len(items)):
        while j < len(marks) and marks[j][0] <= i:
            j += 1
        s0 = marks[j][1].position.get("snapshot_scn") if j < len(marks) else None
        out.append(None if s0 is None else int(s0))
    return out


class NatsSinkTarget:
    """Publishes windows to a JetStream stream; the checkpoint in a KV bucket and the last message's headers."""

    def __init__(self, cfg: NatsTarget, sink_name: str) -> None:
        self.cfg = cfg
        self.name = sink_name
        self.commit_no = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sink-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self.duplicates = 0
        #: the stream sequence of the newest snapshot_restarted control message (0: none yet)
        self.control_seq = 0
        #: the run of the ``r`` messages a cut-short commit left at the stream's end (None: none)
        self._leftover: str | None = None
        try:
            self._run(self._connect())
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout if timeout is not None else self.cfg.ack_timeout * 6)

    async def _connect(self) -> None:
        try:
            import nats
        except ImportError as exc:
            raise UsageError("the nats target needs nats-py: pip install 'headrace[nats]'") from exc
        from nats.js.api import KeyValueConfig, StreamConfig
        from nats.js.errors import BucketNotFoundError, NotFoundError

        opts: dict[str, Any] = {"servers": self.cfg.servers, "max_reconnect_attempts": 3, "connect_timeout": 5}
        if self.cfg.credentials:
            opts["user_credentials"] = self.cfg.credentials
        try:
            self._nc = await nats.connect(**opts)
        except Exception as exc:
            raise Unavailable(f"NATS {self.cfg.servers}: {exc!r}") from exc
        self._js = self._nc.jetstream(timeout=self.cfg.ack_timeout, publish_async_max_pending=self.cfg.max_pending)
        try:
            await self._js.stream_info(self.cfg.stream)
        except NotFoundError:
            await self._js.add_stream(
                StreamConfig(
                    name=self.cfg.stream,
                    subjects=[f"{self.cfg.subject_prefix}.>"],
                    duplicate_window=self.cfg.duplicate_window_seconds,
                )
            )
            log.info("nats_stream_created", stream=self.cfg.stream, subjects=f"{self.cfg.subject_prefix}.>")
        try:
            self._kv = await self._js.key_value(KV_BUCKET)
        except (BucketNotFoundError, NotFoundError):
            self._kv = await self._js.create_key_value(KeyValueConfig(bucket=KV_BUCKET, history=1))

    def close(self) -> None:
        if self._nc is not None:
            try:
                self._run(self._nc.close(), timeout=5)
            except Exception as exc:  # closing a dead connection: nothing more to do
                log.debug("nats_close_failed", error=repr(exc))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- checkpoint ---------------------------------------------------------------------------------

    def load(self) -> Checkpoint | None:
        """The newer of the KV checkpoint and the one on the stream's last message (by commit number)."""
        return self._run(self._load())

    async def _load(self) -> Checkpoint | None:
        from nats.js.errors import KeyNotFoundError, NotFoundError

        best: tuple[int, Checkpoint] | None = None
        try:
            entry = await self._kv.get(self.name)
            if entry.value:
                d = json.loads(entry.value)
                best = (int(d["commit"]), Checkpoint.from_json(d["checkpoint"]))
        except (KeyNotFoundError, NotFoundError):
            pass
        info = await self._js.stream_info(self.cfg.stream)
        self.control_seq, self._leftover = 0, None
        if info.state.last_seq:
            try:
                ctl = await self._js.get_last_msg(self.cfg.stream, f"{self.cfg.subject_prefix}._control")
                self.control_seq = int(ctl.seq or 0)
            except NotFoundError:
                pass
            try:
                msg = await self._js.get_msg(self.cfg.stream, seq=info.state.last_seq)
            except NotFoundError:
                msg = None
            h = (msg.headers or {}) if msg is not None else {}
            mine = h.get("Headrace-Sink") == self.name and "Headrace-Commit" in h
            if mine and (best is None or int(h["Headrace-Commit"]) > best[0]):
                best = (int(h["Headrace-Commit"]), Checkpoint.from_json(json.loads(h["Headrace-Checkpoint"])))
                log.info("nats_checkpoint_from_last_message", commit=best[0], scn=best[1].scn)
            elif not mine and "Headrace-Snapshot" in h:  # a commit cut short amid snapshot reads
                self._leftover = h["Headrace-Snapshot"]
        if best is None:
            return None
        self.commit_no = best[0]
        return best[1]

    # -- the Target protocol ----------------------------------------------------------------------------

    def prepare(self, window: Window, schema_of: SchemaOf) -> None:
        """Nothing to prepare: subjects need no declaration."""

    def commit(self, items: Sequence[Window | SnapshotRestarted], checkpoint: Checkpoint) -> int:
        """As :meth:`commit_marked` with a single mark at the end."""
        return self.commit_marked(items, [(len(items), checkpoint)], checkpoint)

    def commit_marked(
        self,
        items: Sequence[Window | SnapshotRestarted],
        marks: Sequence[tuple[int, Checkpoint]],
        checkpoint: Checkpoint,
    ) -> int:
        """Publish ``items`` in order, wait for every ack, then save ``checkpoint`` in the KV bucket.

        ``marks`` (the checkpoint after each window) give each snapshot page its ``snapshot_scn``."""
        n = self.commit_no + 1
        cp = json.dumps(checkpoint.to_json(), sort_keys=True)
        extra = {"Headrace-Sink": self.name, "Headrace-Commit": str(n), "Headrace-Checkpoint": cp}
        sent, control_seq = self._run(self._commit(items, snapshot_scns(items, marks), n, checkpoint, extra))
        self.commit_no, self.control_seq = n, control_seq
        if items:
            self._leftover = None
        return sent

    async def _commit(
        self,
        items: Sequence[Window | SnapshotRestarted],
        snapshots: list[int | None],
        n: int,
        checkpoint: Checkpoint,
        extra: dict[str, str],
    ) -> tuple[int, int]:
        """Publish (pipelined; a control message's ack awaited for its sequence), then the KV write.
        Returns the messages published and the newest control message's sequence."""
        prefix, stream = self.cfg.subject_prefix, self.cfg.stream
        control_seq, leftover = self.control_seq, self._leftover
        total = sum(1 if isinstance(i, SnapshotRestarted) else len(i.events) for i in items)
        futures: list[Any] = []
        sent = 0

        async def control(item: SnapshotRestarted) -> int:
            nonlocal sent
            subject, body, headers = control_message(item, prefix)
            sent += 1
            if sent == total:
                headers = {**headers, **extra}
            ack = await self._js.publish(subject, body, headers=headers, stream=stream)
            return int(ack.seq)

        for item, s0 in zip(items, snapshots, strict=True):
            if isinstance(item, SnapshotRestarted):
                leftover = None
                control_seq = await control(item)
                continue
            run = f"{control_seq}.{'' if s0 is None else s0}"
            if leftover is not None and any(e.op is Op.READ for e in item.events):
                if run != leftover:  # a cut-short commit left reads of another snapshot: replace them too
                    log.info("nats_replay_of_another_snapshot", left=leftover, now=run)
                    total += 1
                    control_seq = await control(SnapshotRestarted(0, [], "replay_of_another_snapshot", leftover))
                    run = f"{control_seq}.{'' if s0 is None else s0}"
                leftover = None
            for subject, body, headers in window_messages(item, prefix, run):
                sent += 1
                if sent == total:
                    headers = {**headers, **extra}
                futures.append(await self._js.publish_async(subject, body, headers=headers, stream=stream))
        if futures:
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.cfg.ack_timeout * 3)
            self.duplicates += sum(1 for a in acks if a.duplicate)
        value = json.dumps({"commit": n, "checkpoint": checkpoint.to_json()}, sort_keys=True)
        await self._kv.put(self.name, value.encode())
        return sent, control_seq
