"""Certificates made at test time (trustme) for the TLS tests, and HTTPS clients that trust them."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import trustme
from support import Daemon, wait_until


@dataclass(frozen=True)
class Leaf:
    """A certificate and its key, as files."""

    cert: str
    key: str


class Pki:
    """A private CA with a server certificate for 127.0.0.1 and a client certificate, plus a second,
    unrelated CA (a wrong CA for clients to trust), all written under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="headrace test CA")
        self.ca_file = self.write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca = trustme.CA(organization_name="some other CA")
        self.other_ca_file = self.write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.server = self.leaf("server", self.ca, "127.0.0.1", "localhost")
        self.client = self.leaf("client", self.ca, "client.headrace.test")

    def write(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def leaf(self, name: str, ca: trustme.CA, *ids: str, **kw: dt.datetime) -> Leaf:
        c = ca.issue_cert(*ids, **kw)  # type: ignore[arg-type]
        cert = self.write(f"{name}.crt", b"".join(p.bytes() for p in c.cert_chain_pems))
        key = self.write(f"{name}.key", c.private_key_pem.bytes())
        return Leaf(cert, key)

    def expired(self, name: str = "expired") -> Leaf:
        now = dt.datetime.now(dt.UTC)
        return self.leaf(
            name, self.ca, "127.0.0.1", not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1)
        )

    def server_tls(self, require_client_cert: bool = False, leaf: Leaf | None = None) -> dict[str, object]:
        """A daemon's ``tls:`` section."""
        leaf = leaf or self.server
        out: dict[str, object] = {"cert": leaf.cert, "key": leaf.key}
        if require_client_cert:
            out |= {"client_ca": self.ca_file, "require_client_cert": True}
        return out

    def client_tls(self, with_cert: bool = True, ca: str | None = None) -> dict[str, str]:
        """A client's ``client_tls:`` section."""
        out = {"ca": ca or self.ca_file}
        if with_cert:
            out |= {"cert": self.client.cert, "key": self.client.key}
        return out

    def context(self, ca: str | None = None, with_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca or self.ca_file)
        if with_cert:
            ctx.load_cert_chain(self.client.cert, self.client.key)
        return ctx

    def http(self, ca: str | None = None, with_cert: bool = True) -> httpx.Client:
        return httpx.Client(verify=self.context(ca, with_cert), timeout=10)


def wait_https(d: Daemon, url: str, client: httpx.Client, timeout: float = 30.0) -> None:
    """Wait until ``d`` answers 200 at ``url`` over HTTPS (fail early if it exits)."""

    def ok() -> bool:
        assert d.proc is not None
        if d.proc.poll() is not None:
            raise AssertionError(f"{d.name} exited {d.proc.returncode}:\n{d.output()}")
        return client.get(url, timeout=2).status_code == 200

    try:
        wait_until(ok, timeout, f"{d.name} to answer {url}")
    except AssertionError:
        raise AssertionError(f"{d.name} not healthy:\n{d.output()}") from None
