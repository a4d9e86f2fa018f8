"""``headrace subscribe``: print events as JSON lines, checkpointing after each window.

A window's lines go out in a single ``write`` to stdout, then the checkpoint is saved; killed in
between, the subscriber prints that window again on restart (at-least-once, whole windows). When a
bootstrap snapshot starts over, a control line ``{"control": "snapshot_restarted", "reason": …,
"detail": …}`` comes first: a consumer keeping a copy replaces it with the rows that follow.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from typing import Any

from ..._tls import ClientTLS
from .._event import json_default
from ._checkpoint import Checkpoint, FileCheckpointStore
from ._decode import ChangeEvent, Window
from ._progress import SnapshotProgress
from ._subscriber import Consumer, Subscriber
from ._switchover import SnapshotRestarted

__all__ = ["event_json", "run_subscribe"]


def event_json(e: ChangeEvent) -> str:
    """The JSON line of one event (decimals as text, bytes as base64, times as ISO 8601; strict JSON:
    a NaN or infinite float is the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``).

    The first event of a table in a new schema also carries ``"schema_changed": true`` and
    ``"schema_version"``; an event whose ``after`` lacks TOASTed values PostgreSQL did not send carries
    ``"unchanged": [columns]``, one with values the relay nulled ``"unrepresentable": [columns]``.
    """
    line = {
        "scn": e.scn,
        "table": e.table,
        "op": e.op.value,
        "key": e.key,
        "before": e.before,
        "after": e.after,
        "ts_ms": e.ts_ms,
        "window_end": e.window_end,
    }
    if e.schema_changed:
        line["schema_changed"] = True
        line["schema_version"] = e.schema_version
    if e.unchanged:
        line["unchanged"] = list(e.unchanged)
    if e.unrepresentable:
        line["unrepresentable"] = list(e.unrepresentable)
    try:
        return _STRICT.encode(line)
    except ValueError:  # a NaN or ±Infinity somewhere: rare, so only then walk the values
        return _STRICT.encode(_finite(line))


# strict JSON: json.dumps would print bare NaN/Infinity, which JSON parsers refuse
_STRICT = json.JSONEncoder(default=json_default, ensure_ascii=False, allow_nan=False)
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _finite(v: Any) -> Any:
    """``v`` with each non-finite float replaced by the JSON string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else _NON_FINITE[repr(v)]
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(sys.stdout.fileno(), view) :]


class _Printer(Consumer):
    def __init__(self, progress: SnapshotProgress | None = None) -> None:
        self.progress = progress or SnapshotProgress(live=False, every=math.inf)

    def on_end_window(self, window: Window) -> None:
        _write("".join(event_json(e) + "\n" for e in window.events).encode())
        self.progress.rows(len(window.events))

    def on_snapshot_restarted(self, restart: SnapshotRestarted) -> None:
        line = {"control": "snapshot_restarted", "reason": restart.reason, "detail": restart.detail}
        _write((json.dumps(line, ensure_ascii=False) + "\n").encode())
        self.progress.restart(restart.reason)

    def on_start_bootstrap(self, checkpoint: Checkpoint) -> None:
        self.progress.phase(checkpoint.phase, checkpoint.position.get("snapshot_scn"))

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.progress.phase(checkpoint.phase, checkpoint.position.get("snapshot_scn"))


#: exit code of ``headrace subscribe --idle-exit`` when it ended while the relay's capture was stopped
EXIT_CAPTURE_STOPPED = 4
#: exit code of ``headrace subscribe --idle-exit`` when it ended while no relay answered (down, unreachable,
#: a failed TLS handshake)
EXIT_FAILED = 1


def run_subscribe(
    relays: list[str],
    sources: list[str] | None,
    checkpoint: str | None,
    filter: str | None,
    idle_exit: float | None,
    token: str | None,
    bootstrap: list[str] | None = None,
    from_snapshot: bool = False,
    tls: ClientTLS | None = None,
    progress_every: float = 5.0,
) -> None:
    """Run ``headrace subscribe``. A snapshot phase shows its progress on stderr
    (:class:`~._progress.SnapshotProgress`; log lines every ``progress_every`` seconds when not a terminal).

    When ``idle_exit`` ends the run while the relay reports its capture
    stopped, the report goes to stderr and the process exits :data:`EXIT_CAPTURE_STOPPED`: "nothing
    more arrived" did not mean "caught up". Likewise when it ends while the last request failed (the
    relay is down or unreachable, a certificate that does not verify, a client certificate refused):
    the reason, with the URL, goes to stderr and the exit status is 1."""
    sub = Subscriber(
        relays,
        sources,
        FileCheckpointStore(checkpoint) if checkpoint else None,
        filter,
        token=token,
        wait_ms=5_000,
        bootstrap=bootstrap,
        from_snapshot=from_snapshot,
        tls=tls,
    )
    signal.signal(signal.SIGTERM, lambda *_: sub.stop())
    sys.stdout.flush()
    progress = SnapshotProgress(every=progress_every)
    try:
        sub.run(_Printer(progress), idle_exit=idle_exit)
        stopped = sub.relay.capture_stopped
    finally:
        progress.close()
        sub.close()
    if sub.last_error is not None and not sub.stop_event.is_set():
        # idle because no relay answered (down, wrong address, a TLS handshake that failed): not "caught up"
        sys.stderr.write(f"headrace: no relay answered; the last error: {sub.last_error}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_FAILED)
    if stopped is not None and not sub.stop_event.is_set():
        sys.stderr.write(f"headrace: the relay's capture is stopped: {stopped}\n")
        sys.stderr.flush()
        raise SystemExit(EXIT_CAPTURE_STOPPED)
