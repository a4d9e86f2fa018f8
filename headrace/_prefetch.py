"""Reading ahead in a thread: the next items of an iterator are produced while the caller works on this one.

Used where a driver's read and the caller's work both release the GIL or wait on I/O: the export's
ADBC reader ahead of the Parquet writer, and PostgreSQL seeding's page fetch ahead of the encoder.

Only the producing thread touches ``items`` (and whatever connection it reads from) until that
thread has ended: it closes ``items`` itself, and the consumer's generator waits for it when it
ends — exhausted, failed, or closed early — so the connection is free again on return.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")


class _End:
    """The producer's last entry: the end of ``items``, or the exception that ended them."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], ahead: int, name: str) -> Iterator[T]:
    """``items``, produced by a thread (named ``name``) at most ``ahead`` items ahead of the consumer.

    An exception raised producing an item is raised to the consumer in its place. Closing the returned
    generator (or an exception in the consumer, once the generator is closed) stops the producer, closes
    ``items`` in its thread and waits for it.
    """
    q: queue.Queue[T | _End] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(entry: T | _End) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_End())
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_End(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)

    def consume() -> Iterator[T]:
        thread.start()
        try:
            while True:
                entry = q.get()
                if isinstance(entry, _End):
                    if entry.exc is not None:
                        raise entry.exc
                    return
                yield entry
        finally:
            stop.set()
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):  # unblock a producer waiting to put
                    q.get(timeout=0.05)
            thread.join()

    return consume()
