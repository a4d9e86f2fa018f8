"""The relay's capture thread: source → encode once → hand whole windows to the event loop.

Theory of operation: one thread iterates ``source.read(after)``; each window is encoded with
:func:`encode_window` (in this thread, so the event loop only copies bytes) and passed to the loop
with ``call_soon_threadsafe``, where it is appended to the ring buffer and waiting long-polls wake
up. On idle ticks the thread tells the source what is durable downstream (:class:`Acks`). A
:class:`~headrace.errors.TransientError` from the source restarts ``read`` after the last window
taken in, with exponential backoff.

Anything else *stops* capture, once, loudly (:class:`CaptureStop`): ``/healthz`` turns 503 with the
reason, table, column and SCN; ``/v1/status`` and every stream response say so; one structured
``capture_stopped`` log line; the ``headrace_relay_capture_stopped`` gauge is 1. The relay keeps
serving what it buffered, and the source is never told that anything past the last window taken in
is durable, so a restart re-reads from there and loses nothing.

A value the row encoder cannot represent (:class:`~headrace.errors.UnrepresentableValue`) follows
``relay.on_unrepresentable``: ``stop`` (the default, as above), or ``null_with_marker``: the row is
delivered with each offending column null and named in the extra column
:data:`UNREPRESENTABLE_COLUMN` (an array of strings; that column, and nullability of the offending
columns, are added to the table's schema only for such rows: a new schema version), logged, counted
in ``headrace_relay_unrepresentable_values_total{table,column}``, and capture goes on.

Resume-state contract: the relay keeps no event state of its own. After a restart it re-reads the
source from its oldest retained change, so the buffer refills from the database. ``acks.json`` in
``state_dir`` holds each durable consumer's acknowledged SCN (written atomically on every change);
schemas are saved by the :class:`~headrace.relay._schema.SchemaRegistry`. A capture stop is not
saved: a restarted relay tries the same change again (under the policy it is configured with then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from .._backoff import Backoff
from .._logging import get_logger
from .._statefile import StateFile
from ..errors import InvalidInput, TransientError, UnrepresentableValue
from ._codec import Codecs, EncodedWindow, RowCodec, encode_window
from ._schema import (
    COLUMN_PROP,
    MARKER_NAMES,
    UNREPRESENTABLE_MARKER,
    Column,
    SchemaRegistry,
    SchemaVersion,
    TableMeta,
    avro_schema,
)
from .sources._base import ChangeSource, RowChange

__all__ = ["UNREPRESENTABLE_COLUMN", "Acks", "Capture", "CaptureStop", "PolicyCodecs"]

log = get_logger("relay.capture")

#: the marker column of ``on_unrepresentable: null_with_marker``: names of the columns set to null
UNREPRESENTABLE_COLUMN: Final = MARKER_NAMES[UNREPRESENTABLE_MARKER]

Policy = Literal["stop", "null_with_marker"]

CAPTURE_STOPPED = Gauge(
    "headrace_relay_capture_stopped", "1 while capture is stopped by an error it cannot retry (see /healthz)"
)
UNREPRESENTABLE_VALUES = Counter(
    "headrace_relay_unrepresentable_values",
    "Captured values the relay could not encode for their column (stopped capture, or nulled and marked)",
    ["table", "column"],
)


class AcksState(BaseModel):
    """``acks.json``: each durable consumer's acknowledged SCN."""

    scns: dict[str, int] = {}


#: version 0 (before versions): the consumer → SCN mapping itself
ACKS_FILE = StateFile("relay acks", AcksState, 1, {0: lambda legacy: {"scns": legacy}})


class Acks:
    """Acknowledged SCNs of the configured durable consumers, saved atomically in ``acks.json``."""

    def __init__(self, state_dir: str | Path, consumers: list[str]) -> None:
        self.consumers = list(consumers)
        self.path = Path(state_dir) / "acks.json"
        self._lock = threading.Lock()
        saved = ACKS_FILE.load(self.path)
        self._scns: dict[str, int] = {k: v for k, v in saved.scns.items() if k in self.consumers} if saved else {}

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
                ACKS_FILE.save(self.path, AcksState(scns=self._scns))
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


@dataclass(frozen=True, slots=True)
class CaptureStop:
    """Why and where capture stopped: what ``/healthz``, ``/v1/status`` and stream responses report."""

    #: ``unrepresentable_value`` (a value the encoder cannot represent) or ``capture_failed`` (any other error)
    reason: str
    error: str
    table: str | None
    column: str | None
    scn: int | None
    since: float  # epoch seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "error": self.error,
            "table": self.table,
            "column": self.column,
            "scn": self.scn,
            "since": dt.datetime.fromtimestamp(self.since, dt.UTC).isoformat(timespec="milliseconds"),
        }


class PolicyCodecs(Codecs):
    """:class:`Codecs` whose :meth:`encode_change` ties an error to its change (table, SCN) and, under
    ``null_with_marker``, encodes the change again with the offending columns null and marked before
    its event (and fingerprint) is built. Each image is still encoded exactly once on the normal path.
    """

    def __init__(self, registry: SchemaRegistry, policy: Policy = "stop") -> None:
        super().__init__(registry)
        self.policy: Policy = policy
        #: the change whose encoding raised (None: the error came from elsewhere, e.g. the source)
        self.failed_change: RowChange | None = None
        self._relaxed: dict[TableMeta, frozenset[str]] = {}
        self._marked: dict[tuple[TableMeta, frozenset[str]], TableMeta] = {}
        self._probes: dict[TableMeta, RowCodec] = {}
        self._lock = threading.Lock()
        #: (table, column) → [values nulled, last SCN]
        self.nulled: dict[tuple[str, str], list[int]] = {}

    def encode_change(self, change: RowChange) -> tuple[SchemaVersion, bytes | None, bytes | None]:
        codec = self.for_change(change)
        side = "before"
        try:
            bb = codec.encode(change.before) if change.before is not None else None
            side = "after"
            ab = codec.encode(change.after) if change.after is not None else None
        except UnrepresentableValue as exc:
            if exc.scn is None:
                exc.scn = change.scn
            if self.policy != "null_with_marker":
                self.failed_change = change
                raise
            return self._with_nulls(change, codec.version, exc, side)
        except Exception:
            self.failed_change = change
            raise
        return codec.version, bb, ab

    def _marked_meta(self, meta: TableMeta, relaxed: frozenset[str]) -> TableMeta:
        key = (meta, relaxed)
        m = self._marked.get(key)
        if m is None:
            cols = [Column(c.name, c.type, True, c.marker) if c.name in relaxed else c for c in meta.columns]
            m = self._marked[key] = TableMeta(meta.name, tuple(cols), meta.key, meta.namespace).with_marker(
                UNREPRESENTABLE_MARKER
            )[0]
        return m

    def _probe(self, meta: TableMeta) -> RowCodec:
        """An encoder for ``meta`` that is not registered (a try, not yet a schema version)."""
        codec = self._probes.get(meta)
        if codec is None:
            codec = self._probes[meta] = RowCodec(SchemaVersion(meta.name, 0, "", avro_schema(meta), meta))
        return codec

    def _with_nulls(
        self, change: RowChange, version: SchemaVersion, first: UnrepresentableValue, side: str
    ) -> tuple[SchemaVersion, bytes | None, bytes | None]:
        """Encode ``change`` with each column the encoder refuses set to null and listed in the marker.

        Columns are found one error at a time, with unregistered encoders; only the final shape is
        registered, so a row with several bad columns makes at most one new schema version.
        """
        images: dict[str, dict[str, Any] | None] = {
            "before": dict(change.before) if change.before is not None else None,
            "after": dict(change.after) if change.after is not None else None,
        }
        marks: dict[str, set[str]] = {"before": set(), "after": set()}
        order = {c.name: i for i, c in enumerate(change.table.columns)}
        not_null = {c.name for c in change.table.columns if not c.nullable}
        # columns once relaxed for this table stay relaxed: one marked schema version, not one per row
        relaxed = set(self._relaxed.get(change.table, frozenset()))
        exc = first
        for _ in range(2 * len(change.table.columns) + 1):  # each round nulls one more column
            row = images[side]
            assert row is not None
            col = _column_named(row, exc.column, version)
            if col is None or col in marks[side]:
                break  # nulling what it names does not help: stop
            row[col] = None
            marks[side].add(col)
            relaxed.add(col)
            self._count(change, col, exc.reason)
            meta = self._marked_meta(change.table, frozenset(relaxed))
            marker = meta.marker_column(UNREPRESENTABLE_MARKER)
            assert marker is not None
            codec = self._probe(meta)
            version = codec.version
            out: dict[str, bytes | None] = {"before": None, "after": None}
            failed: str | None = None
            for s in ("before", "after"):
                img = images[s]
                if img is None:
                    continue
                for c in relaxed & not_null:  # a null the table cannot hold travels only marked
                    if img.get(c) is None and c not in marks[s]:
                        marks[s].add(c)
                        self._count(change, c, "null in a NOT NULL column")
                img[marker] = sorted(marks[s], key=order.__getitem__) or None
                try:
                    out[s] = codec.encode(img)
                except UnrepresentableValue as again:
                    if again.scn is None:
                        again.scn = change.scn
                    exc, failed = again, s
                    break
                except Exception:
                    self.failed_change = change
                    raise
            if failed is None:
                self._relaxed[change.table] = frozenset(relaxed)
                # the same schema registered: same bytes, and the event gets its fingerprint
                sv = self.for_change(dataclasses.replace(change, table=meta)).version
                return sv, out["before"], out["after"]
            side = failed
        self.failed_change = change
        raise exc

    def _count(self, change: RowChange, column: str, reason: str) -> None:
        UNREPRESENTABLE_VALUES.labels(change.table.name, column).inc()
        k = (change.table.name, column)
        with self._lock:
            seen = self.nulled.get(k)
            if seen is None:
                self.nulled[k] = seen = [0, 0]
            seen[0] += 1
            seen[1] = change.scn
            first = seen[0] == 1
        # one warning per column, then debug: the counter and /v1/status count the rest
        (log.warning if first else log.debug)(
            "unrepresentable_value_nulled",
            table=change.table.name,
            column=column,
            scn=change.scn,
            reason=reason,
            marker=UNREPRESENTABLE_COLUMN,
        )

    def nulled_summary(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"table": t, "column": c, "count": n, "last_scn": scn}
                for (t, c), (n, scn) in sorted(self.nulled.items())
            ]


def _column_named(row: Mapping[str, Any], name: str, version: SchemaVersion) -> str | None:
    """The SQL column an encoder error names (it may give the Avro field name)."""
    if name in row:
        return name
    for f in version.schema.get("fields", ()):
        if f.get("name") == name:
            col = f.get(COLUMN_PROP, name)
            return col if col in row else None
    return None


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
        policy: Policy = "stop",
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.codecs = PolicyCodecs(registry, policy)
        self.acks = acks
        self.max_window_bytes = max_window_bytes
        self.after = after_scn
        self.loop = loop
        self.deliver = deliver
        self.on_stop = on_stop
        self.stop_event = threading.Event()
        self.stopped: CaptureStop | None = None
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="relay-capture", daemon=True)

    @property
    def failed(self) -> str | None:
        """The error that stopped capture, or None while it runs."""
        return self.stopped.error if self.stopped is not None else None

    def start(self) -> None:
        CAPTURE_STOPPED.set(0)
        self._thread.start()

    @property
    def dead(self) -> bool:
        """True if the capture thread ended without being asked to and without recording why
        (something escaped :meth:`_run`'s handlers): ``/healthz`` must not say ok then."""
        return (
            self._thread.ident is not None
            and not self._thread.is_alive()
            and self.stopped is None
            and not self.stop_event.is_set()
        )

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)
        if self.stopped is not None:  # the thread ended on the error without closing the source
            try:
                self.source.close()
            except Exception as exc:  # closing is best effort at shutdown
                log.warning("source_close_failed", error=str(exc))

    def _run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self.stop_event.is_set():
            try:
                self.source.acknowledge(self.acks.durable())
                for item in self.source.read(self.after, self.stop_event):
                    self.connected = True
                    backoff.succeeded()
                    if item is None:
                        self.source.acknowledge(self.acks.durable())
                        for meta in self.source.tables():  # new tables and shapes get their schema now
                            self.codecs.registry.register(meta)
                        continue
                    self.codecs.failed_change = None
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
                wait = backoff.failed()
                log.warning("source_unavailable", error=str(exc), retry_in_s=round(wait, 2))
                self.stop_event.wait(wait)
            except Exception as exc:
                self._stopped_by(exc)
                return
        try:
            self.source.close()
        except Exception as exc:  # closing is best effort at shutdown
            log.warning("source_close_failed", error=str(exc))

    def _stopped_by(self, exc: Exception) -> None:
        change = self.codecs.failed_change
        if isinstance(exc, UnrepresentableValue):
            if exc.scn is None and change is not None:
                exc.scn = change.scn
            stop = CaptureStop("unrepresentable_value", str(exc), exc.table, exc.column, exc.scn, time.time())
            UNREPRESENTABLE_VALUES.labels(exc.table, exc.column).inc()
        else:
            stop = CaptureStop(
                "capture_failed",
                f"{type(exc).__name__}: {exc}",
                change.table.name if change is not None else None,
                None,
                change.scn if change is not None else None,
                time.time(),
            )
        self.stopped = stop
        CAPTURE_STOPPED.set(1)
        log.error(
            "capture_stopped",
            reason=stop.reason,
            table=stop.table,
            column=stop.column,
            scn=stop.scn,
            error=stop.error,
            after_scn=self.after,
            policy=self.codecs.policy,
            # a value no encoder takes is a data problem: the fields above say all; anything else is a bug
            exc_info=not isinstance(exc, UnrepresentableValue),
            hint="see docs/relay.md, 'When capture stops'",
        )
        if self.on_stop is not None:
            self.loop.call_soon_threadsafe(self.on_stop)

    def describe(self) -> dict[str, Any]:
        """The ``capture`` object of ``/v1/status``."""
        out: dict[str, Any] = {
            "state": "stopped" if self.stopped is not None else "running",
            "policy": self.codecs.policy,
            "connected": self.connected,
            "read_scn": self.after,
            "error": None,
            "reason": None,
            "table": None,
            "column": None,
            "scn": None,
            "since": None,
        }
        if self.stopped is not None:
            out.update(self.stopped.to_json())
        out["unrepresentable_nulled"] = self.codecs.nulled_summary()
        out["at"] = time.time()
        return out
