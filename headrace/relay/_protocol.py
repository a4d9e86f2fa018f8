"""The relay's wire protocol, in one place: what the relay server, the bootstrap server and the client agree on.

Both servers answer ``GET /v1/stream`` (the bootstrap server's ``/v1/catchup`` is the same API over
its log) with the frames of whole windows and these headers (:func:`stream_headers`,
:func:`read_stream_headers`):

``X-Headrace-Scn``
    how far the server scanned: the subscriber may checkpoint there even when a filter let nothing through;
``X-Headrace-Oldest-Scn`` / ``X-Headrace-Newest-Scn``
    the oldest ``since`` the server can serve and the newest SCN it holds;
``X-Headrace-Windows`` / ``X-Headrace-Events``
    what the body holds;
``X-Headrace-Capture`` / ``X-Headrace-Capture-Error``
    the relay's capture is ``running`` or ``stopped`` and, when stopped, why (:class:`CaptureStopped`).

A bootstrap server's ``/v1/snapshot`` pages carry ``X-Headrace-Snapshot-Scn``, ``X-Headrace-Rows``,
``X-Headrace-Done`` and ``X-Headrace-Cursor`` (:func:`snapshot_headers`, :func:`read_snapshot_headers`).

Errors are ``{"error": reason, "detail": …, **extra}`` (:func:`headrace._http.error_response`); a
``since`` the server no longer holds is 410 :data:`SCN_TOO_OLD` with ``oldest_scn``
(:func:`too_old_response`), which the client turns into :class:`~headrace.errors.ScnTooOld`
(:func:`error_for`). Query parameters are checked the same way on every server
(:func:`check_params`, :func:`parse_sources`), and both servers answer ``/v1/schemas/{fingerprint}``
with :func:`schema_endpoint`. See docs/relay-api.md and docs/bootstrap.md for the API itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._http import Reject
from ..errors import HeadraceError, InvalidInput, ScnTooOld, Unavailable
from ._schema import SchemaVersion

__all__ = [
    "CAPTURE",
    "CAPTURE_ERROR",
    "CURSOR",
    "DONE",
    "EVENTS",
    "MAX_SCN",
    "NEWEST_SCN",
    "OLDEST_SCN",
    "ROWS",
    "SCN",
    "SCN_TOO_OLD",
    "SNAPSHOT_PARAMS",
    "SNAPSHOT_RESTARTED",
    "SNAPSHOT_SCN",
    "STREAM_PARAMS",
    "WINDOWS",
    "CaptureStopped",
    "Cursor",
    "SnapshotPosition",
    "StreamPosition",
    "capture_headers",
    "check_params",
    "decode_cursor",
    "encode_cursor",
    "error_for",
    "is_fingerprint",
    "parse_sources",
    "read_snapshot_headers",
    "read_stream_headers",
    "schema_endpoint",
    "snapshot_headers",
    "snapshot_query",
    "stream_headers",
    "stream_query",
    "too_old_response",
]

# -- header names -------------------------------------------------------------------------------------
SCN = "X-Headrace-Scn"
OLDEST_SCN = "X-Headrace-Oldest-Scn"
NEWEST_SCN = "X-Headrace-Newest-Scn"
WINDOWS = "X-Headrace-Windows"
EVENTS = "X-Headrace-Events"
CAPTURE = "X-Headrace-Capture"
CAPTURE_ERROR = "X-Headrace-Capture-Error"
SNAPSHOT_SCN = "X-Headrace-Snapshot-Scn"
ROWS = "X-Headrace-Rows"
DONE = "X-Headrace-Done"
CURSOR = "X-Headrace-Cursor"

# -- the snapshot ``after`` cursor (X-Headrace-Cursor) -------------------------------------------------
#: an ``after`` cursor: (source, sort key, store generation or None); opaque to clients, but
#: the lake sink compares two of them (pages go in key order), so both sides read it here
Cursor = tuple[str, bytes, int | None]


def encode_cursor(source: str, sort_key: bytes, gen: int | None = None) -> str:
    """The opaque ``after`` cursor of a snapshot row (of store generation ``gen``)."""
    body: list[Any] = [source, sort_key.hex()] if gen is None else [source, sort_key.hex(), gen]
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[str, bytes, int | None]:
    """``(source, sort key, generation)`` of a cursor (generation None in cursors of older servers).

    Strict: a JSON list of a string, a hex string and (optionally) an integer generation in
    ``[0, 2^63)``; anything else (floats, ``Infinity``, booleans, nesting past the recursion limit)
    is :class:`InvalidInput` ``bad_after``, never a 500.
    """
    bad = InvalidInput("bad_after", f"after={text[:200]!r} is not a cursor this server gave ({CURSOR})")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        parts = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise bad from None
    if not isinstance(parts, list) or len(parts) not in (2, 3):
        raise bad
    source, key = parts[0], parts[1]
    gen = parts[2] if len(parts) == 3 else None
    if not isinstance(source, str) or not isinstance(key, str):
        raise bad
    if gen is not None and (isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen < 1 << 63):
        raise bad
    try:
        return source, bytes.fromhex(key), gen
    except ValueError:
        raise bad from None


# -- reason codes the client acts on --------------------------------------------------------------------
#: 410: ``since`` is older than the server holds (body: ``oldest_scn``)
SCN_TOO_OLD = "scn_too_old"
#: 410 to a snapshot page: the snapshot being read was replaced; start again from the first page
SNAPSHOT_RESTARTED = "snapshot_restarted"

# -- query parameters -----------------------------------------------------------------------------------
#: ``/v1/stream`` (relay) and ``/v1/catchup`` (bootstrap server)
STREAM_PARAMS = frozenset({"since", "sources", "filter", "max_bytes", "wait_ms", "subscriber"})
#: ``/v1/snapshot`` (bootstrap server)
SNAPSHOT_PARAMS = frozenset({"sources", "filter", "after", "limit", "subscriber", "snapshot_scn"})
#: the largest SCN a parameter may carry (SCNs are unsigned 64-bit)
MAX_SCN = (1 << 64) - 1

_FINGERPRINT_RE = re.compile(r"[0-9a-fA-F]{16}")


def is_fingerprint(text: str) -> bool:
    """True for a schema fingerprint: exactly 16 hex digits (matched whole: no trailing newline)."""
    return _FINGERPRINT_RE.fullmatch(text) is not None


# -- server side ----------------------------------------------------------------------------------------


def check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """:class:`InvalidInput` ``unknown_parameter`` naming every query parameter not in ``allowed``."""
    unknown = sorted(set(params.keys()) - allowed)
    if unknown:
        raise InvalidInput("unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")


def parse_sources(
    params: Mapping[str, str], known: frozenset[str], missing: str, have: str, none: str = ""
) -> frozenset[str] | None:
    """The ``sources`` parameter (comma-separated) as a set, None when absent or empty.

    A name not in ``known`` is :class:`InvalidInput` ``unknown_source``, worded
    ``{missing}: a, b ({have}: x, y)`` (``none`` stands for an empty ``known``)."""
    if not params.get("sources"):
        return None
    wanted = frozenset(s.strip() for s in params["sources"].split(",") if s.strip())
    absent = sorted(wanted - known)
    if absent:
        raise InvalidInput(
            "unknown_source", f"{missing}: {', '.join(absent)} ({have}: {', '.join(sorted(known)) or none})"
        )
    return wanted


def stream_headers(scn: int, oldest: int | None, newest: int | None, windows: int, events: int) -> dict[str, str]:
    """The headers of a stream (or catch-up) response."""
    return {
        SCN: str(scn),
        OLDEST_SCN: str(oldest),
        NEWEST_SCN: str(newest),
        WINDOWS: str(windows),
        EVENTS: str(events),
    }


def snapshot_headers(snapshot_scn: int, rows: int, done: bool, cursor: str | None) -> dict[str, str]:
    """The headers of a snapshot page (no cursor on a page without rows)."""
    headers = {SNAPSHOT_SCN: str(snapshot_scn), ROWS: str(rows), DONE: "1" if done else "0"}
    if cursor is not None:
        headers[CURSOR] = cursor
    return headers


def capture_headers(stopped: Mapping[str, Any] | None) -> dict[str, str]:
    """``X-Headrace-Capture: running``, or ``stopped`` with the report (``reason``, ``error`` cut to 500
    characters, ``table``, ``column``, ``scn``, ``since``) as ASCII JSON in ``X-Headrace-Capture-Error``."""
    if stopped is None:
        return {CAPTURE: "running"}
    info = dict(stopped)
    info["error"] = str(info.get("error", ""))[:500]
    return {CAPTURE: "stopped", CAPTURE_ERROR: json.dumps(info, ensure_ascii=True, separators=(",", ":"))}


def too_old_response(reject: Reject, since: int, oldest: int, holder: str, advice: str) -> JSONResponse:
    """410 ``scn_too_old`` with ``oldest_scn``: ``since`` is older than the oldest SCN ``holder`` holds."""
    return reject(
        410,
        SCN_TOO_OLD,
        f"since={since} is older than the oldest SCN {holder} holds ({oldest}); {advice}",
        oldest_scn=oldest,
    )


def schema_endpoint(
    lookup: Callable[[str], Awaitable[SchemaVersion | None]], reject: Reject
) -> Callable[[Request], Awaitable[Response]]:
    """``GET /v1/schemas/{fingerprint}``: the schema version as JSON; 400 ``bad_fingerprint``, 404
    ``unknown_schema``. ``lookup`` gets the fingerprint in lower case."""

    async def schema(request: Request) -> Response:
        fp = request.path_params["fingerprint"]
        if not is_fingerprint(fp):
            return reject(400, "bad_fingerprint", f"{fp!r} is not 16 hex digits")
        sv = await lookup(fp.lower())
        if sv is None:
            return reject(404, "unknown_schema", f"no schema with fingerprint {fp}")
        return JSONResponse(sv.to_json())

    return schema


# -- client side ----------------------------------------------------------------------------------------


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v}


def stream_query(
    since: int | None,
    sources: Sequence[str] | None,
    filter: str | None,
    max_bytes: int | None,
    wait_ms: int,
    subscriber: str | None,
) -> dict[str, Any]:
    """The query parameters of a stream (or catch-up) request; unset ones are left out."""
    head: dict[str, Any] = {"wait_ms": wait_ms} | ({"since": since} if since is not None else {})
    return head | _given(sources=",".join(sources or ()), filter=filter, max_bytes=max_bytes, subscriber=subscriber)


def snapshot_query(
    sources: Sequence[str] | None,
    filter: str | None,
    after: str | None,
    limit: int,
    subscriber: str | None,
    snapshot_scn: int | None,
) -> dict[str, Any]:
    """The query parameters of a snapshot page request; unset ones are left out."""
    head: dict[str, Any] = {"limit": limit} | ({"snapshot_scn": snapshot_scn} if snapshot_scn is not None else {})
    return head | _given(sources=",".join(sources or ()), filter=filter, after=after, subscriber=subscriber)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name.lower())  # httpx's headers ignore case; a plain dict holds them lower-cased


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = _header(headers, name)
    return int(raw) if raw is not None else None


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """What a stream response's headers say: how far it scanned, and what the server holds."""

    scanned_scn: int
    oldest_scn: int | None
    newest_scn: int | None


def read_stream_headers(headers: Mapping[str, str], since: int | None) -> StreamPosition:
    """The :class:`StreamPosition` of a stream response asked with ``since`` (scanned: ``since`` if unsaid)."""
    scanned = _int_header(headers, SCN)
    return StreamPosition(
        scanned if scanned is not None else (since or 0),
        _int_header(headers, OLDEST_SCN),
        _int_header(headers, NEWEST_SCN),
    )


@dataclass(frozen=True, slots=True)
class SnapshotPosition:
    """What a snapshot page's headers say."""

    snapshot_scn: int
    cursor: str | None
    done: bool


def read_snapshot_headers(headers: Mapping[str, str]) -> SnapshotPosition:
    """The :class:`SnapshotPosition` of a snapshot page (``KeyError`` without its snapshot SCN)."""
    scn = _int_header(headers, SNAPSHOT_SCN)
    if scn is None:
        raise KeyError(SNAPSHOT_SCN)
    return SnapshotPosition(scn, _header(headers, CURSOR), _header(headers, DONE) == "1")


@dataclass(frozen=True, slots=True)
class CaptureStopped:
    """The relay's report that its capture stopped: no change past its newest SCN arrives until an
    operator acts (``X-Headrace-Capture: stopped`` and ``X-Headrace-Capture-Error``)."""

    #: ``unrepresentable_value`` or ``capture_failed``
    reason: str
    error: str
    table: str | None = None
    column: str | None = None
    scn: int | None = None
    since: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CaptureStopped | None:
        """The report in a stream response's headers; None while capture runs (or the server does not say)."""
        if _header(headers, CAPTURE) != "stopped":
            return None
        try:
            info = json.loads(_header(headers, CAPTURE_ERROR) or "{}")
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        scn = info.get("scn")
        return cls(
            reason=str(info.get("reason") or "capture_failed"),
            error=str(info.get("error") or "capture stopped"),
            table=info.get("table"),
            column=info.get("column"),
            scn=scn if isinstance(scn, int) else None,
            since=info.get("since"),
        )

    def __str__(self) -> str:
        parts = [self.reason]
        if self.table is not None:
            parts.append(f"table={self.table}")
        if self.column is not None:
            parts.append(f"column={self.column}")
        if self.scn is not None:
            parts.append(f"scn={self.scn}")
        if self.since is not None:
            parts.append(f"since={self.since}")
        return f"{' '.join(parts)}: {self.error}"


def error_for(status: int, body: Any, text: str, url: str, since: int) -> HeadraceError:
    """The error a client raises for an HTTP error answer (``status`` ≥ 400; ``body`` its parsed JSON or None).

    5xx (e.g. 503 ``too_many_streams``) is :class:`Unavailable` (retry with backoff, maybe elsewhere);
    410 ``scn_too_old`` is :class:`ScnTooOld`; any other 4xx is :class:`InvalidInput` with the server's reason.
    """
    fields = body if isinstance(body, dict) else {}
    if status >= 500:
        return Unavailable(f"{url}: HTTP {status} {fields.get('error', '')}".rstrip())
    reason = str(fields.get("error", f"http_{status}"))
    if status == 410 and reason == SCN_TOO_OLD:
        return ScnTooOld(since, fields.get("oldest_scn"), url)
    return InvalidInput(reason, f"{url}: HTTP {status}: {fields.get('detail', text[:200])}")
