"""A small real HTTP receiver of chunk batches for agent tests (a stand-in collector on a real socket).

It decodes batches with :func:`headrace._chunk.decode_batch` (zstd bodies decompressed first, as a
collector does), fsyncs nothing, de-duplicates by chunk
identity like a collector, and records what it received. ``fail_with`` makes it answer a status instead;
``hold`` (an unset event) makes it keep each request waiting, after recording its chunks, until the event is set
(the collector fsynced the batch but its ack has not gone out yet).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from support import free_port

from headrace._chunk import Chunk, decode_batch
from headrace._wire_zstd import BoundedZstdDecoder
from headrace.errors import InvalidInput


class TestSink:
    __test__ = False

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chunks: list[Chunk] = []  # first copy of each identity, in arrival order
        self.seen: set[tuple[str, str, int]] = set()
        self.requests = 0
        self.duplicates = 0
        self.fail_with: int | None = None
        self.reject_if: Callable[[Chunk], bool] | None = None  # 400 for a batch holding such a chunk
        self.hold: threading.Event | None = None  # while unset: each recorded batch waits for it before its answer
        self.held = 0  # requests waiting on ``hold`` now
        self.hold_answer: int | None = None  # the status a held request then gets (None: its ack)
        self.lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _post(self, request: Request) -> JSONResponse:
        body = await request.body()
        with self.lock:
            self.requests += 1
            if self.fail_with is not None:
                return JSONResponse({"error": "forced", "detail": "test"}, status_code=self.fail_with)
        try:
            if request.headers.get("content-encoding") == "zstd":
                decoder = BoundedZstdDecoder(256 << 20)
                decoder.feed(body)
                body = bytes(decoder.finish())
            chunks = decode_batch(body)
        except InvalidInput as exc:
            return JSONResponse({"error": exc.reason, "detail": exc.detail}, status_code=400)
        if self.reject_if is not None and any(self.reject_if(c) for c in chunks):
            return JSONResponse({"error": "refused", "detail": "reject_if"}, status_code=400)
        dups = 0
        with self.lock:
            for c in chunks:
                if c.key in self.seen:
                    dups += 1
                    continue
                self.seen.add(c.key)
                self.chunks.append(c)
            self.duplicates += dups
        hold = self.hold
        if hold is not None and not hold.is_set():
            with self.lock:
                self.held += 1
            try:
                while not hold.is_set():
                    await asyncio.sleep(0.01)
            finally:
                with self.lock:
                    self.held -= 1
            if self.hold_answer is not None:
                return JSONResponse({"error": "forced", "detail": "held"}, status_code=self.hold_answer)
        return JSONResponse({"acked": len(chunks), "duplicates": dups})

    def start(self) -> TestSink:
        app = Starlette(routes=[Route("/v1/chunks", self._post, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise AssertionError("test sink did not start")
            time.sleep(0.01)
        return self

    def stop(self, *, abruptly: bool = False) -> None:
        """Shut down; ``abruptly``: drop the connections of requests still waiting (a collector dying)."""
        if self._server is not None and self._thread is not None:
            self._server.force_exit = abruptly
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None

    def data_by_stream(self) -> dict[str, bytes]:
        """Every stream's bytes, chunks ordered by offset; asserts the chunks tile the stream exactly."""
        with self.lock:
            chunks = list(self.chunks)
        out: dict[str, list[Chunk]] = {}
        for c in chunks:
            out.setdefault(c.stream, []).append(c)
        result: dict[str, bytes] = {}
        for stream, cs in out.items():
            cs.sort(key=lambda c: c.seq_start)
            pos = 0
            for c in cs:
                assert c.seq_start == pos, f"{stream}: gap or overlap at {pos} (next chunk {c.seq_start})"
                pos = c.seq_end
            result[stream] = b"".join(c.data for c in cs)
        return result

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"chunks": len(self.chunks), "requests": self.requests, "duplicates": self.duplicates}
