"""A uvicorn server that sleeps while idle: no 10-per-second tick.

``uvicorn.Server.main_loop`` wakes every 0.1 s to refresh the ``Date`` header and to see whether
it should exit. On an idle daemon (an agent on every host) those were ten of its fifteen wakeups a
second. :class:`QuietServer` keeps both jobs without a timer:

* ``Date``: the server state's ``default_headers`` are computed when a request reads them (at most
  one ``formatdate`` per second, cached), so every response still carries the current date;
* exiting: setting ``should_exit`` (uvicorn's signal handler, or anyone else) wakes the main loop
  through ``call_soon_threadsafe`` (the loop's self-pipe), so a SIGTERM is seen at once.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import uvicorn
from uvicorn.server import ServerState

__all__ = ["QuietServer"]


class _LazyDateState(ServerState):
    """``default_headers`` computed on read, with a ``Date`` of the current second."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__()
        self._config = config
        self._second = -1
        self._headers: list[tuple[bytes, bytes]] = []

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        now = int(time.time())
        if now != self._second:
            date = [(b"date", formatdate(now, usegmt=True).encode())] if self._config.date_header else []
            self._headers = date + self._config.encoded_headers
            self._second = now
        return self._headers

    @default_headers.setter
    def default_headers(self, value: list[tuple[bytes, bytes]]) -> None:
        """uvicorn's tick assigns them; they are always computed on read instead."""


class QuietServer(uvicorn.Server):
    """``uvicorn.Server`` whose main loop waits for ``should_exit`` instead of polling it."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._exit_flag = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_event: asyncio.Event | None = None
        super().__init__(config)
        self.server_state = _LazyDateState(config)

    @property
    def should_exit(self) -> bool:
        return self._exit_flag

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit_flag = value
        loop, event = self._loop, self._exit_event
        if value and loop is not None and event is not None:
            # From a signal handler or another thread: the self-pipe wakes the loop's selector.
            loop.call_soon_threadsafe(event.set)

    async def main_loop(self) -> None:
        self._exit_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.on_tick(0)  # the first tick: notify callback, max-requests check
        while not self.should_exit:
            await self._exit_event.wait()
            self._exit_event.clear()
