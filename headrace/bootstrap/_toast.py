"""Filling in PostgreSQL's "unchanged TOAST" placeholders when updates are merged into snapshot rows.

An UPDATE that leaves a large (TOASTed) value as it was arrives from the relay with that column
null and its name listed in the extra column ``_headrace_unchanged`` (see
:mod:`headrace.relay.sources._pgstream`). A snapshot row must never carry such a placeholder: the
store keeps the last known value, so :class:`ToastFiller` takes the value from the row's previous
image — the one merged earlier in the same batch, or the one in the snapshot store — writes it into
the after image, and clears the marker (``_headrace_unchanged`` null). The row keeps the event's
writer schema (and fingerprint); only the marked columns' values change.

The work is done on the raw Avro record (the schema with its logical types stripped), so values are
copied bit for bit whatever their kind. Events whose schema has no marker column (every table that
never had such an update, every other source) are not decoded at all. If no previous image is
known (which a correct seed rules out), the column stays null and stays listed in the marker, a
warning is logged and ``headrace_bootstrap_toast_unfilled_total`` counts it: the row still says
which value it lacks.

Sans-io apart from the two lookups it is given (schemas by fingerprint, stored frames by key).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro

from .._logging import get_logger
from ..relay import Event, Op, SchemaVersion, decode_event, encode_event
from ..relay._schema import MARKER_PROP, UNCHANGED_MARKER
from ..relay.sources._pgstream import UNCHANGED_COLUMN
from ._metrics import TOAST_FILLED, TOAST_UNFILLED

__all__ = ["SchemaCache", "ToastFiller"]

log = get_logger("bootstrap.toast")

_COLUMN_PROP = "headrace.column"


def _strip_logical(t: Any) -> Any:
    """``t`` without ``logicalType`` annotations: values read and written as their Avro primitives."""
    if isinstance(t, list):
        return [_strip_logical(x) for x in t]
    if isinstance(t, dict):
        if t.get("type") == "record":
            return {**t, "fields": [{**f, "type": _strip_logical(f["type"])} for f in t["fields"]]}
        if t.get("type") == "array":
            return {**t, "items": _strip_logical(t["items"])}
        if "logicalType" in t:
            return {k: v for k, v in t.items() if k not in ("logicalType", "precision", "scale")}
    return t


class _Raw:
    """Raw read/write of one writer schema, and its column → field-name map."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.parsed = fastavro.parse_schema(_strip_logical(schema), _write_hint=False)
        self.fields = {f.get(_COLUMN_PROP, f["name"]): f["name"] for f in schema["fields"]}
        marked = [f["name"] for f in schema["fields"] if f.get(MARKER_PROP) == UNCHANGED_MARKER]
        if marked:
            self.marker: str | None = marked[0]
        elif any(MARKER_PROP in f for f in schema["fields"]):
            self.marker = None
        else:  # a schema written before markers carried MARKER_PROP: the marker had its fixed name
            legacy = [f for f in schema["fields"] if f["name"] == UNCHANGED_COLUMN and "array" in json.dumps(f["type"])]
            self.marker = legacy[0]["name"] if legacy else None

    def read(self, data: bytes) -> dict[str, Any]:
        rec = fastavro.schemaless_reader(io.BytesIO(data), self.parsed, None)
        assert isinstance(rec, dict)
        return rec

    def write(self, rec: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, rec)
        return buf.getvalue()


class SchemaCache:
    """Writer schemas by fingerprint, reloaded (at most once per :meth:`new_pass`) on a miss."""

    def __init__(self, load: Callable[[], dict[str, SchemaVersion]]) -> None:
        self._load = load
        self._schemas: dict[str, SchemaVersion] = {}
        self._raw: dict[str, _Raw | None] = {}
        self._reloaded = False

    def new_pass(self) -> None:
        self._reloaded = False

    def raw(self, fingerprint: str) -> _Raw | None:
        if fingerprint in self._raw:
            return self._raw[fingerprint]
        sv = self._schemas.get(fingerprint)
        if sv is None and not self._reloaded:
            self._reloaded = True
            self._schemas = self._load()
            sv = self._schemas.get(fingerprint)
        if sv is None:
            return None  # not cached: it may arrive later
        self._raw[fingerprint] = r = _Raw(sv.schema)
        return r

    def is_marked(self, fingerprint: str) -> bool:
        r = self.raw(fingerprint)
        return r is not None and r.marker is not None


class ToastFiller:
    """The ``r`` frame of an event's after image with unchanged-TOAST placeholders filled in.

    ``stored`` gives the snapshot store's frame of a (source, sort key) — prefetched by the caller.
    """

    def __init__(self, schemas: SchemaCache, stored: Callable[[str, bytes], bytes | None]) -> None:
        self.schemas = schemas
        self.stored = stored

    def __call__(self, e: Event, sk: bytes, prev_frame: bytes | None, prev_known: bool) -> bytes | None:
        """The filled frame, or None when ``e`` needs no filling (the caller builds the plain frame).

        ``prev_known``: ``prev_frame`` is the image this batch merged before ``e`` (None: deleted in
        this batch); otherwise the store is asked.
        """
        if e.after is None:
            return None
        raw = self.schemas.raw(e.fingerprint)
        if raw is None or raw.marker is None:
            return None
        rec = raw.read(e.after)
        names = rec.get(raw.marker)
        if not names:
            return None
        frame = prev_frame if prev_known else self.stored(e.source, sk)
        prev: dict[str, Any] | None = None
        prev_raw: _Raw | None = None
        if frame is not None:
            pe, _ = decode_event(frame)
            prev_raw = self.schemas.raw(pe.fingerprint)
            if prev_raw is not None and pe.after is not None:
                prev = prev_raw.read(pe.after)
        missing: list[str] = []
        for col in names:
            field = raw.fields.get(col)
            pfield = prev_raw.fields.get(col) if prev_raw is not None else None
            if field is None or prev is None or pfield is None or pfield not in prev:
                missing.append(col)
                continue
            rec[field] = prev[pfield]
        rec[raw.marker] = missing or None
        TOAST_FILLED.inc(len(names) - len(missing))
        if missing:
            TOAST_UNFILLED.inc(len(missing))
            log.warning("toast_value_unknown", table=e.source, scn=e.scn, columns=missing)
        after = raw.write(rec)
        return encode_event(Event(e.scn, e.source, Op.READ, e.key, e.ts_ms, e.fingerprint, None, after))
