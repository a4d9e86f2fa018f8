"""What the HTTP fuzz tests found, one request each, against real daemons (each failed before its fix).

* relay ``POST /v1/ack`` and the agent's JSON bodies: JSON nested past Python's recursion limit
  raised ``RecursionError`` (not a ``ValueError``) → 500; an ack body had no size limit;
* bootstrap ``GET /v1/snapshot?after=``: a forged cursor whose generation is ``Infinity`` →
  ``OverflowError`` → 500 (floats and booleans were taken as generations);
* agent ``POST /v1/sources``: a lone surrogate in ``path`` was added and saved, then the answer
  could not be encoded → 500 (the source stayed); NUL in a path or a name was accepted;
* bootstrap ``GET /v1/catchup?since=2^63`` (or more) → the store's BIGINT overflowed → 500;
* agent ``DELETE /v1/sources/<id>%0A`` removed source ``<id>`` (Starlette's path pattern ends in
  ``$``, which matches before a final newline), and a source whose glob held a newline could not
  be removed at all (``.`` stops at a newline): globs and names with control characters are now
  refused, and the id matches any characters;
* ``int()`` took " 12", "1_2" and non-ASCII digits in query parameters and filters; fingerprints
  were matched with ``^…$``, so a trailing newline passed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from agent_testsink import TestSink
from bootstrap_stack import Stack
from support import free_port, write_config

DEEP = b"[" * 20_000  # far past the recursion limit, within every body limit


def test_relay_and_bootstrap_refuse_what_the_fuzz_found(tmp_path: Path, daemons: Any) -> None:
    stack = Stack(tmp_path, daemons, rows=50)
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        relay, boot = stack.relay_url, stack.boot_url
        c = httpx.Client(timeout=30)
        for body, status, reason in [
            (DEEP, 400, "bad_body"),
            (b'{"consumer": "bootstrap", "scn": ' + b"[" * 20_000 + b"}", 400, "bad_body"),
            (b'{"consumer": "bootstrap", "scn": 1, "pad": "' + b"x" * (100 << 10) + b'"}', 413, "too_large"),
        ]:
            r = c.post(relay + "/v1/ack", content=body)
            assert (r.status_code, r.json()["error"]) == (status, reason), r.text
        for path, reason in [
            ("/v1/schemas/0123456789abcdef%0A", "bad_fingerprint"),
            ("/v1/stream?since=%D9%A1%D9%A2", "bad_since"),  # Arabic-Indic "12"
            ("/v1/stream?since=1_2", "bad_since"),
            ("/v1/stream?since=%2012", "bad_since"),
            ("/v1/stream?max_bytes=%EF%BC%91", "bad_max_bytes"),  # full-width "1"
            ("/v1/stream?filter=mod:4:1_0", "bad_filter"),
        ]:
            r = c.get(relay + path)
            assert (r.status_code, r.json()["error"]) == (400, reason), (path, r.text)
        for gen in ("Infinity", "-Infinity", "1e300", "true", "1.5", '"1"', "-1"):
            cursor = base64.urlsafe_b64encode(f'["accounts", "00", {gen}]'.encode()).decode()
            r = c.get(boot + "/v1/snapshot", params={"after": cursor})
            assert (r.status_code, r.json()["error"]) == (400, "bad_after"), (gen, r.text)
        r = c.get(boot + "/v1/snapshot", params={"after": base64.urlsafe_b64encode(DEEP).decode()})
        assert (r.status_code, r.json()["error"]) == (400, "bad_after")
        r = c.get(boot + "/v1/schemas/0123456789abcdef%0A")
        assert (r.status_code, r.json()["error"]) == (400, "bad_fingerprint")
        r = c.get(boot + "/v1/catchup?since=%D9%A1")
        assert (r.status_code, r.json()["error"]) == (400, "bad_since")
        for since in (1 << 63, (1 << 64) - 1):  # past the store's BIGINT: nothing logged there, an empty answer
            r = c.get(boot + "/v1/catchup", params={"since": since})
            assert r.status_code == 200 and r.content == b"" and r.headers["x-headrace-events"] == "0", r.text
        assert c.get(relay + "/healthz").status_code == 200 and c.get(boot + "/healthz").status_code == 200
        assert stack.relay.alive() and stack.boot.alive()
    finally:
        stack.kill_all()


@pytest.fixture
def sink() -> Iterator[TestSink]:
    s = TestSink().start()
    yield s
    s.stop()


def test_agent_refuses_what_the_fuzz_found(tmp_path: Path, daemons: Any, sink: TestSink) -> None:
    port = free_port()
    cfg = {
        "name": "host-a",
        "collectors": [sink.url],
        "state_dir": str(tmp_path / "state"),
        "listen": f"127.0.0.1:{port}",
        "sources": [],
        "tokens": ["fz-token"],
        "allowed_paths": [str(tmp_path)],
    }
    agent = daemons(["agent", "--config", str(write_config(tmp_path / "agent.yaml", {"agent": cfg}))], "agent")
    agent.start()
    url = f"http://127.0.0.1:{port}"
    agent.wait_http(url + "/healthz")
    c = httpx.Client(timeout=30, headers={"authorization": "Bearer fz-token"})
    fz = tmp_path / "fz"
    for body in [
        {"path": f"{fz}/\ud800x", "data_type": "app"},
        {"path": f"{fz}/a\x00b", "data_type": "app"},
        {"path": "", "data_type": "app"},
        {"path": f"{fz}/x", "data_type": "app", "name": "a\x00b"},
        {"path": f"{fz}/x", "data_type": "app", "name": "a\nb"},
        {"path": f"{fz}/x", "data_type": "app", "name": "\udfff"},
        {"path": f"{fz}/x", "data_type": "app", "multiline_start": "\ud800"},
        {"path": f"{fz}/x\ny", "data_type": "app"},
    ]:
        r = c.post(url + "/v1/sources", content=json.dumps(body).encode())
        assert (r.status_code, r.json()["error"]) == (400, "bad_source"), (body, r.text)
    for path in ("/v1/sources", "/v1/log"):
        r = c.post(url + path, content=DEEP)
        assert (r.status_code, r.json()["error"]) == (400, "malformed"), (path, r.text)
    assert c.get(url + "/v1/sources").json() == {"sources": []}
    assert not (tmp_path / "state" / "sources.json").exists()  # nothing saved
    # DELETE of "<glob>\n" does not remove "<glob>" (Starlette's `$` matches before a final newline)
    assert c.post(url + "/v1/sources", json={"path": f"{fz}/a", "data_type": "app"}).status_code == 201
    assert c.post(url + "/v1/sources", json={"path": f"{fz}/a\n", "data_type": "app"}).status_code == 400
    for bad_id in (f"{fz}/a\n", f"{fz}/a\nb"):
        r = c.delete(url + "/v1/sources/" + quote(bad_id, safe=""))
        assert (r.status_code, r.json()["error"]) == (404, "unknown_source"), r.text
    assert [s["id"] for s in c.get(url + "/v1/sources").json()["sources"]] == [f"{fz}/a"]
    assert c.delete(url + "/v1/sources/" + quote(f"{fz}/a", safe="")).status_code == 204
