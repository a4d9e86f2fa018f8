"""Hypothesis fuzzing of the bootstrap server's HTTP API against a real relay and bootstrap server.

Surfaces: ``GET /v1/snapshot`` (every parameter: ``after`` cursors forged from JSON and base64,
``limit``, ``snapshot_scn``, ``filter``, ``sources``, ``subscriber``, unknown and repeated ones),
``GET /v1/catchup``, ``GET /v1/status``, ``GET /v1/sources``, ``GET /v1/schemas/{fp}``, other
paths and methods. Rules: never a 5xx or a dead server; a refused request opens no bootstrap
session (``bootstrap_sessions`` in ``/v1/status`` never counts more than the subscriber ids of
accepted requests); valid requests interleaved with the fuzz are served exactly: a snapshot page
read from any cursor of a reference paging holds the same rows, in the same key order, and a
catch-up from the snapshot's SCN answers 200. The source has no writers, so the snapshot is fixed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from bootstrap_stack import Stack
from http_fuzz import INT_TEXT, JSON, TEXT, Fuzzer, budget, run_for
from hypothesis import strategies as st

from headrace.relay import decode_key, iter_frames

PAGE = 97
SNAPSHOT_PARAMS = ["sources", "filter", "after", "limit", "subscriber", "snapshot_scn"]
CATCHUP_PARAMS = ["since", "sources", "filter", "max_bytes", "wait_ms", "subscriber"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_cursor = st.one_of(
    JSON.map(lambda v: _b64(json.dumps(v).encode())),
    st.tuples(
        st.one_of(st.sampled_from(["accounts", "tags", ""]), TEXT, JSON),
        st.one_of(st.text("0123456789abcdef", max_size=12), TEXT, JSON),
        st.one_of(
            st.integers(-(1 << 70), 1 << 70),
            st.floats(),
            st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e300, True, False, None, "1"]),
            JSON,
        ),
    ).map(lambda t: _b64(json.dumps(list(t)).encode())),
    st.binary(max_size=40).map(_b64),
    TEXT,
    INT_TEXT,
)
_names = st.one_of(st.sampled_from(["accounts", "tags", "nope", "", "accounts ", "ACCOUNTS"]), TEXT)
_filters = st.one_of(
    st.builds(lambda n, i: f"mod:{n}:{i}", INT_TEXT, INT_TEXT),
    st.builds(lambda a, b: f"range:{a}:{b}", st.one_of(INT_TEXT, TEXT), st.one_of(INT_TEXT, TEXT)),
    TEXT,
)
_values = {
    "sources": st.one_of(st.lists(_names, max_size=3).map(",".join), TEXT),
    "filter": _filters,
    "after": _cursor,
    "limit": INT_TEXT,
    "subscriber": TEXT,
    "snapshot_scn": INT_TEXT,
    "since": INT_TEXT,
    "max_bytes": INT_TEXT,
    "wait_ms": INT_TEXT,
}


def _params(names: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    one = st.one_of(*[st.tuples(st.just(k), _values[k]) for k in names], st.tuples(TEXT, TEXT))
    return st.lists(one, max_size=5)


_fingerprint = st.one_of(
    st.text("0123456789abcdefABCDEF", min_size=16, max_size=16),
    st.text("0123456789abcdef", min_size=16, max_size=16).map(lambda s: s + "\n"),
    TEXT.filter(lambda s: "/" not in s and s not in ("", ".", "..")),
)
_request = st.one_of(
    st.tuples(st.just("snapshot"), _params(SNAPSHOT_PARAMS)),
    st.tuples(st.just("catchup"), _params(CATCHUP_PARAMS)),
    st.tuples(st.just("schema"), _fingerprint),
    st.tuples(st.just("status"), _params(["subscriber"])),
    st.tuples(st.just("sources"), _params([])),
    st.tuples(
        st.just("other"),
        st.tuples(
            st.sampled_from(["POST", "PUT", "DELETE", "GET"]),
            st.sampled_from(["/v1/snapshot", "/v1/catchup", "/v1/", "/v1/schemas/", "/v1/snapshot/x", "/%00"]),
        ),
    ),
)
_case = st.tuples(st.lists(_request, min_size=1, max_size=12), st.integers(0, 10**9))


def page_keys(body: bytes) -> list[tuple[str, Any]]:
    return [(e.source, decode_key(e.key)) for e in iter_frames(body)]


def run_bootstrap_fuzz(tmp_path: Path, daemons: Any, seconds: float, at_least: int) -> Fuzzer:
    stack = Stack(tmp_path, daemons, rows=600, bootstrap={"max_snapshot_rows": 1000, "session_timeout_seconds": 600})
    try:
        stack.start_relay()
        stack.start_bootstrap()
        stack.wait_ready()
        f = Fuzzer(stack.boot_url)
        # the reference paging: every page of PAGE rows, and the cursor that starts each
        pages: list[tuple[str | None, list[tuple[str, Any]]]] = []
        after: str | None = None
        scn = None
        while True:
            params = [("limit", str(PAGE))] + ([("after", after)] if after else [])
            r = f.send("snapshot", "GET", "/v1/snapshot", params=params)
            assert r.status_code == 200, r.text
            scn = r.headers["x-headrace-snapshot-scn"]
            pages.append((after, page_keys(r.content)))
            if r.headers["x-headrace-done"] == "1":
                break
            after = r.headers["x-headrace-cursor"]
        rows = [k for _, p in pages for k in p]
        assert len(rows) == len(set(map(repr, rows))) and len(rows) >= 600
        fingerprints = [
            v["fingerprint"] for s in f.send("sources", "GET", "/v1/sources").json()["sources"] for v in s["versions"]
        ]
        subscribers: set[str] = set()
        valid = {"pages": 0, "rows": 0, "catchups": 0}

        def case(value: tuple[list[tuple[str, Any]], int]) -> None:
            requests, draw = value
            for kind, arg in requests:
                if kind in ("snapshot", "catchup", "status", "sources"):
                    r = f.send(kind, "GET", f"/v1/{kind}", params=arg)
                    if r.status_code == 200:
                        subscribers.update(v for k, v in arg if k == "subscriber" and v)
                elif kind == "schema":
                    f.send("schema", "GET", "/v1/schemas/" + arg)
                else:
                    f.send("other", arg[0], arg[1])
            # valid requests, interleaved
            start, want = pages[draw % len(pages)]
            sub = f"valid-{draw % 7}"
            params = [("limit", str(PAGE)), ("subscriber", sub)] + ([("after", start)] if start else [])
            r = f.send("snapshot", "GET", "/v1/snapshot", params=params)
            assert r.status_code == 200 and page_keys(r.content) == want, (start, r.text[:200])
            subscribers.add(sub)
            valid["pages"] += 1
            valid["rows"] += len(want)
            r = f.send("catchup", "GET", "/v1/catchup", params=[("since", scn), ("max_bytes", "4096")])
            assert r.status_code == 200, r.text
            valid["catchups"] += 1
            fp = fingerprints[draw % len(fingerprints)]
            assert f.send("schema", "GET", f"/v1/schemas/{fp}").json()["fingerprint"] == fp
            st_ = f.send("status", "GET", "/v1/status").json()
            assert st_["bootstrap_sessions"] <= len(subscribers), (st_["bootstrap_sessions"], len(subscribers))

        run_for(_case, case, f, seconds=seconds, at_least=at_least, per_example=10.5)
        assert stack.boot.alive() and f.client.get(stack.boot_url + "/healthz").status_code == 200
        print(f"bootstrap fuzz: {f.summary()}; valid interleaved: {valid}")
        f.close()
        return f
    finally:
        stack.kill_all()


def test_fuzz_bootstrap_api(tmp_path: Path, daemons: Any) -> None:
    seconds, at_least = budget(45, 10_000)
    f = run_bootstrap_fuzz(tmp_path, daemons, seconds, at_least)
    assert f.sent >= at_least


@pytest.mark.slow
def test_fuzz_bootstrap_api_long(tmp_path: Path, daemons: Any) -> None:
    f = run_bootstrap_fuzz(tmp_path, daemons, 300, 60_000)
    assert f.sent >= 60_000
