"""Decoded events for applications: typed values, optional reader schemas (sans-io).

:class:`EventDecoder` turns wire :class:`~headrace.relay._event.Event` objects into
:class:`ChangeEvent` with Python values, fetching each writer schema once through a callable
(the subscriber asks the relay's ``/v1/schemas/{fingerprint}``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..._frozen import fast_constructor
from .._codec import RowCodec
from .._event import Event, EventFields, Op, check_whole_windows, decode_key, frame_fields
from .._schema import UNCHANGED_MARKER, UNREPRESENTABLE_MARKER, SchemaVersion

__all__ = ["ChangeEvent", "EventDecoder", "Window"]


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change with decoded, typed values.

    ``op`` is :attr:`Op.TRUNCATE <headrace.relay.Op.TRUNCATE>` when every row of ``table`` was deleted
    (``TRUNCATE``): then ``key`` is ``[]`` and ``before``/``after`` are None; a consumer keeping a copy
    empties that table, in the window's order.

    ``before`` and ``after`` hold the table's columns only. What the relay says about their values
    travels beside them: ``unchanged`` (PostgreSQL: columns whose TOASTed value this UPDATE left as it
    was and did not send; they are None in ``after``, and a copy keeps its old value) and
    ``unrepresentable`` (columns the relay set to None because it could not represent their value,
    under ``on_unrepresentable: null_with_marker``).
    """

    scn: int
    table: str
    op: Op
    key: list[Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ts_ms: int
    window_end: bool
    fingerprint: str
    schema_version: int
    #: the first event of a table in a schema other than the one this decoder saw for it last: the
    #: table's columns changed (compare ``schema_version``); never set on a table's first event
    schema_changed: bool = False
    #: columns of ``after`` not sent because their TOASTed value was left unchanged (keep the old value)
    unchanged: tuple[str, ...] = ()
    #: columns of ``before``/``after`` set to None because the relay could not represent their value
    unrepresentable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Window:
    """The events of one source transaction (or several consecutive ones), in order."""

    scn: int
    events: list[ChangeEvent]


class EventDecoder:
    """Decode events, fetching and caching writer schemas by fingerprint."""

    def __init__(
        self,
        fetch_schema: Callable[[str], SchemaVersion],
        reader_schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.fetch_schema = fetch_schema
        self.reader_schemas = dict(reader_schemas or {})
        self._codecs: dict[str, RowCodec] = {}
        self._last_fp: dict[str, str] = {}

    def codec(self, fingerprint: str, table: str) -> RowCodec:
        c = self._codecs.get(fingerprint)
        if c is None:
            sv = self.fetch_schema(fingerprint)
            c = self._codecs[fingerprint] = RowCodec(sv, self.reader_schemas.get(table))
        return c

    def decode(self, e: Event) -> ChangeEvent:
        """One wire event as a :class:`ChangeEvent` (fetching its writer schema the first time)."""
        fields = (e.scn, e.source, e.op, e.key, e.ts_ms, e.fingerprint, e.before, e.after, e.window_end)
        return self.decode_fields([fields])[0]

    def decode_many(self, events: Iterable[Event]) -> list[ChangeEvent]:
        """:meth:`decode` of each event, in order."""
        return self.decode_fields(
            [(e.scn, e.source, e.op, e.key, e.ts_ms, e.fingerprint, e.before, e.after, e.window_end) for e in events]
        )

    def decode_frames(self, body: bytes) -> list[ChangeEvent]:
        """The events of a response body of whole windows (a snapshot page), decoded in one pass over
        its frames: the same events as ``[decode(e) for e in iter_frames(body)]`` with the same errors
        (a bad or cut frame, a body ending inside a window: :class:`~headrace.errors.InvalidInput`),
        without an :class:`Event` per frame."""
        fields = list(frame_fields(body))
        check_whole_windows(fields)
        return self.decode_fields(fields)

    def decode_fields(self, rows: Sequence[EventFields]) -> list[ChangeEvent]:
        """The events given as their fields (:data:`~headrace.relay._event.EventFields`), decoded in
        order: the one decoding step every method here goes through."""
        out: list[ChangeEvent] = []
        append = out.append
        codecs, last_fps, make = self._codecs, self._last_fp, _new_change_event
        for scn, source, op, key, ts_ms, fp, raw_before, raw_after, window_end in rows:
            c = codecs.get(fp)
            if c is None:
                c = self.codec(fp, source)
            last = last_fps.get(source)
            if last != fp:
                last_fps[source] = fp
            before = None if raw_before is None else c.decode(raw_before)
            after = None if raw_after is None else c.decode(raw_after)
            unchanged: tuple[str, ...] = ()
            unrepresentable: tuple[str, ...] = ()
            if c.markers:  # the relay's marker columns travel beside the row, never in it
                marker = c.markers.get(UNCHANGED_MARKER)
                if marker is not None:
                    unchanged = tuple((after or {}).pop(marker, None) or ())
                    if before is not None:
                        before.pop(marker, None)
                marker = c.markers.get(UNREPRESENTABLE_MARKER)
                if marker is not None:
                    nulled = [*((before or {}).pop(marker, None) or ()), *((after or {}).pop(marker, None) or ())]
                    unrepresentable = tuple(dict.fromkeys(nulled))
            append(
                make(
                    scn,
                    source,
                    op,
                    decode_key(key),
                    before,
                    after,
                    ts_ms,
                    window_end,
                    fp,
                    c.version.version,
                    last is not None and last != fp,
                    unchanged,
                    unrepresentable,
                )
            )
        return out


#: a :class:`ChangeEvent` from all its fields in order, without the frozen dataclass's per-field setattr
_new_change_event = fast_constructor(ChangeEvent)
