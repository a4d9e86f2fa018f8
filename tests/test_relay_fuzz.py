"""Hypothesis fuzzing of the relay's HTTP API against one real relay process on a SQLite source.

Surfaces: ``GET /v1/stream`` (every parameter, unknown and repeated ones), ``GET /v1/schemas/{fp}``,
``GET /v1/sources``, ``GET /v1/status``, ``POST /v1/ack``, and other paths and methods. Rules: never
a 5xx or a dead relay; a refused acknowledgement records nothing (the durable SCNs in
``/v1/status`` equal a model fed only by the 200 answers); valid requests interleaved with the
fuzz are served in full: every stream read from a random SCN returns exactly the events after it,
in order, each once (SQLite SCNs are consecutive row ids), and valid acknowledgements are recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import relay_workload as wl
from http_fuzz import INT_TEXT, JSON, NASTY_BODIES, TEXT, Fuzzer, budget, json_bytes, run_for
from hypothesis import strategies as st
from relay_support import start_relay, write_workload
from support import wait_until

from headrace.relay import iter_frames

CONSUMERS = ["app-1", "app-2"]
TABLES = ["orders", "customers", "items"]
STREAM_PARAMS = ["since", "sources", "filter", "max_bytes", "wait_ms", "subscriber"]
MAX_RESPONSE = 256 << 10
MAX_WAIT_MS = 20

_names = st.one_of(st.sampled_from([*TABLES, "nope", "", " ", "orders ", "ORDERS", "sqlite_master"]), TEXT)
_filters = st.one_of(
    st.builds(lambda n, i: f"mod:{n}:{i}", INT_TEXT, INT_TEXT),
    st.builds(lambda a, b: f"range:{a}:{b}", st.one_of(INT_TEXT, TEXT), st.one_of(INT_TEXT, TEXT)),
    st.builds(lambda k, r: f"{k}:{r}", st.sampled_from(["mod", "range", "hash", "", "MOD"]), TEXT),
    TEXT,
)
_param_values = {
    "since": INT_TEXT,
    "sources": st.one_of(st.lists(_names, max_size=4).map(",".join), TEXT),
    "filter": _filters,
    "max_bytes": INT_TEXT,
    "wait_ms": INT_TEXT,
    "subscriber": TEXT,
}
_param = st.one_of(
    *[st.tuples(st.just(k), v) for k, v in _param_values.items()],
    st.tuples(TEXT, TEXT),  # unknown names
)


@st.composite
def _fingerprint(draw: st.DrawFn) -> str:
    return draw(
        st.one_of(
            st.text("0123456789abcdefABCDEF", min_size=16, max_size=16),
            st.text("0123456789abcdef", min_size=16, max_size=16).map(
                lambda s: s + draw(st.sampled_from(["\n", "%0A", "/x", " "]))
            ),
            TEXT.filter(lambda s: "/" not in s and s not in ("", ".", "..")),
        )
    )


_ack_body = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "consumer": st.one_of(st.sampled_from([*CONSUMERS, "app-3", ""]), JSON),
            "scn": st.one_of(INT_TEXT, st.integers(-(1 << 70), 1 << 70), JSON),
        },
    ).map(json_bytes),
    NASTY_BODIES,
)
_request = st.one_of(
    st.tuples(st.just("stream"), st.lists(_param, max_size=5)),
    st.tuples(st.just("schema"), _fingerprint()),
    st.tuples(st.just("status"), st.lists(st.tuples(st.sampled_from(["measure", "x"]), TEXT), max_size=2)),
    st.tuples(st.just("sources"), st.lists(st.tuples(TEXT, TEXT), max_size=2)),
    st.tuples(st.just("ack"), _ack_body),
    st.tuples(
        st.just("other"),
        st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
            st.sampled_from(
                [
                    "/v1/stream",
                    "/v1/ack",
                    "/v1/status",
                    "/v1/schemas/",
                    "/v1/schemas/..%2F",
                    "/v1/",
                    "/%00",
                    "/v1/stream/x",
                ]
            ),
        ),
    ),
)
# One example: a batch of hostile requests, then a valid stream read from a drawn SCN and a valid ack.
_case = st.tuples(st.lists(_request, min_size=1, max_size=12), st.integers(0, 10**9), st.integers(0, 10**9))


def run_relay_fuzz(daemons: Any, tmp_path: Path, seconds: float, at_least: int) -> Fuzzer:
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    _relay, url = start_relay(
        daemons,
        tmp_path,
        db,
        durable_consumers=CONSUMERS,
        max_wait_ms=MAX_WAIT_MS,
        max_response_bytes=MAX_RESPONSE,
    )
    f = Fuzzer(url)
    assert write_workload(db, 7, 0, 150).wait(120) == 0
    total = sum(len(t) for t in wl.expected_events(7, 150))
    wait_until(lambda: f.client.get(url + "/v1/status").json()["newest_scn"] == total, 60, "the relay to catch up")
    status = f.client.get(url + "/v1/status").json()
    oldest, newest = status["oldest_scn"], status["newest_scn"]
    fingerprints = [
        v["fingerprint"] for s in f.client.get(url + "/v1/sources").json()["sources"] for v in s["versions"]
    ]
    assert fingerprints
    acked: dict[str, int] = {}
    valid = {"stream": 0, "events": 0, "acks": 0}

    def check_acks() -> None:
        assert f.send("status", "GET", "/v1/status").json()["durable_consumers"] == acked

    def case(value: tuple[list[tuple[str, Any]], int, int]) -> None:
        requests, since_draw, ack_draw = value
        for kind, arg in requests:
            if kind == "stream":
                f.send("stream", "GET", "/v1/stream", params=arg)
            elif kind == "schema":
                f.send("schema", "GET", "/v1/schemas/" + arg)
            elif kind in ("status", "sources"):
                f.send(kind, "GET", f"/v1/{kind}", params=arg)
            elif kind == "ack":
                r = f.send("ack", "POST", "/v1/ack", content=arg, headers={"content-type": "application/json"})
                if r.status_code == 200:
                    body = r.json()
                    acked[body["consumer"]] = body["scn"]
            else:
                f.send("other", arg[0], arg[1])
        # valid requests, interleaved: a full read from a random SCN, a schema, an ack
        since = oldest + since_draw % (newest - oldest + 1)
        r = f.send(
            "stream", "GET", "/v1/stream", params=[("since", str(since)), ("wait_ms", "0"), ("max_bytes", "8192")]
        )
        assert r.status_code == 200, r.text
        # whole windows after `since`: consecutive SCNs, the first window holding since + 1
        scns = [e.scn for e in iter_frames(r.content)]
        if since < newest:
            assert scns and scns == list(range(scns[0], scns[-1] + 1)), (since, scns[:5])
            assert scns[0] <= since + 1 <= scns[-1] and int(r.headers["x-headrace-scn"]) == scns[-1], since
            if int(r.headers["x-headrace-windows"]) > 1:
                assert len(r.content) <= 8192
        else:
            assert scns == [] and int(r.headers["x-headrace-scn"]) == newest
        valid["stream"] += 1
        valid["events"] += len(scns)
        fp = fingerprints[since_draw % len(fingerprints)]
        assert f.send("schema", "GET", f"/v1/schemas/{fp}").json()["fingerprint"] == fp
        consumer = CONSUMERS[ack_draw % 2]
        scn = ack_draw % (newest + 1)
        r = f.send("ack", "POST", "/v1/ack", content=json_bytes({"consumer": consumer, "scn": scn}))
        assert r.status_code == 200, r.text
        acked[consumer] = max(acked.get(consumer, -1), scn)
        assert r.json() == {"consumer": consumer, "scn": acked[consumer]}
        valid["acks"] += 1
        check_acks()

    run_for(_case, case, f, seconds=seconds, at_least=at_least, per_example=10.5)
    assert _relay.alive() and f.client.get(url + "/healthz").status_code == 200
    check_acks()
    print(f"relay fuzz: {f.summary()}; valid interleaved: {valid}")
    assert valid["events"] > 0 and valid["acks"] > 0
    f.close()
    return f


def test_fuzz_relay_api(daemons: Any, tmp_path: Path) -> None:
    seconds, at_least = budget(45, 10_000)
    f = run_relay_fuzz(daemons, tmp_path, seconds=seconds, at_least=at_least)
    assert f.sent >= at_least


@pytest.mark.slow
def test_fuzz_relay_api_long(daemons: Any, tmp_path: Path) -> None:
    f = run_relay_fuzz(daemons, tmp_path, seconds=300, at_least=60_000)
    assert f.sent >= 60_000
