"""HTTP access to one relay (or any server speaking the relay's stream API): stream, schemas, status, ack.

Errors map onto the headrace tree so retry loops key off classes: a connection failure, timeout or
5xx is :class:`~headrace.errors.Unavailable`; 410 ``scn_too_old`` is
:class:`~headrace.errors.ScnTooOld`; other 4xx are :class:`~headrace.errors.InvalidInput` carrying
the server's reason. Headers, reasons and that mapping are the relay protocol's (``.._protocol``).

A relay whose capture stopped (a change it cannot take in; see docs/relay.md) still serves what it
holds and says so on every stream response; :attr:`Batch.capture_stopped` and
:attr:`RelayClient.capture_stopped` carry that report (:class:`CaptureStopped`).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..._logging import get_logger
from ..._tls import ClientTLS, as_context, request_error
from ...errors import InvalidInput, Unavailable
from .._event import Event, decode_windows
from .._protocol import CaptureStopped, error_for, read_stream_headers, stream_query
from .._schema import SchemaVersion

__all__ = ["Batch", "CaptureStopped", "RelayClient"]

log = get_logger("relay.client")


@dataclass(frozen=True, slots=True)
class Batch:
    """One stream response: whole windows, and how far the server scanned."""

    windows: list[list[Event]]
    scanned_scn: int
    oldest_scn: int | None
    newest_scn: int | None
    #: the server's capture stopped (it still served what it holds); None while it runs
    capture_stopped: CaptureStopped | None = None


class RelayClient:
    """A thin client of one relay URL."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        tls: ClientTLS | ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: how an https:// ``url`` is verified and the client certificate presented
        (a :class:`~headrace._tls.ClientTLS` or a ready context; default: httpx's, i.e. SSL_CERT_FILE or certifi)."""
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport, verify=as_context(tls)
        )
        #: what the last stream response said about the relay's capture (None: running, or not said)
        self.capture_stopped: CaptureStopped | None = None

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> httpx.Response:
        try:
            r = self.http.get(path, params=params, timeout=timeout or self.timeout)
        except httpx.HTTPError as exc:
            raise Unavailable(request_error(f"{self.url}{path}", exc)) from exc
        return self._check(r, params or {})

    def _check(self, r: httpx.Response, params: dict[str, Any]) -> httpx.Response:
        if r.status_code < 400:
            return r
        try:
            body = r.json()
        except ValueError:
            body = None
        raise error_for(r.status_code, body, r.text, self.url, int(params.get("since", -1)))

    def stream(
        self,
        since: int | None,
        sources: Sequence[str] | None = None,
        filter: str | None = None,
        max_bytes: int | None = None,
        wait_ms: int = 10_000,
        subscriber: str | None = None,
        path: str = "/v1/stream",
    ) -> Batch:
        """One long-poll of ``/v1/stream`` (or a server's ``path`` with the same API, e.g. a bootstrap
        server's ``/v1/catchup``); raises on a bad frame or a partial window."""
        params = stream_query(since, sources, filter, max_bytes, wait_ms, subscriber)
        r = self._get(path, params, timeout=self.timeout + wait_ms / 1000.0)
        try:
            windows = decode_windows(r.content)
        except InvalidInput as exc:  # a corrupt or cut response: try again (maybe elsewhere)
            raise Unavailable(f"{self.url}: bad stream response: {exc}") from exc
        stopped = CaptureStopped.from_headers(r.headers)
        if stopped is not None and self.capture_stopped is None:
            log.warning("relay_capture_stopped", relay=self.url, report=str(stopped))
        self.capture_stopped = stopped
        pos = read_stream_headers(r.headers, since)
        scanned = max(pos.scanned_scn, windows[-1][-1].scn) if windows else pos.scanned_scn
        return Batch(windows, scanned, pos.oldest_scn, pos.newest_scn, self.capture_stopped)

    def schema(self, fingerprint: str) -> SchemaVersion:
        d = self._get(f"/v1/schemas/{fingerprint}").json()
        return SchemaVersion(d["table"], int(d["version"]), d["fingerprint"], d["schema"])

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self._get("/v1/status").json()
        return body

    def sources(self) -> list[dict[str, Any]]:
        body: list[dict[str, Any]] = self._get("/v1/sources").json()["sources"]
        return body

    def ack(self, consumer: str, scn: int) -> int:
        """Tell the relay ``consumer`` has everything ≤ ``scn`` durably (it may prune the source below it)."""
        try:
            r = self.http.post("/v1/ack", json={"consumer": consumer, "scn": scn})
        except httpx.HTTPError as exc:
            raise Unavailable(request_error(f"{self.url}/v1/ack", exc)) from exc
        return int(self._check(r, {}).json()["scn"])
