"""TLS on every server and client, with certificates made at test time.

* the log path agent → forwarding collector → root collector, each hop over HTTPS with client
  certificates required (mTLS), every line and Log API record delivered; a client without a
  certificate, one trusting another CA, and plain HTTP are refused;
* an expired server certificate is refused by the agent with a log line naming the URL; SIGHUP
  swaps the collector's certificate (to a new CA) while an agent keeps shipping, nothing lost;
* an agent's expired client certificate is refused, and renewed by SIGHUP to the agent; a reload
  replaces the client CA a server checks client certificates against;
* config validation: a key that is not the certificate's, missing files, half a client pair.

The relay, bootstrap and subscriber side is in test_tls_relay.py.
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import done_records
from support import Daemon, free_port, wait_until, write_config
from tls_support import Pki, wait_https

from headrace._config import load_section
from headrace._ship import Shipper
from headrace._tls import ClientTLS, ReloadingServerContext, ServerTLS
from headrace.agents._config import AgentConfig
from headrace.agents._handler import AgentLogHandler
from headrace.bootstrap._config import BootstrapConfig
from headrace.collectors._config import CollectorConfig
from headrace.errors import ConfigError, Unavailable


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


# -- helpers -------------------------------------------------------------------------------------


def start_collector(daemons: Any, tmp: Path, name: str, pki: Pki, **settings: Any) -> tuple[Daemon, str]:
    port = free_port()
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "sink_dir": str(tmp / f"{name}-sink"),
        "name": name,
        "roll_seconds": 3600,
        "upstream_max_backoff": 0.3,
        **settings,
    }
    d = daemons(["collector", "--config", str(write_config(tmp / f"{name}.yaml", {"collector": cfg}))], name)
    d.start()
    url = f"https://127.0.0.1:{port}"
    with pki.http() as c:
        wait_https(d, url + "/healthz", c)
    return d, url


def start_agent(
    daemons: Any, tmp: Path, pki: Pki, collectors: list[str], log: Path, **extra: Any
) -> tuple[Daemon, str]:
    port = free_port()
    cfg = {
        "name": "host-a",
        "collectors": collectors,
        "state_dir": str(tmp / "agent-state"),
        "listen": f"127.0.0.1:{port}",
        "sources": [{"path": str(log), "data_type": "app"}],
        "max_backoff_seconds": 0.2,
        "partial_line_seconds": 0.2,
        "tls": pki.server_tls(),
        **extra,
    }
    d = daemons(["agent", "--config", str(write_config(tmp / "agent.yaml", {"agent": cfg}))], "agent").start()
    url = f"https://127.0.0.1:{port}"
    with pki.http() as c:
        wait_https(d, url + "/healthz", c)
    return d, url


def agent_caught_up(client: httpx.Client, url: str) -> bool:
    streams = client.get(url + "/v1/status").json()["streams"]
    return bool(streams) and all(s["lag_bytes"] == 0 and s["acked_offset"] == s["read_offset"] for s in streams)


def sink_streams(sink: Path) -> dict[str, bytes]:
    """Each stream's bytes in the sink, checked contiguous from 0 (so nothing lost or doubled)."""
    pieces: dict[str, list[tuple[int, int, bytes]]] = {}
    for r in done_records(sink):
        pieces.setdefault(r["stream"], []).append((r["seq_start"], r["seq_end"], r["data"]))
    out: dict[str, bytes] = {}
    for stream, ps in pieces.items():
        ps.sort()
        pos = 0
        for start, end, _data in ps:
            assert start == pos, f"{stream}: gap or overlap at {pos}"
            pos = end
        out[stream] = b"".join(p[2] for p in ps)
    return out


def lines(start: int, stop: int) -> bytes:
    return b"".join(b"line %08d %s\n" % (i, b"x" * (i % 41)) for i in range(start, stop))


def refused(client: httpx.Client, url: str) -> str:
    """The error text of a request that must fail."""
    with pytest.raises(httpx.HTTPError) as err:
        client.get(url, timeout=5)
    return repr(err.value)


# -- config --------------------------------------------------------------------------------------


def test_config_validation_names_the_key(pki: Pki, tmp_path: Path) -> None:
    other = pki.leaf("other", pki.ca, "other.test")
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "collector": {"tls": {"cert": pki.server.cert, "key": other.key}},
            "agent": {"tls": {"cert": str(tmp_path / "missing.crt"), "key": pki.server.key}},
            "bootstrap": {
                "tls": {"cert": pki.server.cert, "key": pki.server.key, "require_client_cert": True},
                "client_tls": {"ca": pki.ca_file, "cert": pki.client.cert},
            },
        },
    )
    with pytest.raises(ConfigError) as err:
        load_section(cfg, "collector", CollectorConfig)
    assert "collector.tls.key" in str(err.value) and other.key in str(err.value)
    assert "is not the private key of the certificate" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_section(cfg, "agent", AgentConfig)
    assert "agent.tls.cert" in str(err.value) and "missing.crt does not exist" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_section(cfg, "bootstrap", BootstrapConfig)
    text = str(err.value)
    assert "bootstrap.tls" in text and "require_client_cert needs client_ca" in text
    assert "bootstrap.client_tls" in text and "set both" in text
    # a CA file that holds no certificate
    bad = tmp_path / "bad-ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="holds no PEM CA certificate"):
        ClientTLS(ca=str(bad))


def test_a_bad_new_certificate_on_reload_keeps_the_old_one(pki: Pki, tmp_path: Path) -> None:
    cert, key = tmp_path / "s.crt", tmp_path / "s.key"
    cert.write_bytes(Path(pki.server.cert).read_bytes())
    key.write_bytes(Path(pki.server.key).read_bytes())
    holder = ReloadingServerContext(ServerTLS(cert=str(cert), key=str(key)))
    key.write_bytes(Path(pki.client.key).read_bytes())  # no longer the certificate's key
    with pytest.raises(ValueError, match="is not the private key"):
        holder.reload()
    assert holder.reloads == 0
    key.write_bytes(Path(pki.server.key).read_bytes())
    holder.reload()
    assert holder.reloads == 1


# -- the log path ----------------------------------------------------------------------------------


def test_log_path_tree_over_mtls(daemons: Any, tmp_path: Path, pki: Pki) -> None:
    root, root_url = start_collector(daemons, tmp_path, "root", pki, tls=pki.server_tls(require_client_cert=True))
    fwd, fwd_url = start_collector(
        daemons,
        tmp_path,
        "fwd",
        pki,
        tls=pki.server_tls(require_client_cert=True),
        upstream=[root_url],
        client_tls=pki.client_tls(),
    )
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 3000))
    agent, agent_url = start_agent(daemons, tmp_path, pki, [fwd_url], log, client_tls=pki.client_tls())
    http = pki.http()
    records = [f"api record {i}" for i in range(200)]
    for i in range(0, 200, 50):
        r = http.post(agent_url + "/v1/log", json={"data_type": "api", "records": records[i : i + 50]})
        assert r.status_code == 200, r.text
    with log.open("ab") as f:
        f.write(lines(3000, 6000))
    # the logging handler verifies the agent's HTTPS too
    handler = AgentLogHandler(agent_url, data_type="handler", tls=ClientTLS(ca=pki.ca_file))
    logger = logging.getLogger("tls-test-handler")
    logger.addHandler(handler)
    logger.propagate = False
    for i in range(20):
        logger.warning("handler record %d", i)
    handler.close()
    logger.removeHandler(handler)
    assert handler.sent == 20 and handler.dropped == 0

    # what may not get in, at every hop
    assert "CERTIFICATE_VERIFY_FAILED" in refused(pki.http(ca=pki.other_ca_file), fwd_url + "/healthz")
    with pki.http(with_cert=False) as no_cert:
        refused(no_cert, root_url + "/healthz")
        refused(no_cert, fwd_url + "/healthz")
        assert no_cert.get(agent_url + "/healthz").status_code == 200  # the agent does not require one
    refused(httpx.Client(timeout=5), root_url.replace("https://", "http://") + "/healthz")

    wait_until(lambda: agent_caught_up(http, agent_url), 60, "the agent to ship everything over TLS")
    wait_until(
        lambda: http.get(fwd_url + "/v1/status").json()["store"]["spool_chunks"] == 0,
        60,
        "the forwarder to drain its spool upstream over TLS",
    )
    # a client's idle keep-alive connection (``http`` holds some) does not hold up a TLS daemon's
    # shutdown: it waits a few seconds for the close_notify, not asyncio's default 30 s
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 15
    http.close()
    assert fwd.stop() == 0 and root.stop() == 0
    got = sink_streams(tmp_path / "root-sink")
    assert len(got) == 3, sorted(got)
    assert got.pop("_api/handler") == "".join(f"handler record {i}\n" for i in range(20)).encode()
    api = next(v for k, v in got.items() if k.startswith("_api/"))
    tailed = next(v for k, v in got.items() if not k.startswith("_api/"))
    assert tailed == lines(0, 6000)
    assert api == "".join(r + "\n" for r in records).encode()
    assert not list((tmp_path / "fwd-sink").rglob("rejected/*"))


def test_expired_certificate_refused_then_sighup_swaps_in_a_valid_one(daemons: Any, tmp_path: Path, pki: Pki) -> None:
    """The agent refuses a collector whose certificate expired (and says so, naming the URL); the
    operator replaces the files and sends SIGHUP; the agent then delivers every line."""
    expired = pki.expired()
    cert, key = tmp_path / "col.crt", tmp_path / "col.key"
    cert.write_bytes(Path(expired.cert).read_bytes())
    key.write_bytes(Path(expired.key).read_bytes())
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    cfg = {"listen": f"127.0.0.1:{port}", "sink_dir": str(tmp_path / "col-sink"), "name": "col", "roll_seconds": 3600}
    cfg["tls"] = {"cert": str(cert), "key": str(key)}
    col = daemons(["collector", "--config", str(write_config(tmp_path / "col.yaml", {"collector": cfg}))], "col")
    col.start()
    wait_until(lambda: _listening(port) and col.alive(), 20, "the collector to listen")

    assert "tls_certificate_expired" in col.output()  # the server says so too
    # in-process: the shipper's error names the URL and the reason
    shipper = Shipper([url], tls=ClientTLS(ca=pki.ca_file))
    with pytest.raises(Unavailable) as err:
        shipper._attempt(b"", 0, lambda: None)
    shipper.close()
    assert f"certificate verify failed for {url}" in str(err.value) and "expired" in str(err.value)

    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 2000))
    agent, agent_url = start_agent(daemons, tmp_path, pki, [url], log, client_tls=pki.client_tls(with_cert=False))
    wait_until(
        lambda: f"certificate verify failed for {url}" in agent.output() and "expired" in agent.output(),
        20,
        "the agent to log the expired certificate",
    )
    # renew: new files in place, SIGHUP
    cert.write_bytes(Path(pki.server.cert).read_bytes())
    key.write_bytes(Path(pki.server.key).read_bytes())
    assert col.proc is not None
    col.proc.send_signal(signal.SIGHUP)
    http = pki.http()
    wait_until(lambda: agent_caught_up(http, agent_url), 60, "the agent to ship once the certificate was renewed")
    assert agent.stop() == 0 and col.stop() == 0
    assert list(sink_streams(tmp_path / "col-sink").values()) == [lines(0, 2000)]
    assert '"tls_reloaded"' in col.output() or "tls_reloaded" in col.output()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sighup_rotates_to_a_new_ca_while_an_agent_ships(daemons: Any, tmp_path: Path, pki: Pki) -> None:
    """The collector's certificate is replaced by one from a new CA and SIGHUP sent while an agent
    (trusting both CAs during the rotation) ships a growing file: a client trusting only the new CA
    connects after the reload, one trusting only the old CA no longer does, and no line is lost."""
    new_ca = pki.other_ca  # the rotation's new CA
    new_leaf = pki.leaf("rotated", new_ca, "127.0.0.1")
    cert, key = tmp_path / "col.crt", tmp_path / "col.key"
    cert.write_bytes(Path(pki.server.cert).read_bytes())
    key.write_bytes(Path(pki.server.key).read_bytes())
    both = pki.write("both-cas.pem", Path(pki.ca_file).read_bytes() + Path(pki.other_ca_file).read_bytes())
    col, url = start_collector(daemons, tmp_path, "col", pki, tls={"cert": str(cert), "key": str(key)})
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    agent, agent_url = start_agent(daemons, tmp_path, pki, [url], log, client_tls={"ca": both})
    old_only, new_only = pki.http(with_cert=False), pki.http(ca=pki.other_ca_file, with_cert=False)
    refused(new_only, url + "/healthz")

    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with log.open("ab", buffering=0) as f:
            while not stop.is_set() and written[0] < 200_000:
                f.write(lines(written[0], written[0] + 50))
                written[0] += 50
                stop.wait(0.005)

    t = threading.Thread(target=writer)
    t.start()
    try:
        http = pki.http()
        wait_until(
            lambda: http.get(agent_url + "/v1/status").json()["streams"][0]["acked_offset"] > 0,
            30,
            "the agent to ship something before the rotation",
        )
        cert.write_bytes(Path(new_leaf.cert).read_bytes())
        key.write_bytes(Path(new_leaf.key).read_bytes())
        assert col.proc is not None
        col.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: new_only.get(url + "/healthz").status_code == 200, 10, "the new certificate to be served")
        assert "CERTIFICATE_VERIFY_FAILED" in refused(old_only, url + "/healthz")
        acked_at_reload = http.get(agent_url + "/v1/status").json()["streams"][0]["acked_offset"]
        wait_until(
            lambda: http.get(agent_url + "/v1/status").json()["streams"][0]["acked_offset"] > acked_at_reload,
            30,
            "the agent to keep shipping after the reload",
        )
    finally:
        stop.set()
        t.join()
    wait_until(lambda: agent_caught_up(http, agent_url), 60, "the agent to ship everything")
    assert agent.stop() == 0 and col.stop() == 0
    assert list(sink_streams(tmp_path / "col-sink").values()) == [lines(0, written[0])]
    assert "tls_reloaded" in col.output()


def test_agent_client_certificate_renewed_by_sighup(daemons: Any, tmp_path: Path, pki: Pki) -> None:
    """A collector requiring client certificates refuses the agent's expired one (the agent says so,
    naming the URL); new files in place and SIGHUP to the agent, and it ships everything."""
    col, url = start_collector(daemons, tmp_path, "col", pki, tls=pki.server_tls(require_client_cert=True))
    now_expired = pki.expired("client-expired")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert.write_bytes(Path(now_expired.cert).read_bytes())
    key.write_bytes(Path(now_expired.key).read_bytes())
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 1500))
    client_tls = {"ca": pki.ca_file, "cert": str(cert), "key": str(key)}
    agent, agent_url = start_agent(daemons, tmp_path, pki, [url], log, client_tls=client_tls)
    wait_until(lambda: f"TLS: {url}" in agent.output(), 20, "the agent to log the refused client certificate")
    http = pki.http()
    assert http.get(agent_url + "/v1/status").json()["streams"][0]["acked_offset"] == 0
    cert.write_bytes(Path(pki.client.cert).read_bytes())
    key.write_bytes(Path(pki.client.key).read_bytes())
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: agent_caught_up(http, agent_url), 60, "the agent to ship with its renewed certificate")
    http.close()
    assert agent.stop() == 0 and col.stop() == 0
    assert list(sink_streams(tmp_path / "col-sink").values()) == [lines(0, 1500)]


def test_reload_replaces_the_client_ca(pki: Pki, tmp_path: Path) -> None:
    """After a reload, client certificates are checked against the new ``client_ca`` file only."""
    client_ca = tmp_path / "clients-ca.pem"
    client_ca.write_bytes(Path(pki.ca_file).read_bytes())
    holder = ReloadingServerContext(
        ServerTLS(cert=pki.server.cert, key=pki.server.key, client_ca=str(client_ca), require_client_cert=True)
    )
    other_client = pki.leaf("other-client", pki.other_ca, "c.test")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with holder.context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    def handshake(leaf: Any) -> bool:
        ctx = ssl.create_default_context(cafile=pki.ca_file)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                return tls.recv(2) == b"ok"
        except (ssl.SSLError, OSError):
            return False

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert handshake(pki.client) and not handshake(other_client)
        client_ca.write_bytes(Path(pki.other_ca_file).read_bytes())
        holder.reload()
        assert handshake(other_client) and not handshake(pki.client)
    finally:
        listener.close()
