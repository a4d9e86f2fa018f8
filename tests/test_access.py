"""Access control on every surface, with real daemons over real sockets: scoped tokens, source binding on
collectors, the agent's control API (off without a control token, allowed paths, audit), status and
metrics behind the read scope (with the localhost opt-out), token refusals upstream that never
dead-letter, SIGHUP token reload, and refusing to listen openly without tokens."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import relay_workload as wl
from collector_helpers import HTTP, make_chunk, post, start_collector, stream_bytes
from relay_support import start_relay
from support import Daemon, free_port, wait_until, write_config

from headrace._access import AccessPolicy, Denied, Grant, TokenEntry, insecure_listen_problem, resolve
from headrace._config import load_section
from headrace.agents._config import AgentConfig
from headrace.agents._discover import stream_name
from headrace.collectors import CollectorConfig
from headrace.errors import ConfigError
from headrace.relay._config import RelayConfig

A_TOKEN, B_TOKEN, READ_TOKEN, CONTROL_TOKEN = "tok-host-a", "tok-host-b", "tok-reader", "tok-control"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def start_agent(
    daemons: Any, tmp_path: Path, collector: str, name: str = "host-a", **extra: Any
) -> tuple[Daemon, str, Path]:
    port = free_port()
    cfg = {
        "name": name,
        "collectors": [collector],
        "state_dir": str(tmp_path / f"{name}-state"),
        "listen": f"127.0.0.1:{port}",
        "rotate_wait_seconds": 0.2,
        "partial_line_seconds": 0.3,
        "max_backoff_seconds": 0.2,
        "rescan_seconds": 0.5,
        **extra,
    }
    path = write_config(tmp_path / f"{name}.yaml", {"agent": cfg})
    d = daemons(["agent", "--config", str(path)], name).start()
    url = f"http://127.0.0.1:{port}"
    d.wait_http(url + "/healthz")
    return d, url, path


def sighup(d: Daemon, what: str) -> None:
    """Send SIGHUP and wait until the daemon logged that its tokens were reloaded."""
    assert d.proc is not None
    before = d.output().count('"reloaded"')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.output().count('"reloaded"') > before, 10, f"{what} to reload")


def log_events(d: Daemon, event: str) -> list[dict[str, Any]]:
    out = []
    for line in d.output().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == event:
            out.append(rec)
    return out


# -- the decision itself (sans-io) ----------------------------------------------------------------


def test_policy_decisions_say_what_to_change() -> None:
    grants = resolve(
        ["legacy", TokenEntry(token="w", scopes=["write"], sources=["web-*"], name="web")],
        ("read", "write"),
        "collector",
    )
    p = AccessPolicy("collector", grants)
    legacy = p.decide("Bearer legacy", "read")
    assert isinstance(legacy, Grant) and legacy.scopes == {"read", "write"} and legacy.id.startswith("sha256:")
    assert "legacy" not in legacy.id
    d = p.decide(None, "read")
    assert isinstance(d, Denied) and d.status == 401 and "collector.tokens" in d.detail
    d = p.decide("Bearer nope", "write")
    assert isinstance(d, Denied) and d.status == 401 and d.reason == "unauthorized"
    d = p.decide("Basic legacy", "write")
    assert isinstance(d, Denied) and d.status == 401
    d = p.decide("Bearer w", "read")
    assert isinstance(d, Denied) and (d.status, d.reason, d.token) == (403, "forbidden", "web")
    assert "add 'read' to its scopes" in d.detail
    web = p.decide("Bearer w", "write")
    assert isinstance(web, Grant)
    assert p.forbidden_source(web, ["web-1", "web-22"]) is None
    bad = p.forbidden_source(web, ["web-1", "db-1"])
    assert bad is not None and (bad.status, bad.reason) == (403, "forbidden_source") and "db-1" in bad.detail
    # the loopback opt-out is for /metrics only
    p2 = AccessPolicy("collector", grants, metrics_open_on_localhost=True)
    assert p2.decide(None, "read", peer="127.0.0.1", metrics=True) is None
    assert p2.decide(None, "read", peer="::1", metrics=True) is None
    assert isinstance(p2.decide(None, "read", peer="10.1.2.3", metrics=True), Denied)
    assert isinstance(p2.decide(None, "read", peer="127.0.0.1"), Denied)
    # no tokens: everything open but control, which needs a token that has it
    open_ = AccessPolicy("agent", [])
    assert open_.decide(None, "write") is None
    off = open_.decide(None, "control")
    assert isinstance(off, Denied) and (off.status, off.reason) == (403, "control_api_off")


def test_token_config_forms_files_env_and_listen_rule(tmp_path: Path) -> None:
    secret = tmp_path / "ctl.token"
    secret.write_text("from-a-file\n")
    cfg = AgentConfig.model_validate(
        {
            "tokens": [
                "old-style",
                {"token_file": str(secret), "scopes": ["control"], "name": "ops"},
                {"token_env": "HR_TEST_TOKEN", "scopes": ["read", "write"]},
            ]
        }
    )
    grants = resolve(cfg.tokens, ("read", "write", "control"), "agent", {"HR_TEST_TOKEN": "from-env"})
    assert [g.secret for g in grants] == [b"old-style", b"from-a-file", b"from-env"]
    assert grants[1].id == "ops" and grants[1].scopes == {"control"}
    with pytest.raises(ConfigError, match="HR_MISSING is not set"):
        resolve([TokenEntry(token_env="HR_MISSING", scopes=["read"])], ("read",), "relay", {})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve([TokenEntry(token_file=str(tmp_path / "nope"), scopes=["read"])], ("read",), "relay", {})
    bad_cases: list[tuple[type[Any], dict[str, Any], str]] = [
        (RelayConfig, {"tokens": [{"token": "x", "scopes": ["write"]}]}, "means nothing here"),
        (RelayConfig, {"tokens": [{"token": "x", "scopes": ["read"], "sources": ["a"]}]}, "only collectors"),
        (CollectorConfig, {"tokens": [{"token": "x", "scopes": ["control"]}]}, "means nothing here"),
        (CollectorConfig, {"tokens": [{"token": "x", "token_file": "f", "scopes": ["write"]}]}, "exactly one"),
        (CollectorConfig, {"tokens": [{"token": "x"}]}, "scopes"),
        (CollectorConfig, {"tokens": [{"token": "x", "scopes": ["admin"]}]}, "scopes"),
        (AgentConfig, {"listen": "0.0.0.0:7071"}, "allow_insecure"),
        (CollectorConfig, {"listen": "10.0.0.5:7070"}, "allow_insecure"),
    ]
    for model, raw, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            model.model_validate(raw)
    assert AgentConfig.model_validate({"listen": "0.0.0.0:7071", "allow_insecure": True}).allow_insecure
    assert AgentConfig.model_validate({"listen": "0.0.0.0:7071", "tokens": ["t"]}).tokens == ["t"]
    assert insecure_listen_problem("relay", "[::1]:7080", False, False) is None
    assert insecure_listen_problem("relay", "localhost:7080", False, False) is None
    # the old form still loads from a file and keeps its meaning
    path = write_config(tmp_path / "c.yaml", {"collector": {"tokens": ["plain"]}})
    assert load_section(path, "collector", CollectorConfig).tokens == ["plain"]


def test_non_loopback_listen_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", {"collector": {"listen": f"0.0.0.0:{free_port()}"}})
    r = subprocess.run(
        [sys.executable, "-m", "headrace", "collector", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "collector.tokens is empty" in r.stderr and "allow_insecure" in r.stderr


# -- collectors: scopes and source binding ----------------------------------------------------------


def test_forged_source_is_refused_and_the_real_agent_lines_arrive_exactly_once(daemons: Any, tmp_path: Path) -> None:
    tokens = [
        {"token": A_TOKEN, "scopes": ["write"], "sources": ["host-a"], "name": "host-a"},
        {"token": B_TOKEN, "scopes": ["write"], "sources": ["host-b"], "name": "host-b"},
        {"token": READ_TOKEN, "scopes": ["read"], "name": "monitor"},
    ]
    col, col_url, sink = start_collector(daemons, tmp_path, tokens=tokens)
    logs = tmp_path / "logs"
    logs.mkdir()
    app_log = logs / "app.log"
    first = b"".join(b"real line %04d\n" % i for i in range(100))
    app_log.write_bytes(first)
    agent, agent_url, _ = start_agent(
        daemons, tmp_path, col_url, token=A_TOKEN, sources=[{"path": str(logs / "*.log"), "data_type": "app"}]
    )
    stream = stream_name(str(app_log))

    def acked_bytes() -> int:
        body = httpx.get(agent_url + "/v1/status", timeout=5).json()
        return sum(s["acked_offset"] for s in body["streams"] if s["stream"] == stream)

    wait_until(lambda: acked_bytes() == len(first), 20, "the agent's first lines acked")

    # host-b's token forges the next byte range of host-a's stream: refused, nothing written
    forged = make_chunk(stream, len(first), 3, source="host-a")
    r = post(col_url, [forged], B_TOKEN)
    assert r.status_code == 403 and r.json()["error"] == "forbidden_source", r.text
    assert "host-b" in r.json()["detail"] and "host-a" in r.json()["detail"]
    own = make_chunk("app/b.log", 0, 2, source="host-b")
    r = post(col_url, [own, forged], B_TOKEN)  # one forbidden chunk: the whole batch is refused
    assert r.status_code == 403 and r.json()["error"] == "forbidden_source"
    # the other scopes: a read token cannot write, a write token cannot read status
    assert post(col_url, [own], READ_TOKEN).json()["error"] == "forbidden"
    r = HTTP.get(col_url + "/v1/status", headers=bearer(B_TOKEN))
    assert r.status_code == 403 and "read" in r.json()["detail"]
    status = HTTP.get(col_url + "/v1/status", headers=bearer(READ_TOKEN)).json()
    assert status["rejects"].get("forbidden_source") == 2

    second = b"".join(b"real line %04d\n" % i for i in range(100, 250))
    with app_log.open("ab") as f:
        f.write(second)
    wait_until(lambda: acked_bytes() == len(first) + len(second), 20, "the rest acked")
    assert post(col_url, [own], B_TOKEN).json() == {"acked": 1, "duplicates": 0}  # its own source: fine
    agent.stop()
    col.stop()
    got = stream_bytes(sink)
    assert sorted(got) == sorted([stream, "app/b.log"])
    pieces = sorted(got[stream])
    assert b"".join(p[2] for p in pieces) == first + second  # every real line, once, no forged byte
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert [(s, e) for s, e, _ in got["app/b.log"]] == [(0, 64)]


# -- the agent's control API ------------------------------------------------------------------------


def test_control_api_off_without_a_control_token(daemons: Any, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _agent, url, _ = start_agent(
        daemons, tmp_path, "http://127.0.0.1:9", sources=[{"path": str(logs / "*.log"), "data_type": "app"}]
    )
    r = httpx.post(url + "/v1/sources", json={"path": str(logs / "x.log"), "data_type": "app"})
    assert r.status_code == 403 and r.json()["error"] == "control_api_off"
    assert "scopes: [control]" in r.json()["detail"]
    r = httpx.delete(url + f"/v1/sources/{logs / '*.log'}")
    assert r.status_code == 403 and r.json()["error"] == "control_api_off"
    assert len(httpx.get(url + "/v1/sources").json()["sources"]) == 1  # no tokens: reading stays open
    assert httpx.post(url + "/v1/log", json={"data_type": "app", "records": ["x"]}).status_code == 200


def test_control_api_scopes_allowed_paths_and_audit(daemons: Any, tmp_path: Path) -> None:
    col, col_url, sink = start_collector(daemons, tmp_path)
    logs, secret_dir = tmp_path / "logs", tmp_path / "secret"
    (logs / "sub").mkdir(parents=True)
    secret_dir.mkdir()
    shadow = secret_dir / "shadow"
    shadow.write_bytes(b"root:$6$very-secret-hash:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    (logs / "app.log").write_bytes(b"configured\n")
    (logs / "sub" / "evil.log").symlink_to(shadow)  # inside an allowed folder, pointing out of it
    (logs / "sub" / "fine.log").write_bytes(b"fine\n")
    tokens = [
        {"token": "tok-rw", "scopes": ["read", "write"], "name": "app"},
        {"token": CONTROL_TOKEN, "scopes": ["control"], "name": "ops"},
    ]
    agent, url, _ = start_agent(
        daemons, tmp_path, col_url, tokens=tokens, sources=[{"path": str(logs / "*.log"), "data_type": "app"}]
    )
    ctl, rw = bearer(CONTROL_TOKEN), bearer("tok-rw")
    configured = str(logs / "*.log")

    # DELETE without the control scope: refused, and the source stays
    assert httpx.delete(f"{url}/v1/sources/{configured}").status_code == 401
    r = httpx.delete(f"{url}/v1/sources/{configured}", headers=rw)
    assert r.status_code == 403 and r.json()["error"] == "forbidden" and "control" in r.json()["detail"]
    assert [s["id"] for s in httpx.get(url + "/v1/sources", headers=rw).json()["sources"]] == [configured]
    assert httpx.get(url + "/v1/sources", headers=ctl).status_code == 403  # control is not read

    # the /etc/shadow of this test: outside the allowed roots (default: the configured sources' folder)
    for path in (str(shadow), str(logs / ".." / "secret" / "shadow"), str(secret_dir / "*")):
        r = httpx.post(url + "/v1/sources", json={"path": path, "data_type": "app"}, headers=ctl)
        assert r.status_code == 403 and r.json()["error"] == "outside_allowed_paths", (path, r.text)
    # inside the roots: added; the symlink in it that leads out is refused before it is opened
    r = httpx.post(url + "/v1/sources", json={"path": str(logs / "sub" / "*.log"), "data_type": "sub"}, headers=ctl)
    assert r.status_code == 201, r.text
    wait_until(
        lambda: any(
            r.get("reason") == "outside_allowed_paths" and r.get("path") == str(logs / "sub" / "evil.log")
            for r in log_events(agent, "file_refused")
        ),
        20,
        "the symlink refused",
    )
    fine = stream_name(str(logs / "sub" / "fine.log"))
    wait_until(
        lambda: any(
            s["stream"] == fine and s["acked_offset"] == 5
            for s in httpx.get(url + "/v1/status", headers=rw).json()["streams"]
        ),
        20,
        "the allowed file shipped",
    )
    r = httpx.delete(f"{url}/v1/sources/{logs / 'sub' / '*.log'}", headers=ctl)
    assert r.status_code == 204
    agent.stop()
    col.stop()

    out = agent.output()
    assert "very-secret-hash" not in out
    opened = [e for e in log_events(agent, "stream_found") + log_events(agent, "open_failed") if "shadow" in str(e)]
    assert opened == [] and not any("evil" in str(e) for e in log_events(agent, "stream_found"))
    assert all(b"very-secret-hash" not in data for pieces in stream_bytes(sink).values() for *_, data in pieces)
    # every control request is audited with the token's name, never the token
    audit = [(e["action"], e["result"], e.get("token")) for e in log_events(agent, "control_audit")]
    assert ("remove_source", "denied", None) in audit
    assert ("remove_source", "denied", "app") in audit
    assert audit.count(("add_source", "refused", "ops")) == 3
    assert ("add_source", "added", "ops") in audit and ("remove_source", "removed", "ops") in audit
    assert CONTROL_TOKEN not in out and "tok-rw" not in out


# -- status and metrics behind the read scope, and the localhost opt-out -----------------------------


def test_status_and_metrics_need_a_read_token_and_localhost_opt_out_reloads(daemons: Any, tmp_path: Path) -> None:
    tokens: list[Any] = [
        {"token": READ_TOKEN, "scopes": ["read"]},
        {"token": A_TOKEN, "scopes": ["write"]},
    ]
    col, url, _sink = start_collector(daemons, tmp_path, tokens=tokens)
    for path in ("/v1/status", "/metrics"):
        assert HTTP.get(url + path).status_code == 401, path
        assert HTTP.get(url + path, headers=bearer(A_TOKEN)).status_code == 403, path
        assert HTTP.get(url + path, headers=bearer(READ_TOKEN)).status_code == 200, path
    health = HTTP.get(url + "/healthz")
    assert health.status_code == 200 and "sink" not in health.text
    # SIGHUP: the opt-out switched on in the file applies to /metrics from this (loopback) client only
    write_config(
        tmp_path / "col.yaml",
        {
            "collector": {
                "listen": url.removeprefix("http://"),
                "sink_dir": str(tmp_path / "col-sink"),
                "name": "col",
                "roll_seconds": 3600,
                "tokens": tokens,
                "metrics_open_on_localhost": True,
            }
        },
    )
    sighup(col, "the collector")
    assert HTTP.get(url + "/metrics").status_code == 200
    assert "headrace_access_denied_total" in HTTP.get(url + "/metrics").text
    assert HTTP.get(url + "/v1/status").status_code == 401

    # the relay: every read API and /metrics need a read token; the opt-out works the same
    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    _relay, rurl = start_relay(
        daemons, tmp_path, db, tokens=[{"token": READ_TOKEN, "scopes": ["read"]}], metrics_open_on_localhost=True
    )
    for path in ("/v1/stream?wait_ms=0", "/v1/status", "/v1/sources"):
        assert httpx.get(rurl + path).status_code == 401, path
        assert httpx.get(rurl + path, headers=bearer(READ_TOKEN)).status_code == 200, path
    assert httpx.post(rurl + "/v1/ack", json={"consumer": "x", "scn": 0}).status_code == 401
    assert httpx.get(rurl + "/metrics").status_code == 200
    assert httpx.get(rurl + "/healthz").status_code == 200


def test_agent_status_and_metrics_need_read_scope(daemons: Any, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    _agent, url, _ = start_agent(
        daemons,
        tmp_path,
        "http://127.0.0.1:9",
        tokens=[{"token": READ_TOKEN, "scopes": ["read"]}, {"token": A_TOKEN, "scopes": ["write"]}],
        sources=[{"path": str(logs / "*.log"), "data_type": "app"}],
    )
    for path in ("/v1/status", "/v1/sources", "/metrics"):
        assert httpx.get(url + path).status_code == 401, path
        assert httpx.get(url + path, headers=bearer(A_TOKEN)).status_code == 403, path
        assert httpx.get(url + path, headers=bearer(READ_TOKEN)).status_code == 200, path
    body = {"data_type": "app", "records": ["x"]}
    assert httpx.post(url + "/v1/log", json=body).status_code == 401
    assert httpx.post(url + "/v1/log", json=body, headers=bearer(READ_TOKEN)).status_code == 403
    assert httpx.post(url + "/v1/log", json=body, headers=bearer(A_TOKEN)).status_code == 200
    health = httpx.get(url + "/healthz")
    assert str(logs) not in health.text and str(tmp_path) not in health.text


# -- token refused upstream: retried, health red, never dead-lettered ----------------------------------


def test_token_refused_upstream_is_retried_not_dead_lettered_until_fixed(daemons: Any, tmp_path: Path) -> None:
    root, root_url, root_sink = start_collector(
        daemons, tmp_path, name="root", tokens=[{"token": "root-right", "scopes": ["write"]}]
    )
    mid_cfg: dict[str, Any] = {
        "upstream": [root_url],
        "upstream_token": "root-wrong",
        "upstream_max_backoff": 0.2,
        "tokens": [{"token": "mid-right", "scopes": ["write", "read"]}],
    }
    mid, mid_url, mid_sink = start_collector(daemons, tmp_path, name="mid", **mid_cfg)
    agent, agent_url, _ = start_agent(daemons, tmp_path, mid_url, token="mid-wrong")
    records = [f"record {i}" for i in range(50)]
    assert httpx.post(agent_url + "/v1/log", json={"data_type": "app", "records": records}).status_code == 200

    r = wait_until(lambda: (r := httpx.get(agent_url + "/healthz")).status_code == 503 and r, 20, "agent red")
    assert r.json()["reason"] == "collector refused our token"
    # the middle collector, fed directly, is refused by the root the same way
    chunk = make_chunk("app/direct.log", 0, 4, source="host-z")
    assert post(mid_url, [chunk], "mid-right").status_code == 200
    r = wait_until(lambda: (r := HTTP.get(mid_url + "/healthz")).status_code == 503 and r, 20, "middle red")
    assert r.json()["reason"] == "collector refused our token" and "401" in r.json()["detail"]
    assert HTTP.get(root_url + "/healthz").status_code == 200
    wait_until(lambda: len(log_events(agent, "ship_retry")) >= 3, 20, "the agent retrying")

    # fix both tokens on the middle collector and reload it with SIGHUP: everything moves, health turns green
    mid_cfg.update(
        upstream_token="root-right", tokens=[*mid_cfg["tokens"], {"token": "mid-wrong", "scopes": ["write"]}]
    )
    write_config(
        tmp_path / "mid.yaml",
        {
            "collector": {
                "listen": mid_url.removeprefix("http://"),
                "sink_dir": str(mid_sink),
                "name": "mid",
                "roll_seconds": 3600,
                **mid_cfg,
            }
        },
    )
    sighup(mid, "the middle collector")
    wait_until(lambda: httpx.get(agent_url + "/healthz").status_code == 200, 20, "agent green")
    wait_until(lambda: HTTP.get(mid_url + "/healthz").status_code == 200, 20, "middle green")
    wait_until(
        lambda: (
            HTTP.get(mid_url + "/v1/status", headers=bearer("mid-right")).json()["store"]["spool_chunks"] == 0
            and httpx.get(agent_url + "/v1/status").json()["spool"]["chunks"] == 0
        ),
        20,
        "both spools drained",
    )
    agent.stop()
    mid.stop()
    root.stop()
    assert not list((tmp_path / "host-a-state" / "rejected").glob("*"))  # nothing dead-lettered
    assert not list((mid_sink / "forward-spool" / "rejected").glob("*"))
    got = stream_bytes(root_sink)
    assert b"".join(d for _, _, d in sorted(got["_api/app"])) == "".join(r + "\n" for r in records).encode()
    assert [(s, e) for s, e, _ in got["app/direct.log"]] == [(0, 128)]


# -- SIGHUP token reload without dropping connections or data ------------------------------------------


def test_tokens_reload_on_sighup_without_dropping_requests(daemons: Any, tmp_path: Path) -> None:
    col, url, sink = start_collector(daemons, tmp_path, tokens=["old-token"])
    stop = threading.Event()
    answers: list[int] = []
    errors: list[str] = []
    sent: list[int] = []

    def keep_posting() -> None:
        with httpx.Client(timeout=30) as client:  # one kept-alive connection across the reloads
            i = 0
            while not stop.is_set():
                try:
                    r = post(url, [make_chunk("app/steady.log", i * 32, 1)], "old-token", client)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                answers.append(r.status_code)
                if r.status_code == 200:
                    sent.append(i)
                    i += 1
                else:
                    return

    t = threading.Thread(target=keep_posting)
    t.start()
    wait_until(lambda: len(sent) >= 20, 20, "steady traffic")
    cfg_path = tmp_path / "col.yaml"
    section = {"listen": url.removeprefix("http://"), "sink_dir": str(sink), "name": "col", "roll_seconds": 3600}
    write_config(cfg_path, {"collector": {**section, "tokens": ["old-token", "new-token"]}})
    for _ in range(3):
        sighup(col, "the collector")
    n = len(sent)
    wait_until(lambda: len(sent) >= n + 20, 20, "traffic after the reloads")
    assert post(url, [make_chunk("app/new.log", 0, 1)], "new-token").status_code == 200
    # rotate the old token out: the steady sender is refused from the next request on
    write_config(cfg_path, {"collector": {**section, "tokens": ["new-token"]}})
    sighup(col, "the collector")
    t.join(20)
    stop.set()
    assert not t.is_alive()
    assert errors == [] and set(answers) == {200, 401} and answers[-1] == 401 and answers.count(401) == 1
    # a bad reload (unreadable token file) keeps the tokens in force
    write_config(cfg_path, {"collector": {**section, "tokens": [{"token_file": "/nonexistent", "scopes": ["write"]}]}})
    assert col.proc is not None
    before = col.output().count('"reload_failed"')
    col.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: col.output().count('"reload_failed"') > before, 10, "the failed reload logged")
    assert post(url, [make_chunk("app/new.log", 32, 1)], "new-token").status_code == 200
    col.stop()
    got = stream_bytes(sink)
    assert [(s, e) for s, e, _ in sorted(got["app/steady.log"])] == [(i * 32, i * 32 + 32) for i in sent]
    assert col.proc.returncode == 0 and os.path.exists(sink / "done")


def test_logging_handler_sends_its_token_and_keeps_records_while_refused(daemons: Any, tmp_path: Path) -> None:
    import logging

    from headrace.agents import AgentLogHandler

    _agent, url, _ = start_agent(
        daemons, tmp_path, "http://127.0.0.1:9", tokens=[{"token": A_TOKEN, "scopes": ["write", "read"]}]
    )

    def spooled() -> int:
        body = httpx.get(url + "/v1/status", headers=bearer(A_TOKEN), timeout=5).json()
        return sum(s["read_offset"] for s in body["streams"] if s["stream"] == "_api/handler")

    refused = AgentLogHandler(url, data_type="handler", token="wrong", close_timeout=0.5)
    refused.emit(logging.makeLogRecord({"msg": "not with that token"}))
    wait_until(lambda: refused.refused >= 2, 20, "the handler retrying a refused post")
    assert refused.dropped == 0 and refused.sent == 0 and spooled() == 0
    refused.close()
    ok = AgentLogHandler(url, data_type="handler", token=A_TOKEN)
    ok.emit(logging.makeLogRecord({"msg": "hello"}))
    wait_until(lambda: ok.sent == 1, 20, "the record accepted")
    ok.close()
    assert spooled() == len(b"hello\n")
