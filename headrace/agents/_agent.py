"""The agent: discover → tail → chunk → spool → ship, wired together, plus the Log API's writer.

Threads: the reader (:class:`~headrace.agents._tailer.Tailer`), the shipper
(:func:`headrace._ship.pump`, with its preparing and ack-recording helpers), and watchdog's
observer. They share the spool (locked) and the tailer's state (locked). :meth:`Agent.stop` stops
reading (the spool is synced), lets the batch in flight finish and its ack be checkpointed, then
saves the checkpoint file.

Resume-state contract (everything under ``state_dir``):

* ``spool/`` — chunks not yet acked, with their cursors (:mod:`headrace._spool`);
* ``checkpoints.json`` — per stream the acked cursor (:mod:`headrace.agents._checkpoint`);
* ``sources.json`` — sources added and removed through the control API, replaced atomically on every
  change, applied on top of the config file's ``sources`` at start (so a restart keeps them).

Log API streams (``POST /v1/log``) are named ``_api/<data_type>``; their records are appended to
the spool and synced before the request is answered, so a 200 means durable on the agent's disk.
Each request's chunk is checked with :func:`headrace._chunk.validate_chunk` (the rules a collector
applies) *before* it is spooled: a request that could never be delivered is refused with
:class:`~headrace.errors.InvalidInput` and leaves no trace in the spool.

Supervision (:mod:`headrace._supervise`): the reader, the shipper and watchdog's observer run
under one :class:`~headrace._supervise.Supervisor` (``agent.supervise`` in the config).

* ``agent-reader`` dies (an exception escaping the tailer): ``/healthz`` 503 naming it and the
  error; restarted after a backoff with a *new* :class:`Tailer` built from disk (the checkpoint and
  the spool's newest cursors, exactly what a process restart would use: the dead one's in-memory
  read positions may be ahead of what reached the spool); more than ``max_restarts`` deaths in
  ``window_seconds`` → the agent exits non-zero.
* ``agent-shipper`` dies (the pump raised, e.g. :class:`~headrace._ship.AckNotRecorded` when the
  checkpoint could not be saved): the same rule; a restarted pump re-offers everything not released.
* ``agent-watcher`` (watchdog's observer thread) stops: restarted with a new observer; past the
  limit the agent keeps going on periodic rescans alone (``degraded`` in ``/healthz``, still 200).
* The spool's disk is full: the reader dies with ``ENOSPC`` (nothing of the chunk was spooled; the
  spool cuts a partial record) and is restarted every few seconds until space returns (not counted
  towards the limit); ``POST /v1/log`` answers 503 ``disk_full``; ``/healthz`` is 503 with ``disk full``
  in its reason until space is back. The shipper keeps shipping; an ack it cannot record (the
  checkpoint save fails) is not released and is re-sent after the restart (the collector dedupes).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from .._chunk import Chunk, validate_chunk
from .._dirlock import lock_dir
from .._logging import get_logger
from .._ship import Ack, Shipper, pump
from .._spool import Spool, SpoolEntry
from .._statefile import StateFile
from .._supervise import Supervisor, request_exit
from .._tls import watched_client_context
from ..errors import InvalidInput
from ._allowed import allowed_roots, file_problem, pattern_problem
from ._checkpoint import Checkpoints, Cursor, StreamCheckpoint
from ._config import AgentConfig, SourceConfig
from ._discover import Watcher
from ._stream_status import StreamStatus
from ._tailer import Tailer

__all__ = ["Agent", "lock_state_dir"]

log = get_logger("agent")

LOG_API_RECORDS = Counter("headrace_agent_log_api_records_total", "Records received on POST /v1/log")
SPOOL_USED = Gauge("headrace_agent_spool_bytes", "Bytes in the spool waiting for an ack")
API_PREFIX = "_api/"
_PATH = re.compile(r"(?<![\w:/.])/[^\s'\",)]+")
#: The largest chunk a collector takes by default (``max_chunk_bytes``); the agent refuses more at the door.
MAX_CHUNK_BYTES = 16 << 20


def lock_state_dir(state_dir: str) -> int:
    """Take ``state_dir/.lock`` (flock) for this process; raise :class:`FatalError` if another agent has it."""
    return lock_dir(state_dir, "state_dir", "agent")


class RuntimeSources(BaseModel):
    """``sources.json``: sources added through the control API (as configs) and configured ones removed."""

    added: list[dict[str, Any]] = []
    removed: list[str] = []


#: before versions the body had the same shape
SOURCES_FILE = StateFile("agent sources", RuntimeSources, 1)


class Agent:
    """One agent process's machinery (the HTTP app is a thin layer over it)."""

    def __init__(self, cfg: AgentConfig, *, on_fatal: Callable[[str], None] = request_exit) -> None:
        self.cfg = cfg
        self.supervisor = Supervisor("agent", cfg.supervise, on_fatal=on_fatal)
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(
            self.state_dir / "spool", cap_bytes=cfg.spool_cap_bytes, segment_bytes=cfg.spool_segment_bytes
        )
        self.checkpoints = Checkpoints.load(self.state_dir)
        self._runtime_path = self.state_dir / "sources.json"
        self._runtime = self._load_runtime()
        #: folders run-time sources must stay inside (``agent.allowed_paths``), resolved
        self.allowed_roots = allowed_roots(cfg)
        self._runtime_ids = {SourceConfig.model_validate(a).id for a in self._runtime["added"]}
        self.tailer = Tailer(cfg, self.spool, self.checkpoints, self._effective_sources())
        self.tailer.confine = self._confine
        self._read_stop = threading.Event()
        self._ship_stop = threading.Event()
        self.shipper = Shipper(
            cfg.collectors,
            token=cfg.token,
            tls=watched_client_context(cfg.client_tls),
            timeout=cfg.ship_timeout_seconds,
            max_backoff=cfg.max_backoff_seconds,
            stop=self._ship_stop,
            compression=cfg.compression,
            compression_level=cfg.compression_level,
        )
        self.watcher = Watcher(
            lambda paths: self.tailer.on_paths(paths),
            lambda a, b: self.tailer.on_moved(a, b),
            on_lost=lambda: self.tailer.rescan_soon(),
            on_exit=lambda: self.supervisor.poke(),
        )
        self.tailer.events_reliable = self.watcher.reliable
        self._threads: list[threading.Thread] = []
        self._api_lock = threading.Lock()
        self._api_seq: dict[str, int] = {}
        spooled = self.spool.last_cursors()
        for name, cp in self.checkpoints.streams.items():
            if name.startswith(API_PREFIX):
                seqs = [cp.acked.seq if cp.acked else 0]
                raw = spooled.get((cfg.name, name))
                if raw:
                    seqs.append(Cursor.decode(raw).seq)
                self._api_seq[name] = max(seqs)
        self.last_ack: Ack | None = None
        self._stopping = False

    # -- runtime sources ----------------------------------------------------------------------------

    def _load_runtime(self) -> dict[str, Any]:
        saved = SOURCES_FILE.load(self._runtime_path)
        return (saved or RuntimeSources()).model_dump()

    def _effective_sources(self) -> list[SourceConfig]:
        removed = set(self._runtime["removed"])
        out = {s.id: s for s in self.cfg.sources if s.id not in removed}
        for raw in self._runtime["added"]:
            s = SourceConfig.model_validate(raw)
            out[s.id] = s
        return list(out.values())

    def _save_runtime(self) -> None:
        SOURCES_FILE.save(self._runtime_path, RuntimeSources.model_validate(self._runtime))

    def _confine(self, src: SourceConfig, path: str) -> str | None:
        """Files of run-time sources must resolve inside the allowed roots (checked before opening)."""
        if src.id not in self._runtime_ids:
            return None
        return file_problem(path, self.allowed_roots)

    def reload(self, cfg: AgentConfig) -> None:
        """SIGHUP: new ``allowed_paths`` and the token sent to collectors take effect now."""
        self.allowed_roots = allowed_roots(cfg)
        self.shipper.set_token(cfg.token)
        with self.tailer.lock:  # files refused only for their place may be allowed now: look again
            self.tailer.refused = {
                p: v for p, v in self.tailer.refused.items() if not v[1].startswith("outside_allowed_paths")
            }
            self.tailer.scan_needed = True
        self.tailer.wake.set()
        log.info("agent_reloaded", allowed_paths=self.allowed_roots)

    def add_source(self, src: SourceConfig) -> None:
        """Tail another glob from now on (kept across restarts).

        Raises :class:`~headrace.errors.InvalidInput` (nothing saved) when the glob leads outside
        ``agent.allowed_paths`` (reason ``outside_allowed_paths``) or the source's chunks could never
        pass a collector's check (its tags); a file whose stream name cannot be valid, or that
        resolves outside the allowed roots (a symlink), is refused when found, never opened (see
        :class:`~headrace.agents._tailer.Tailer`).
        """
        problem = pattern_problem(src.path, self.allowed_roots)
        if problem is not None:
            raise InvalidInput("outside_allowed_paths", problem)
        validate_chunk(Chunk(self.cfg.name, "_probe", src.data_type, 0, 0, b"", dict(src.tags)), 1)
        self._runtime["added"] = [a for a in self._runtime["added"] if SourceConfig.model_validate(a).id != src.id]
        self._runtime["added"].append(src.model_dump())
        self._runtime["removed"] = [r for r in self._runtime["removed"] if r != src.id]
        self._save_runtime()
        self._runtime_ids.add(src.id)
        self.tailer.add_source(src)
        self.watcher.set_patterns(self.tailer.patterns())
        log.info("source_added", source=src.id, path=src.path, data_type=src.data_type)

    def remove_source(self, source_id: str) -> bool:
        """Stop tailing a source (its spooled chunks are still delivered; checkpoints are kept)."""
        if not self.tailer.remove_source(source_id):
            return False
        self._runtime["added"] = [a for a in self._runtime["added"] if SourceConfig.model_validate(a).id != source_id]
        self._runtime_ids.discard(source_id)
        if any(s.id == source_id for s in self.cfg.sources) and source_id not in self._runtime["removed"]:
            self._runtime["removed"].append(source_id)
        self._save_runtime()
        self.watcher.set_patterns(self.tailer.patterns())
        log.info("source_removed", source=source_id)
        return True

    def sources(self) -> list[dict[str, Any]]:
        with self.tailer.lock:
            return [{"id": s.id, **s.model_dump()} for s in self.tailer.sources.values()]

    # -- Log API ------------------------------------------------------------------------------------

    def log_records(self, data_type: str, records: list[str], tags: dict[str, str] | None = None) -> int:
        """Append records (one line each) to stream ``_api/<data_type>``; durable when this returns.

        Raises :class:`~headrace._spool.SpoolFull` when the spool is at its cap, and its subclass
        :class:`~headrace._spool.SpoolDiskFull` when its disk is full (nothing appended; the caller
        retries); an :class:`OSError` from the sync means "not known to be durable" (not acked).
        """
        from .._names import check_component

        check_component("data_type", data_type)
        if not records:
            return 0
        try:
            data = b"".join(r.encode() + (b"" if r.endswith("\n") else b"\n") for r in records)
        except UnicodeEncodeError as exc:
            raise InvalidInput("bad_record", f"a record is not valid Unicode text: {exc.reason}") from exc
        name = API_PREFIX + data_type
        with self._api_lock:
            start = self._api_seq.get(name, 0)
            chunk = Chunk(self.cfg.name, name, data_type, start, start + len(data), data, dict(tags or {}))
            # The same check the chunk gets when it leaves the spool: refuse here, before the 200.
            validate_chunk(chunk, MAX_CHUNK_BYTES)
            if name not in self.checkpoints.streams:
                with self.checkpoints.lock:
                    self.checkpoints.streams[name] = StreamCheckpoint("", data_type)
                self.checkpoints.save()
            self.spool.append(chunk, Cursor(start + len(data)).encode())
            # In the spool now (it may be shipped even if the sync fails): the next request goes after it.
            self._api_seq[name] = start + len(data)
            self.spool.sync()
        LOG_API_RECORDS.inc(len(records))
        return len(records)

    # -- lifecycle ----------------------------------------------------------------------------------

    def _on_acked(self, entries: list[SpoolEntry], ack: Ack | None) -> None:
        self.last_ack = ack
        self.tailer.on_acked(entries)
        SPOOL_USED.set(self.spool.used_bytes())

    def _read(self) -> None:
        self.tailer.run(self._read_stop)

    def _new_tailer(self) -> None:
        """Replace a dead reader's tailer with one built from disk (see the module docstring)."""
        old = self.tailer
        try:
            old.close()
        except Exception as exc:  # its files are closed best effort; the new tailer opens its own
            log.warning("tailer_close_failed", error=repr(exc))
        self.tailer = Tailer(self.cfg, self.spool, self.checkpoints, self._effective_sources())
        self.tailer.confine = self._confine
        self.tailer.events_reliable = self.watcher.reliable
        self.watcher.set_patterns(self.tailer.patterns())

    def _ship(self) -> None:
        pump(
            self.spool,
            self.shipper,
            self._ship_stop,
            max_bytes=self.cfg.batch_bytes,
            max_chunks=1000,
            on_acked=self._on_acked,
            dead_letter_dir=self.state_dir / "rejected",
            max_chunk_bytes=MAX_CHUNK_BYTES,
            idle_wait=None,  # no timer while idle: an append, an ack failure or stop() (spool.wake) wakes it
        )

    def health(self) -> dict[str, Any]:
        """``{"ok": …}`` for ``/healthz``: not ok while a worker is down, the spool's disk is full or a
        collector refuses our token.

        ``reason`` (also as ``detail``) names each problem (a worker that is down and its error, with
        file paths left out: ``/healthz`` is open); ``workers`` gives every worker's state and restarts.
        """
        out = self.supervisor.health()
        problems = [out["reason"]] if "reason" in out else []
        full = self.spool.disk_full()
        if full is not None:
            problems.append(f"spool disk full: {full}")
        down = self.shipper.down_for()
        if down is not None and down[0] >= self.cfg.unreachable_after_seconds and len(self.spool):
            problems.append(f"no collector has acked for {down[0]:.0f} s: {down[1]}")
        unreadable = len(self.tailer.unreadable)
        if unreadable:
            first = next(iter(self.tailer.unreadable.values()))
            problems.append(f"{unreadable} file(s) the sources match cannot be read ({first}); see /v1/status")
        if self.shipper.refused is not None:
            problems.append("collector refused our token")
            out["detail"] = "fix agent.token or the collector's tokens (SIGHUP reloads both); data waits in the spool"
        out["ok"] = not problems
        out["spool_bytes"] = self.spool.used_bytes()
        if problems:
            out["reason"] = _PATH.sub("<path>", "; ".join(problems))
            out.setdefault("detail", out["reason"])
        return out

    def start(self) -> None:
        self.watcher.start()
        self.watcher.set_patterns(self.tailer.patterns())
        self.supervisor.watch("agent-watcher", self.watcher.alive, self.watcher.restart, notifies=True)
        reader = self.supervisor.run("agent-reader", self._read, on_restart=self._new_tailer)
        shipper = self.supervisor.run("agent-shipper", self._ship)
        self._threads = [reader, shipper]
        log.info("agent_started", name=self.cfg.name, collectors=self.cfg.collectors, state_dir=str(self.state_dir))

    def stop(self) -> None:
        """Stop reading, finish the batch in flight, save checkpoints, close files."""
        self._stopping = True
        self.supervisor.stop()
        self._read_stop.set()
        self.tailer.wake.set()
        self._threads[0].join(30)
        self._ship_stop.set()
        self.spool.wake()  # the idle shipper waits on the spool without a timeout
        self._threads[1].join(60)
        self.watcher.stop()
        self.checkpoints.save()
        self.tailer.close()
        self.spool.close()
        self.shipper.close()
        log.info("agent_stopped", spooled_chunks=len(self.spool))

    def status(self) -> dict[str, Any]:
        streams = self.tailer.status()
        with self._api_lock:
            for name, seq in self._api_seq.items():
                cp = self.checkpoints.streams.get(name)
                acked = cp.acked.seq if cp and cp.acked else 0
                line = StreamStatus(
                    name,
                    "",
                    "log-api",
                    name[len(API_PREFIX) :],
                    acked_offset=acked,
                    read_offset=seq,
                    lag_bytes=seq - acked,
                )
                streams.append(line.as_dict())
        used = self.spool.used_bytes()
        SPOOL_USED.set(used)
        return {
            "name": self.cfg.name,
            "collectors": self.cfg.collectors,
            "last_ack_from": self.last_ack.url if self.last_ack else None,
            "collector_state": [
                {
                    "url": url,
                    "last_ack": st["last_ack"],
                    "last_error_at": st["last_error"][0] if st["last_error"] else None,
                    "last_error": st["last_error"][1] if st["last_error"] else None,
                }
                for url, st in self.shipper.collectors.items()
            ],
            "unreadable_files": dict(self.tailer.unreadable),
            "collector_refused_token": self.shipper.refused,
            "allowed_paths": self.allowed_roots,
            "spool": {"used_bytes": used, "cap_bytes": self.cfg.spool_cap_bytes, "chunks": len(self.spool)},
            "streams": streams,
        }
