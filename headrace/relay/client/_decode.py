"""Decoded events for applications: typed values, optional reader schemas (sans-io).

:class:`EventDecoder` turns wire :class:`~headrace.relay._event.Event` objects into
:class:`ChangeEvent` with Python values, fetching each writer schema once through a callable
(the subscriber asks the relay's ``/v1/schemas/{fingerprint}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..._frozen import fast_constructor
from .._codec import RowCodec
from .._event import Event, Op, decode_key
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


#: ``ChangeEvent(...)`` with every field, without the frozen dataclass's per-field cost
_change_event = fast_constructor(ChangeEvent)


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

    def decode_window(self, events: Sequence[Event]) -> list[ChangeEvent]:
        """``[self.decode(e) for e in events]``, with the per-event lookups hoisted out of the loop (the
        subscriber decodes a window at a time). Events of a schema with marker columns take
        :meth:`decode` itself."""
        out: list[ChangeEvent] = []
        append = out.append
        codecs, last_fp = self._codecs, self._last_fp
        make = _change_event
        for e in events:
            fp, source = e.fingerprint, e.source
            c = codecs.get(fp)
            if c is None or c.markers:
                append(self.decode(e))
                continue
            last = last_fp.get(source)
            if last != fp:
                last_fp[source] = fp
            b, a = e.before, e.after
            append(
                make(
                    e.scn,
                    source,
                    e.op,
                    decode_key(e.key),
                    None if b is None else c.decode(b),
                    None if a is None else c.decode(a),
                    e.ts_ms,
                    e.window_end,
                    fp,
                    c.version.version,
                    last is not None and last != fp,
                    (),
                    (),
                )
            )
        return out

    def decode(self, e: Event) -> ChangeEvent:
        fp, source = e.fingerprint, e.source
        c = self._codecs.get(fp)
        if c is None:
            c = self.codec(fp, source)
        last = self._last_fp.get(source)
        if last != fp:
            self._last_fp[source] = fp
        before = None if e.before is None else c.decode(e.before)
        after = None if e.after is None else c.decode(e.after)
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
        return ChangeEvent(
            e.scn,
            source,
            e.op,
            decode_key(e.key),
            before,
            after,
            e.ts_ms,
            e.window_end,
            fp,
            c.version.version,
            last is not None and last != fp,
            unchanged,
            unrepresentable,
        )
