"""The HTTP server without a tick: a current Date header on every response, and a prompt exit."""

from __future__ import annotations

import email.utils
import socket
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from support import wait_until

from headrace._quiet_server import QuietServer


def test_date_header_is_current_and_should_exit_wakes_the_loop() -> None:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(Starlette(routes=[Route("/", hello)]), log_config=None, access_log=False, lifespan="off")
    server = QuietServer(config)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()  # off the main thread uvicorn installs no signal handlers: should_exit is set by hand below
    wait_until(lambda: server.started, 30, "the server to start")
    for _ in range(2):
        r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert r.text == "hi"
        sent = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 5
        time.sleep(1.1)  # the cached header moves on with the clock
    assert len(r.headers.get_list("date")) == 1
    t0 = time.monotonic()
    server.should_exit = True  # from another thread: the loop is woken, not polled
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5
