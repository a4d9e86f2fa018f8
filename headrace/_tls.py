"""TLS for every daemon and client: config sections, SSL contexts, and reloading certificates on SIGHUP.

Two config models, shared by every part:

* :class:`ServerTLS` -- a daemon's ``tls:`` section (``cert``, ``key``, optional ``client_ca`` and
  ``require_client_cert``). With it, the daemon serves HTTPS only. :func:`server_options` gives the
  keyword arguments ``run_app`` passes to ``uvicorn.Config``.
* :class:`ClientTLS` -- a client's ``client_tls:`` section (``ca`` to verify servers with, and an
  optional ``cert``/``key`` to present: mTLS). :func:`client_context` builds the
  :class:`ssl.SSLContext` given to httpx as ``verify=``; without a section (``None``), https:// URLs
  are verified as httpx does by default (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's bundle).

Both validate at config load: every file must exist and be readable, and a key must match its
certificate, or the config error names the key path (``collector.tls.key: …``).

Reload: :class:`ReloadingServerContext` holds the context uvicorn listens with. On SIGHUP
(``headrace._reload``) it builds a new context from the same files and, when that succeeds, makes
every *new* TLS connection use it (the listening context's ``sni_callback`` swaps the connection to
the newest context, which OpenSSL calls for every ClientHello, with or without SNI). Connections
already open keep their session; nothing is dropped. A bad new file is logged and the old
certificate stays in use. :func:`reload_client_context` does the same for a long-running client's
context (a new client certificate and key replace the old; a new ``ca`` file is *added* to the
trusted set until restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator

from ._config import Section
from ._logging import get_logger

__all__ = [
    "ClientTLS",
    "ReloadingServerContext",
    "ServerTLS",
    "as_context",
    "client_context",
    "describe_tls_error",
    "reload_client_context",
    "request_error",
    "server_options",
    "watched_client_context",
]

log = get_logger("tls")


def _readable(path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path} does not exist or is not a file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{path} is not readable by this user")


def _check_cert(path: str | None) -> str | None:
    if path is not None:
        _readable(path)
        if b"-----BEGIN CERTIFICATE-----" not in Path(path).read_bytes():
            raise ValueError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return path


def _check_key(key: str | None, info: ValidationInfo) -> str | None:
    """``key`` must be readable and the private key of the ``cert`` validated before it."""
    if key is None:
        return None
    _readable(key)
    cert = info.data.get("cert")
    if cert is None:  # missing or invalid itself (reported there), or not given (checked by the model)
        return key
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ValueError(f"{key} is not the private key of the certificate {cert}") from None
        raise ValueError(
            f"cannot load certificate {cert} with key {key} (a PEM certificate and an unencrypted PEM key): {exc}"
        ) from None
    return key


def _check_ca(path: str | None) -> str | None:
    if path is not None:
        _readable(path)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            raise ValueError(f"{path} holds no PEM CA certificate: {exc}") from None
    return path


class ServerTLS(Section):
    """A daemon's ``tls:`` section: serve HTTPS with this certificate (and optionally demand client certificates)."""

    #: PEM certificate chain: the server's certificate first, then intermediates
    cert: str
    #: PEM private key of ``cert`` (unencrypted; keep it 0600)
    key: str
    #: PEM CA bundle that client certificates are verified against; set: clients may present one
    client_ca: str | None = None
    #: refuse every connection that does not present a certificate signed by ``client_ca`` (mTLS)
    require_client_cert: bool = False

    _cert_ok = field_validator("cert")(_check_cert)
    _key_ok = field_validator("key")(_check_key)
    _ca_ok = field_validator("client_ca")(_check_ca)

    @model_validator(mode="after")
    def _ca_for_required(self) -> ServerTLS:
        if self.require_client_cert and self.client_ca is None:
            raise ValueError(
                "require_client_cert needs client_ca (the CA that client certificates are checked against)"
            )
        return self

    def context(self) -> ssl.SSLContext:
        """A fresh server context from the files as they are now (TLS 1.2 or newer)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return ctx


class ClientTLS(Section):
    """A client's ``client_tls:`` section: how it verifies https:// servers and which certificate it presents."""

    #: PEM CA bundle that servers' certificates are verified against (default: SSL_CERT_FILE, else certifi's bundle)
    ca: str | None = None
    #: PEM client certificate chain presented to servers that ask for one (mTLS); needs ``key``
    cert: str | None = None
    #: PEM private key of ``cert``
    key: str | None = None

    _ca_ok = field_validator("ca")(_check_ca)
    _cert_ok = field_validator("cert")(_check_cert)
    _key_ok = field_validator("key")(_check_key)

    @model_validator(mode="after")
    def _both_or_neither(self) -> ClientTLS:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key: set both (a client certificate and its private key) or neither")
        return self


def client_context(tls: ClientTLS | None = None) -> ssl.SSLContext:
    """The context a client verifies servers with (give it to httpx as ``verify=``).

    Server certificates are always verified, host name included: against ``tls.ca`` when set, else
    as httpx does by default (the ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` the environment names, else
    certifi's bundle). ``tls.cert``/``tls.key`` are presented when a server asks for a client
    certificate. TLS 1.2 or newer.
    """
    if tls is not None and tls.ca is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    else:
        import httpx

        ctx = httpx.create_ssl_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None and tls.cert is not None:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


def reload_client_context(ctx: ssl.SSLContext, tls: ClientTLS | None) -> None:
    """Re-read ``tls``'s files into ``ctx`` (new connections use them): the client certificate and
    key are replaced; the ``ca`` file's certificates are added to the trusted set."""
    if tls is None:
        return
    fresh = ClientTLS.model_validate(tls.model_dump())  # same checks as at load: a bad file raises here
    if fresh.ca is not None:
        ctx.load_verify_locations(cafile=fresh.ca)
    if fresh.cert is not None:
        ctx.load_cert_chain(fresh.cert, fresh.key)


class ReloadingServerContext:
    """The listening context of a daemon, and the newest context built from its ``tls:`` files.

    :attr:`context` is what uvicorn listens with; after :meth:`reload`, each new connection is
    handed the newest context during its handshake (client CA and certificate both replaced).
    """

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self.context = tls.context()
        self._current = self.context
        self._lock = threading.Lock()
        self.reloads = 0
        self.context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not self.context:
            sslobj.context = current
        return None

    def reload(self) -> None:
        """Build a context from the files now on disk; on success, new connections use it."""
        fresh_cfg = ServerTLS.model_validate(self.tls.model_dump())  # the same checks as at startup
        fresh = fresh_cfg.context()
        with self._lock:
            self._current = fresh
            self.reloads += 1
        _log_served("tls_reloaded", self.tls)


def _not_after(cert: str) -> dt.datetime | None:
    try:
        from cryptography import x509

        return x509.load_pem_x509_certificate(Path(cert).read_bytes()).not_valid_after_utc
    except Exception:  # informational only (cryptography missing, an unusual PEM)
        return None


def _log_served(event: str, tls: ServerTLS) -> None:
    """Log the certificate now served, with its expiry; warn when it has expired (clients will refuse it)."""
    not_after = _not_after(tls.cert)
    info = {"cert": tls.cert, "client_ca": tls.client_ca, "require_client_cert": tls.require_client_cert}
    log.info(event, not_after=not_after.isoformat() if not_after else None, **info)
    with contextlib.suppress(OSError):
        if os.stat(tls.key).st_mode & 0o077:
            log.warning("tls_key_readable_by_others", key=tls.key, detail="chmod 600 it (owned by the daemon's user)")
    if not_after is not None and not_after < dt.datetime.now(dt.UTC):
        log.warning(
            "tls_certificate_expired",
            cert=tls.cert,
            not_after=not_after.isoformat(),
            detail="clients will refuse it: install a renewed certificate and key, then SIGHUP",
        )


def server_options(tls: ServerTLS | None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: none without TLS; else an ``ssl_context_factory``
    returning a :class:`ReloadingServerContext`'s context, reloaded on SIGHUP."""
    if tls is None:
        return {}
    from ._reload import on_reload

    holder = ReloadingServerContext(tls)
    on_reload("tls", holder.reload)
    _log_served("tls_enabled", tls)
    return {"ssl_context_factory": lambda _config, _default: holder.context, "loop": "headrace._tls:TlsServerLoop"}


#: seconds a closing TLS connection waits for the client's close_notify before it is dropped
SSL_SHUTDOWN_SECONDS = 5.0


class TlsServerLoop(asyncio.SelectorEventLoop):
    """The event loop of a daemon serving TLS: its servers wait at most :data:`SSL_SHUTDOWN_SECONDS`
    for a client's TLS close_notify (asyncio's default is 30 s). An idle keep-alive client -- an
    agent's or subscriber's pooled connection -- never reads, so never answers; with the default, a
    SIGTERM waited that long for each, and a connection closed for idleness lingered as long.
    A response cut by the drop is one its client retries (every headrace request is idempotent)."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_shutdown_timeout", SSL_SHUTDOWN_SECONDS)
        return await super().create_server(*args, **kwargs)


def describe_tls_error(url: str, exc: BaseException) -> str | None:
    """A one-line explanation when ``exc`` (from a request to ``url``) is a TLS failure, else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            reason = getattr(e, "verify_message", None) or text
            return (
                f"TLS: certificate verify failed for {url}: {reason} "
                "(is client_tls.ca the CA that signed the server's certificate, and is it still valid?)"
            )
        if isinstance(e, ssl.SSLError) or "SSLV3_ALERT" in text or "TLSV1_ALERT" in text or "TLSV13_ALERT" in text:
            return f"TLS: handshake with {url} failed: {text} (does the server require a client certificate?)"
        e = e.__cause__ or e.__context__
    if url.startswith("https://") and "disconnected without sending a response" in str(exc):
        # TLS 1.3: a server refusing the client certificate (or its absence) closes the connection
        # after the handshake, and the client often sees only that
        return (
            f"TLS: {url} closed the connection without an answer: {exc} (a server that requires a "
            "client certificate does this when none, or one it does not trust, is sent: check client_tls.cert/key)"
        )
    return None


def watched_client_context(tls: ClientTLS | None) -> ssl.SSLContext:
    """:func:`client_context` for a daemon: with ``tls`` set, SIGHUP re-reads its files (see
    :func:`reload_client_context`). Library clients use :func:`client_context`."""
    ctx = client_context(tls)
    if tls is not None:
        from ._reload import on_reload

        on_reload("client_tls", lambda: reload_client_context(ctx, tls))
    return ctx


def as_context(tls: ClientTLS | ssl.SSLContext | None) -> ssl.SSLContext:
    """``tls`` itself when it is a context already, else :func:`client_context` of it."""
    return tls if isinstance(tls, ssl.SSLContext) else client_context(tls)


def request_error(url: str, exc: BaseException) -> str:
    """The text a client logs for a failed request to ``url``: a TLS explanation when it was one."""
    return describe_tls_error(url, exc) or f"{url}: {type(exc).__name__}: {exc}"
