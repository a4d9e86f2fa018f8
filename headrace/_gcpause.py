"""Pausing Python's cyclic garbage collector while a batch of short-lived, acyclic objects is built.

Parsing and decoding a snapshot page makes tens of thousands of small container objects (field
tuples, events, key lists) in a few milliseconds. None of them is part of a reference cycle:
reference counting frees them. With the collector on, every 700 container allocations start a
young-generation pass over them and the survivors are scanned again by older passes; on a
5,000-row page that is about a third of the CPU time of parsing and decoding it (measured,
issue 14). :func:`gc_paused` turns the collector off for such a stretch and back on after it, so
the objects are looked at once (by the first collection after it) instead of many times.
Users: the subscriber decoding a stream body (about half its CPU time on an 8 MiB body) or a
snapshot page, and the bootstrap server encoding a PostgreSQL seeding page (about a fifth).

Only library code that builds such batches uses it, never around application callbacks (though
such a stretch in one thread — a snapshot page parsed while it is fetched ahead — may overlap the
application's code in another). It is process-wide (the collector is): pauses may overlap across
threads — the collector comes back on when the last one ends, and only if it was on when the first
one began (an application that turned it off keeps it off).
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType

__all__ = ["gc_paused"]

_lock = threading.Lock()
_depth = 0  # pauses in progress, over all threads
_was_enabled = False  # the collector's state when the first of them began


class _Paused:
    __slots__ = ()

    def __enter__(self) -> None:
        global _depth, _was_enabled
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
                gc.disable()
            _depth += 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


_PAUSED = _Paused()


def gc_paused() -> _Paused:
    """A context manager: the cyclic garbage collector is off inside it (see the module docstring)."""
    return _PAUSED
