"""Headless Chromium driven over the DevTools protocol (a WebSocket), for testing the status page.

Just enough of CDP: open a page, evaluate JavaScript, take a screenshot. Needs Debian's
``chromium`` (``.ci/run`` installs it) and the ``websockets`` package.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from support import wait_until
from websockets.sync.client import ClientConnection, connect


def chromium_path() -> str | None:
    """The Chromium binary on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """A headless Chromium with one page, closed by :meth:`close`."""

    def __init__(self, workdir: Path, width: int = 1300, height: int = 900) -> None:
        binary = chromium_path()
        assert binary, "chromium is not installed (apt-get install chromium)"
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30, "chromium's DevTools port")
        port = int(port_file.read_text().split()[0])
        listing = f"http://127.0.0.1:{port}/json/list"
        pages = wait_until(
            lambda: [t for t in httpx.get(listing, timeout=2).json() if t["type"] == "page"], 15, "a chromium page"
        )
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=10)
        )
        self._ids = itertools.count(1)
        self.exceptions: list[str] = []  # uncaught JavaScript exceptions seen (Runtime.exceptionThrown)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events in between are dropped, except exceptions)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
        raise AssertionError(f"{method}: no answer")

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its document to be complete."""
        self.call("Page.navigate", url=url)
        wait_until(lambda: self.eval("document.readyState") == "complete", 20, f"{url} to load")

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-able), raising on a script exception."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise AssertionError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page to ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the connection and stop the browser."""
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.log.close()
