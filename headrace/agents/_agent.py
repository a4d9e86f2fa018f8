"""The agent: discover → tail → chunk → spool → ship, wired together, plus the Log API's writer.

Threads: the reader (:class:`~headrace.agents._tailer.Tailer`), the shipper
(:func:`headrace._ship.pump`), and watchdog's observer. They share the spool (locked) and the
tailer's state (locked). :meth:`Agent.stop` stops reading (the spool is synced), lets the batch in
flight finish and its ack be checkpointed, then saves the checkpoint file.

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

Supervision: the reader and the shipper run through :meth:`Agent._supervised`; a thread that ends
while the agent is not stopping (an exception, or the shipper giving up after a failed checkpoint
save) is recorded in :attr:`Agent.dead` and ``/healthz`` answers 503 with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from .._atomic import write_atomic
from .._chunk import Chunk, validate_chunk
from .._dirlock import lock_dir
from .._logging import get_logger
from .._ship import Ack, Shipper, pump
from .._spool import Spool, SpoolEntry
from ..errors import InvalidInput
from ._checkpoint import Checkpoints, Cursor, StreamCheckpoint
from ._config import AgentConfig, SourceConfig
from ._discover import Watcher
from ._tailer import Tailer

__all__ = ["Agent", "lock_state_dir"]

log = get_logger("agent")

LOG_API_RECORDS = Counter("headrace_agent_log_api_records_total", "Records received on POST /v1/log")
THREADS_DEAD = Counter("headrace_agent_threads_died_total", "Agent threads that ended unexpectedly", ["thread"])
SPOOL_USED = Gauge("headrace_agent_spool_bytes", "Bytes in the spool waiting for an ack")
API_PREFIX = "_api/"
#: The largest chunk a collector takes by default (``max_chunk_bytes``); the agent refuses more at the door.
MAX_CHUNK_BYTES = 16 << 20


def lock_state_dir(state_dir: str) -> int:
    """Take ``state_dir/.lock`` (flock) for this process; raise :class:`FatalError` if another agent has it."""
    return lock_dir(state_dir, "state_dir", "agent")


class Agent:
    """One agent process's machinery (the HTTP app is a thin layer over it)."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(
            self.state_dir / "spool", cap_bytes=cfg.spool_cap_bytes, segment_bytes=cfg.spool_segment_bytes
        )
        self.checkpoints = Checkpoints.load(self.state_dir)
        self._runtime_path = self.state_dir / "sources.json"
        self._runtime = self._load_runtime()
        self.tailer = Tailer(cfg, self.spool, self.checkpoints, self._effective_sources())
        self._read_stop = threading.Event()
        self._ship_stop = threading.Event()
        self.shipper = Shipper(
            cfg.collectors,
            token=cfg.token,
            timeout=cfg.ship_timeout_seconds,
            max_backoff=cfg.max_backoff_seconds,
            stop=self._ship_stop,
            compression=cfg.compression,
            compression_level=cfg.compression_level,
        )
        self.watcher = Watcher(self.tailer.on_paths, self.tailer.on_moved)
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
        self.dead: dict[str, str] = {}  # thread name -> why it ended
        self._stopping = False
        self._ack_error: str | None = None

    # -- runtime sources ----------------------------------------------------------------------------

    def _load_runtime(self) -> dict[str, Any]:
        if self._runtime_path.exists():
            data: dict[str, Any] = json.loads(self._runtime_path.read_text())
            return data
        return {"added": [], "removed": []}

    def _effective_sources(self) -> list[SourceConfig]:
        removed = set(self._runtime["removed"])
        out = {s.id: s for s in self.cfg.sources if s.id not in removed}
        for raw in self._runtime["added"]:
            s = SourceConfig.model_validate(raw)
            out[s.id] = s
        return list(out.values())

    def _save_runtime(self) -> None:
        write_atomic(self._runtime_path, json.dumps(self._runtime, indent=1).encode())

    def add_source(self, src: SourceConfig) -> None:
        """Tail another glob from now on (kept across restarts).

        Raises :class:`~headrace.errors.InvalidInput` (nothing saved) when the source's chunks could
        never pass a collector's check (its tags); a file whose stream name cannot be valid is
        refused when found (see :class:`~headrace.agents._tailer.Tailer`).
        """
        validate_chunk(Chunk(self.cfg.name, "_probe", src.data_type, 0, 0, b"", dict(src.tags)), 1)
        self._runtime["added"] = [a for a in self._runtime["added"] if SourceConfig.model_validate(a).id != src.id]
        self._runtime["added"].append(src.model_dump())
        self._runtime["removed"] = [r for r in self._runtime["removed"] if r != src.id]
        self._save_runtime()
        self.tailer.add_source(src)
        self.watcher.set_patterns(self.tailer.patterns())
        log.info("source_added", source=src.id, path=src.path, data_type=src.data_type)

    def remove_source(self, source_id: str) -> bool:
        """Stop tailing a source (its spooled chunks are still delivered; checkpoints are kept)."""
        if not self.tailer.remove_source(source_id):
            return False
        self._runtime["added"] = [a for a in self._runtime["added"] if SourceConfig.model_validate(a).id != source_id]
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

        Raises :class:`~headrace._spool.SpoolFull` when the spool is at its cap (the caller retries).
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
            self.spool.sync()
            self._api_seq[name] = start + len(data)
        LOG_API_RECORDS.inc(len(records))
        return len(records)

    # -- lifecycle ----------------------------------------------------------------------------------

    def _on_acked(self, entries: list[SpoolEntry], ack: Ack | None) -> None:
        try:
            self.last_ack = ack
            self.tailer.on_acked(entries)
            SPOOL_USED.set(self.spool.used_bytes())
        except Exception as exc:  # pump stops shipping after this; /healthz must say why
            self._ack_error = f"could not record an ack: {exc.__class__.__name__}: {exc}"
            raise

    def _supervised(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """A thread running ``target``; if it ends while the agent is not stopping, it is recorded as dead."""

        def run() -> None:
            why = "ended"
            try:
                target()
            except BaseException as exc:
                why = f"{exc.__class__.__name__}: {exc}"
                raise
            finally:
                if not self._stopping:
                    if why == "ended" and self._ack_error:
                        why = f"ended: {self._ack_error}"
                    self.dead[name] = why
                    THREADS_DEAD.labels(name).inc()
                    log.error("thread_died", thread=name, reason=why)

        return threading.Thread(target=run, name=name, daemon=True)

    def health(self) -> dict[str, Any]:
        """``{"ok": …}`` for ``/healthz``: not ok once the reader or the shipper died (with the reasons)."""
        dead = dict(self.dead)
        for t in self._threads:
            if not t.is_alive() and not self._stopping and t.name not in dead:
                dead[t.name] = "not running"
        if dead:
            return {"ok": False, "detail": "; ".join(f"{k} died: {v}" for k, v in sorted(dead.items()))}
        return {"ok": True, "spool_bytes": self.spool.used_bytes()}

    def start(self) -> None:
        self.watcher.start()
        self.watcher.set_patterns(self.tailer.patterns())
        reader = self._supervised("agent-reader", lambda: self.tailer.run(self._read_stop))
        shipper = self._supervised(
            "agent-shipper",
            lambda: pump(
                self.spool,
                self.shipper,
                self._ship_stop,
                max_bytes=self.cfg.batch_bytes,
                max_chunks=1000,
                on_acked=self._on_acked,
                dead_letter_dir=self.state_dir / "rejected",
                max_chunk_bytes=MAX_CHUNK_BYTES,
            ),
        )
        self._threads = [reader, shipper]
        for t in self._threads:
            t.start()
        log.info("agent_started", name=self.cfg.name, collectors=self.cfg.collectors, state_dir=str(self.state_dir))

    def stop(self) -> None:
        """Stop reading, finish the batch in flight, save checkpoints, close files."""
        self._stopping = True
        self._read_stop.set()
        self.tailer.wake.set()
        self._threads[0].join(30)
        self._ship_stop.set()
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
                streams.append(
                    {
                        "stream": name,
                        "path": "",
                        "source": "log-api",
                        "data_type": name[len(API_PREFIX) :],
                        "acked_offset": acked,
                        "read_offset": seq,
                        "file_size": 0,
                        "files_open": 0,
                        "lag_bytes": seq - acked,
                        "blocked": False,
                    }
                )
        used = self.spool.used_bytes()
        SPOOL_USED.set(used)
        return {
            "name": self.cfg.name,
            "collectors": self.cfg.collectors,
            "last_ack_from": self.last_ack.url if self.last_ack else None,
            "spool": {"used_bytes": used, "cap_bytes": self.cfg.spool_cap_bytes, "chunks": len(self.spool)},
            "streams": streams,
        }
