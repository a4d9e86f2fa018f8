"""The agent's file watcher hears of writes, creations, renames and deletions only: the agent's own
opens and reads of a file (thousands a second on a busy host) wake nothing."""

from __future__ import annotations

import threading
from pathlib import Path

from support import wait_until

from headrace.agents._discover import Watcher


def test_reads_of_a_watched_file_wake_nothing_writes_do(tmp_path: Path) -> None:
    f = tmp_path / "a.log"
    f.write_bytes(b"x\n" * 1000)
    seen: list[list[str]] = []
    lock = threading.Lock()

    def on_paths(paths: list[str]) -> None:
        with lock:
            seen.append(paths)

    w = Watcher(on_paths)
    w.start()
    try:
        w.set_patterns([str(tmp_path / "*.log")])
        for _ in range(2000):  # what a reader does: open, read, close
            with f.open("rb") as fh:
                fh.read()
        with f.open("ab") as fh:  # then one write: its event comes after any the reads caused
            fh.write(b"y\n")
        wait_until(lambda: any(str(f) in p for p in seen), 10, "the write's event")
        with lock:
            events = len(seen)
    finally:
        w.stop()
    assert events <= 3, f"{events} events for 2,000 reads and one write"
