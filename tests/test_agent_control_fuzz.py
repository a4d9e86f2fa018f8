"""Hypothesis fuzzing of the agent's control API against a real agent process.

Surfaces: ``POST /v1/sources`` (source objects with hostile paths, names, data types, regexes,
tags, extra keys; non-JSON and nested bodies), ``DELETE /v1/sources/{id}`` (random ids, encoded
slashes), ``GET /v1/sources``, ``GET /v1/status``, other methods. Rules: never a 5xx, never a dead
agent (``/healthz`` stays 200: a source that kills the reader thread would turn it 503); a refused
request changes nothing (the sources listed and saved in ``sources.json`` equal a model fed only by
201 and 204 answers); valid requests interleaved with the fuzz keep working: lines appended to the
configured source's file and files of sources added at run time reach the collector exactly once.

Every generated path is put under this test's folder (``<tmp>/fz/…``, ``..`` parts defused), so
the agent never globs the machine. Tokens: the ``control_token`` fixture gives the bearer token
sent with every request and ``control_config`` the agent settings that go with it (the token, and
the test's folder as the allowed root of run-time sources).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_testsink import TestSink
from http_fuzz import JSON, NASTY_BODIES, TEXT, Fuzzer, budget, json_bytes, quote_text, run_for
from hypothesis import strategies as st
from support import Daemon, free_port, wait_until, write_config


@pytest.fixture
def control_token() -> str | None:
    """The bearer token the fuzz sends: the control API is off without a ``control`` token."""
    return "fuzz-control-token"


@pytest.fixture
def control_config(control_token: str | None, tmp_path: Path) -> dict[str, Any]:
    """Agent settings that go with ``control_token``: it as a full-access token, and the test's folder
    as the one run-time sources may be added under (``/etc/shadow`` and friends stay refused)."""
    return {"tokens": [control_token], "allowed_paths": [str(tmp_path)]}


@pytest.fixture
def sink() -> Iterator[TestSink]:
    s = TestSink().start()
    yield s
    s.stop()


_data_types = st.one_of(st.sampled_from(["app", "web.access", "a-b=c", "app\n", "", ".", "..", "a/b"]), TEXT, JSON)
_paths = st.one_of(
    st.sampled_from(["*.log", "**/*.log", "*", "**", "x/../../*", "/etc/shadow", "a\x00b", "[", "[!]", "~/x", ""]),
    TEXT,
    JSON,
)
_fields = {
    "path": _paths,
    "data_type": _data_types,
    "name": st.one_of(TEXT, JSON, st.sampled_from(["main", "", "a/b", "%2F"])),
    "start": st.one_of(st.sampled_from(["beginning", "end", "middle", ""]), JSON),
    "multiline_start": st.one_of(st.sampled_from(["^\\d", "(", "(a+)+$", "[", "\\"]), TEXT, JSON),
    "tags": st.one_of(
        st.dictionaries(TEXT, TEXT, max_size=3),
        st.dictionaries(st.text(max_size=4), st.just("v"), min_size=60, max_size=70),
        JSON,
    ),
    "extra": JSON,
}
_valid_base = st.fixed_dictionaries(
    {"path": st.sampled_from(["*.log", "a/*.txt", "b/**/*.log"]), "data_type": st.sampled_from(["app", "web"])},
    optional={"name": st.text("abcxyz-_.", min_size=1, max_size=8), "start": st.sampled_from(["beginning", "end"])},
)


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid source with one or two fields replaced by hostile values (most are then refused)."""
    body = dict(draw(_valid_base))
    for key in draw(st.lists(st.sampled_from(sorted(_fields)), min_size=1, max_size=2, unique=True)):
        body[key] = draw(_fields[key])
    return body


_source = st.one_of(_mutated(), st.fixed_dictionaries({}, optional=_fields))
_request = st.one_of(
    st.tuples(st.just("add"), _source),
    st.tuples(st.just("add-raw"), NASTY_BODIES),
    st.tuples(st.just("delete"), st.one_of(TEXT, st.sampled_from(["", "%2F", "..", "../main", "main/"]))),
    st.tuples(st.just("status"), st.just(None)),
    st.tuples(st.just("list"), st.just(None)),
    st.tuples(
        st.just("other"),
        st.tuples(
            st.sampled_from(["PUT", "PATCH", "DELETE", "POST", "GET"]),
            st.sampled_from(["/v1/sources", "/v1/status", "/v1/sources/", "/v1/", "/%00"]),
        ),
    ),
)
_case = st.tuples(st.lists(_request, min_size=1, max_size=12), st.integers(0, 10**9))


def _id_path(source_id: str) -> str:
    """``/v1/sources/<id>`` with every character but letters and digits percent-encoded (dots too,
    so that no client or server normalises ``..`` away)."""
    return "/v1/sources/" + quote_text(source_id).replace(".", "%2E")


def _defuse(path: Any, root: Path) -> Any:
    """A generated path, moved under ``root`` (``..`` parts made harmless); other JSON values as they are."""
    if not isinstance(path, str):
        return path
    return str(root) + "/" + path.replace("..", "__").lstrip("/")


def run_control_fuzz(
    tmp_path: Path,
    daemons: Any,
    sink: TestSink,
    token: str | None,
    extra: dict[str, Any],
    seconds: float,
    at_least: int,
) -> Fuzzer:
    logs, fz, added_dir = tmp_path / "logs", tmp_path / "fz", tmp_path / "added"
    for d in (logs, fz, added_dir):
        d.mkdir()
    main = logs / "main.log"
    main.write_bytes(b"")
    port = free_port()
    cfg = {
        "name": "host-a",
        "collectors": [sink.url],
        "state_dir": str(tmp_path / "state"),
        "listen": f"127.0.0.1:{port}",
        "sources": [{"path": str(logs / "*.log"), "data_type": "app", "name": "main"}],
        "max_backoff_seconds": 0.2,
        "rescan_seconds": 0.5,
        **extra,
    }
    agent: Daemon = daemons(["agent", "--config", str(write_config(tmp_path / "agent.yaml", {"agent": cfg}))], "agent")
    agent.start()
    url = f"http://127.0.0.1:{port}"
    agent.wait_http(url + "/healthz")
    f = Fuzzer(url, headers={"authorization": f"Bearer {token}"} if token else {})
    model: dict[str, dict[str, Any]] = {}  # sources added at run time and not removed, by id
    expect: dict[str, bytes] = {}  # stream -> bytes that must arrive exactly once
    state = {"lines": 0, "added": 0, "examples": 0}
    runtime = tmp_path / "state" / "sources.json"

    def check_model() -> None:
        listed = {s["id"] for s in f.send("list", "GET", "/v1/sources").json()["sources"]}
        assert listed == {"main", *model}, (listed, set(model))
        saved = json.loads(runtime.read_text()) if runtime.exists() else {"added": [], "removed": []}
        assert {a.get("name") or a["path"] for a in saved["added"]} == set(model) and saved["removed"] == []
        health = f.client.get(url + "/healthz")
        assert health.status_code == 200, health.text

    def case(value: tuple[list[tuple[str, Any]], int]) -> None:
        requests, draw = value
        for kind, arg in requests:
            if kind == "add":
                body = {**arg, "path": _defuse(arg["path"], fz)} if "path" in arg else arg
                if body.get("name") == "main":
                    continue  # would replace the configured source (allowed; not what this model follows)
                r = f.send("add", "POST", "/v1/sources", content=json_bytes(body))
                if r.status_code == 201:
                    model[r.json()["id"]] = body
            elif kind == "add-raw":
                assert f.send("add", "POST", "/v1/sources", content=arg).status_code != 201
            elif kind == "delete":
                if arg in ("main", *model):
                    continue  # the model does not follow removals of real sources by fuzz
                r = f.send("delete", "DELETE", _id_path(arg))
                assert r.status_code in (404, 405, 307), r.text  # no such source
            elif kind == "status":
                f.send("status", "GET", "/v1/status")
            elif kind == "list":
                f.send("list", "GET", "/v1/sources")
            else:
                f.send("other", arg[0], arg[1])
        check_model()
        # valid requests, interleaved: remove what the fuzz added, append to the configured source,
        # and now and then add a source of our own whose file must arrive
        for sid in list(model):
            r = f.send("delete", "DELETE", _id_path(sid))
            assert r.status_code == 204, (sid, r.text)
            del model[sid]
        line = b"main line %d %s\n" % (state["lines"], b"x" * (draw % 50))
        with open(main, "ab") as out:
            out.write(line)
        expect[str(main).lstrip("/")] = expect.get(str(main).lstrip("/"), b"") + line
        state["lines"] += 1
        state["examples"] += 1
        if state["examples"] % 20 == 0:
            n = state["added"]
            d = added_dir / f"s{n}"
            d.mkdir()
            data = b"".join(b"added %d line %d\n" % (n, i) for i in range(draw % 7 + 1))
            (d / "f.log").write_bytes(data)
            expect[str(d / "f.log").lstrip("/")] = data
            body = {"path": str(d / "*.log"), "data_type": "added", "name": f"added-{n}"}
            r = f.send("add", "POST", "/v1/sources", content=json_bytes(body))
            assert r.status_code == 201, r.text
            state["added"] += 1
            # delivered while the source is still there, then removed
            wait_until(lambda: sink.data_by_stream().get(str(d / "f.log").lstrip("/")) == data, 30, "added source")
            assert f.send("delete", "DELETE", _id_path(f"added-{n}")).status_code == 204
        check_model()

    run_for(_case, case, f, seconds=seconds, at_least=at_least, per_example=9.5)
    assert agent.alive()
    wait_until(lambda: sink.data_by_stream() == expect, 60, "exactly the lines written, once each")
    print(f"agent control fuzz: {f.summary()}; valid: {state}")
    f.close()
    return f


def test_fuzz_agent_control_api(
    tmp_path: Path, daemons: Any, sink: TestSink, control_token: str | None, control_config: dict[str, Any]
) -> None:
    seconds, at_least = budget(45, 10_000)
    f = run_control_fuzz(tmp_path, daemons, sink, control_token, control_config, seconds, at_least)
    assert f.sent >= at_least


@pytest.mark.slow
def test_fuzz_agent_control_api_long(
    tmp_path: Path, daemons: Any, sink: TestSink, control_token: str | None, control_config: dict[str, Any]
) -> None:
    f = run_control_fuzz(tmp_path, daemons, sink, control_token, control_config, 300, 60_000)
    assert f.sent >= 60_000
