"""Backoff for loops that run until stopped: the one place that says how long to wait after a failure.

Two kinds of retrying exist in headrace. A call retried until it succeeds (a batch shipped to a
collector) uses tenacity (``headrace/_ship.py``). A loop that runs for the life of a daemon — relay
capture, the bootstrap follower, a subscriber's long-polls, the agent's log handler — keeps going after
a success and only waits after failures; it asks a :class:`Backoff` for the next wait and resets it
on success. Plain code: no clock, no sleeping (the caller waits on its own stop event). A client of
several equivalent servers (relays, bootstrap servers) moves through them with one :class:`Failover`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Backoff", "Failover"]

T = TypeVar("T")


@dataclass
class Backoff:
    """Waits of ``first`` seconds, doubling after each failure in a row up to ``maximum``, with up
    to ``jitter`` (a fraction) added so many clients do not retry in step."""

    first: float = 0.1
    maximum: float = 5.0
    jitter: float = 0.1
    _next: float = field(default=0.0, init=False)
    # made at the first failure: seeding a Random reads the OS's entropy, too dear for a Backoff
    # made per delivered window that never fails
    _rng: random.Random | None = field(default=None, init=False, repr=False)

    def failed(self) -> float:
        """Seconds to wait after a failure (the first, doubled from the last, at most ``maximum``)."""
        wait = self.first if self._next == 0 else min(self._next * 2, self.maximum)
        self._next = wait
        if self._rng is None:
            self._rng = random.Random()
        return wait * (1 + self._rng.uniform(0, self.jitter))

    def succeeded(self) -> None:
        """The next failure waits ``first`` again."""
        self._next = 0.0

    @property
    def current(self) -> float:
        """The last wait returned (0 after a success)."""
        return self._next


class Failover(Generic[T]):
    """Equivalent servers in a round-robin list: requests go to :attr:`current` until it fails
    (:meth:`failed`), then to the next one, wrapping around. Plain code, like :class:`Backoff`."""

    def __init__(self, items: Sequence[T]) -> None:
        if not items:
            raise ValueError("a failover list needs at least one item")
        self.items = list(items)
        self._at = 0

    @property
    def current(self) -> T:
        """The item requests go to now (the one that answered last)."""
        return self.items[self._at]

    def failed(self) -> None:
        """The current item failed: the next request goes to the next one in the list."""
        self._at = (self._at + 1) % len(self.items)

    def in_order(self) -> list[T]:
        """Every item, the current one first, then the others in list order after it."""
        return self.items[self._at :] + self.items[: self._at]

    def __len__(self) -> int:
        return len(self.items)
