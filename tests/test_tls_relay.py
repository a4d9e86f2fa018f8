"""TLS between the relay, the bootstrap server and subscribers, with certificates made at test time.

Relay → ``headrace subscribe`` (flags) and relay → bootstrap server → ``headrace subscribe``
(snapshot and catch-up, settings from the config file) over HTTPS with client certificates required
(mTLS); a subscriber without a certificate, or trusting another CA, is refused and says why and where.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import bootstrap_workload as wl
import httpx
import pytest
from support import free_port, wait_until, write_config
from tls_support import Pki, wait_https


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def subscribe(tmp: Path, name: str, *args: str, idle_exit: float = 4.0) -> tuple[int, list[str], str]:
    out = subprocess.run(
        [sys.executable, "-m", "headrace", "subscribe", "--idle-exit", str(idle_exit), "--log-format", "json", *args],
        capture_output=True,
        timeout=120,
        env={**os.environ},
        cwd=tmp,
    )
    (tmp / f"{name}.err").write_bytes(out.stderr)
    return out.returncode, out.stdout.decode().splitlines(), out.stderr.decode(errors="replace")


def test_relay_bootstrap_subscriber_over_mtls(daemons: Any, tmp_path: Path, pki: Pki) -> None:
    db = tmp_path / "src.db"
    wl.create(db, 300)
    relay_port, boot_port = free_port(), free_port()
    relay_url, boot_url = f"https://127.0.0.1:{relay_port}", f"https://127.0.0.1:{boot_port}"
    config = write_config(
        tmp_path / "headrace.yaml",
        {
            "relay": {
                "listen": f"127.0.0.1:{relay_port}",
                "source": f"sqlite:///{db}",
                "state_dir": str(tmp_path / "relay"),
                "durable_consumers": ["bootstrap"],
                "sqlite": {"poll_ms": 10},
                "tls": pki.server_tls(require_client_cert=True),
            },
            "bootstrap": {
                "listen": f"127.0.0.1:{boot_port}",
                "relays": [relay_url],
                "store": f"sqlite:///{tmp_path / 'boot.db'}",
                "seed": f"sqlite:///{db}",
                "tls": pki.server_tls(require_client_cert=True),
                "client_tls": pki.client_tls(),
            },
            "subscriber": {"client_tls": pki.client_tls()},
        },
    )
    relay = daemons(["relay", "--config", str(config)], "relay").start()
    boot = daemons(["bootstrap", "--config", str(config)], "bootstrap").start()
    http = pki.http()
    wait_https(relay, relay_url + "/healthz", http)
    wait_https(boot, boot_url + "/healthz", http)
    wait_until(lambda: http.get(boot_url + "/v1/status").json()["snapshot_ready"], 60, "the snapshot over TLS", 0.3)
    # changes after the relay started: in the relay's change log and, through the follower, the bootstrap log
    conn = wl.connect(db)
    rng = random.Random(7)
    for _ in range(40):
        wl.write_one(conn, rng, 300)
    conn.close()
    head = wl.final_scn(db)
    wait_until(lambda: http.get(boot_url + "/v1/status").json()["applied_scn"] >= head, 60, "bootstrap to follow")

    # from the relay alone (flags), and snapshot + catch-up from the bootstrap server (config file)
    rc, relay_lines, err = subscribe(
        tmp_path,
        "relay-only",
        "--relay",
        relay_url,
        "--ca",
        pki.ca_file,
        "--cert",
        pki.client.cert,
        "--key",
        pki.client.key,
    )
    assert rc == 0, err
    assert relay_lines and json.loads(relay_lines[-1])["scn"] == head
    rc, snap_lines, err = subscribe(
        tmp_path, "snap", "--config", str(config), "--relay", relay_url, "--bootstrap", boot_url, "--from-snapshot"
    )
    assert rc == 0, err
    assert wl.materialise(snap_lines) == wl.source_rows(db)

    # refused: no client certificate; a CA that did not sign the relay's certificate
    rc, out, err = subscribe(tmp_path, "no-cert", "--relay", relay_url, "--ca", pki.ca_file, idle_exit=2)
    assert rc == 1 and out == [] and relay_url in err and "requires a client certificate" in err, err
    rc, out, err = subscribe(tmp_path, "wrong-ca", "--relay", relay_url, "--ca", pki.other_ca_file, idle_exit=2)
    assert rc == 1 and out == [] and f"certificate verify failed for {relay_url}" in err, err
    assert err.splitlines()[-1].startswith(
        f"headrace: no relay answered; the last error: TLS: certificate verify failed for {relay_url}"
    )
    with pytest.raises(httpx.HTTPError):
        pki.http(with_cert=False).get(boot_url + "/v1/status")
    assert boot.stop() == 0 and relay.stop() == 0
