"""A slow application consumer for kill -9 tests: ``python relay_consumer.py URL CHECKPOINT OUT``.

It writes a ``start`` line with the checkpoint it resumed from, then one line per event (flushed
as it goes, so a kill leaves a window visibly half-processed), slowly enough that a kill lands
inside windows.
"""

from __future__ import annotations

import json
import sys
import time

from headrace.relay.client import ChangeEvent, FileCheckpointStore, Subscriber, Window
from headrace.relay.client import Consumer as _Consumer


class Slow(_Consumer):
    def __init__(self, out: str) -> None:
        self.f = open(out, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    def on_start_window(self, window: Window) -> None:
        self.f.write(json.dumps({"window": window.scn, "n": len(window.events)}) + "\n")

    def on_event(self, event: ChangeEvent) -> None:
        self.f.write(json.dumps({"scn": event.scn, "end": event.window_end}) + "\n")
        time.sleep(0.001)


def main() -> None:
    url, cp, out = sys.argv[1:4]
    store = FileCheckpointStore(cp)
    loaded = store.load()
    with open(out, "a") as f:
        f.write(json.dumps({"start": loaded.scn if loaded else None}) + "\n")
    Subscriber([url], checkpoint_store=store, wait_ms=500, max_bytes=64 << 10).run(Slow(out), idle_exit=10)


if __name__ == "__main__":
    main()
