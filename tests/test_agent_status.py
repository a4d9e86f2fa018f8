"""The tailer's status: system calls happen outside the reader's lock, and a descriptor the reader
closed or that now belongs to another file is not reported as the stream's file."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import wait_until

from headrace._spool import Spool
from headrace.agents import _tailer
from headrace.agents._checkpoint import Checkpoints
from headrace.agents._config import AgentConfig
from headrace.agents._tailer import Tailer


@pytest.fixture
def tailer(tmp_path: Path) -> Iterator[Tailer]:
    """A real tailer that has read ``a.log`` and ``b.log`` (its reader stopped again)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_bytes(b"one\n")
    (logs / "b.log").write_bytes(b"two\ntwo\n")
    cfg = AgentConfig(
        name="host-s",
        collectors=["http://127.0.0.1:1"],
        state_dir=str(tmp_path / "state"),
        sources=[{"path": str(logs / "*.log"), "data_type": "files"}],  # type: ignore[list-item]
    )
    spool = Spool(tmp_path / "state" / "spool")
    t = Tailer(cfg, spool, Checkpoints.load(tmp_path / "state"), cfg.sources)
    stop = threading.Event()
    reader = threading.Thread(target=t.run, args=(stop,))
    reader.start()
    try:
        wait_until(lambda: sorted(s["read_offset"] for s in t.status()) == [4, 8], 30, "both files read")
    finally:
        stop.set()
        t.wake.set()
        reader.join(30)
    yield t
    t.close()
    spool.close()


def by_path(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {os.path.basename(s["path"]): s for s in lines}


def test_status_calls_fstat_with_the_readers_lock_free(tailer: Tailer, monkeypatch: pytest.MonkeyPatch) -> None:
    free: list[bool] = []

    def probe() -> None:  # another thread: can the reader take its lock right now?
        got = tailer.lock.acquire(blocking=False)
        if got:
            tailer.lock.release()
        free.append(got)

    real = os.fstat

    def fstat(fd: int) -> os.stat_result:
        t = threading.Thread(target=probe)
        t.start()
        t.join()
        return real(fd)

    monkeypatch.setattr(_tailer.os, "fstat", fstat)
    lines = by_path(tailer.status())
    assert free == [True, True]
    assert (lines["a.log"]["file_size"], lines["b.log"]["file_size"]) == (4, 8)
    assert lines["b.log"]["lag_bytes"] == 8  # read, nothing acked


def test_a_descriptor_closed_or_reused_after_the_snapshot_is_skipped(
    tailer: Tailer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 1000)
    fds = {os.path.basename(st.path): next(iter(st.files.values())).fd for st in tailer.streams.values()}
    real = os.fstat
    done: list[int] = []

    def fstat(fd: int) -> os.stat_result:
        if not done:  # the reader acts between the snapshot and the first fstat
            done.append(fd)
            src = os.open(other, os.O_RDONLY)
            os.dup2(src, fds["a.log"])  # a.log's descriptor now is another file's
            os.close(src)
            os.close(fds["b.log"])  # b.log's is closed
        return real(fd)

    monkeypatch.setattr(_tailer.os, "fstat", fstat)
    lines = by_path(tailer.status())
    assert lines["a.log"]["file_size"] == 0 and lines["a.log"]["lag_bytes"] == 4
    assert lines["b.log"]["file_size"] == 0 and lines["b.log"]["lag_bytes"] == 8
    for st in tailer.streams.values():  # b.log's descriptor is gone: close() must not close it again
        if os.path.basename(st.path) == "b.log":
            st.files.clear()
