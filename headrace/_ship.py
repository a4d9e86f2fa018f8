"""Shipping batches of chunks to a list of collectors, with failover and backoff.

:class:`Shipper` sends one batch (``POST {url}/v1/chunks``, body :func:`headrace._chunk.encode_batch`,
``Content-Type: application/x-headrace-chunks``, ``Authorization: Bearer <token>`` when a token is
set) and returns only when a collector answered 2xx with ``{"acked": N, "duplicates": K}``, which a
collector sends only after the chunks are fsynced. Until then it retries:

* a connection error, a timeout, a 5xx, 408 or 429 is transient (:class:`~headrace.errors.Unavailable`):
  the next attempt goes to the next collector on the list, with exponential backoff and jitter
  (tenacity, keyed off :class:`~headrace.errors.TransientError`), forever, until ``stop`` is set
  (then :class:`ShipStopped`);
* 401 or 403 (the collector refuses our token, or the token may not write these sources) is
  :class:`TokenRefused`, retried like a transient failure (the batch is fine; the token is what an
  operator fixes, on either side, and SIGHUP reloads it) and never dead-lettered; while it lasts
  :attr:`Shipper.refused` says why, which turns the sender's ``/healthz`` red;
* any other 4xx is :class:`Rejected` (a :class:`~headrace.errors.UsageError`): retrying the same
  bytes cannot help, so it is raised at once, never looped on.

Compression (``compression="zstd"``, the default of agents and forwarding collectors): the body is
sent as one zstd frame (``headrace._wire_zstd``) with ``Content-Encoding: zstd`` (unless that is no
smaller). A collector that cannot read it answers 415 (one that knows the header but not the
coding) or 400 (one from before compression, or with ``accept_compression: false``: it reads the
frame as a batch and finds no batch magic). On either answer to a compressed body the same batch
is sent again at once uncompressed; if that is accepted, the collector is sent identity for the
next ``identity_retry_seconds`` (10 minutes), then zstd is tried again (``ship_compression_refused``
log line, ``headrace_ship_compression_fallbacks_total``). If the identity body is refused too, the
batch is :class:`Rejected` as usual and the collector is not marked.

:func:`pump` is the loop an agent or a forwarding collector runs in a thread: peek a batch from a
:class:`~headrace._spool.Spool`, ship it, call ``on_acked`` (save checkpoints), then ack the spool.
It is a pipeline: a preparing thread peeks and compresses the next batch while the current one
waits for its ack, and a helper thread records acks (``on_acked`` then the spool's ack, in order,
several waiting acks at once).
Before a batch is sent, every chunk is checked with :func:`headrace._chunk.validate_chunk` (the
rules a collector applies): a chunk that fails is written alone to ``dead_letter_dir`` (never
dropped), logged, counted in ``headrace_ship_dead_letters_total`` and released in its place in the
order, and the valid chunks around it are shipped. A batch a collector still rejects (4xx) is
written whole to ``dead_letter_dir`` the same way, so one bad chunk can neither stop the shipper
nor stall the spool.
"""

from __future__ import annotations

import json
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import tenacity
from prometheus_client import Counter, Gauge, Histogram

from ._atomic import write_atomic
from ._chunk import BATCH_CONTENT_TYPE, Chunk, encode_batch, join_batch, validate_chunk
from ._logging import get_logger
from ._spool import Spool, SpoolEntry
from ._tls import ClientTLS, as_context, request_error
from ._wire_zstd import ZSTD, compress
from .errors import InvalidInput, TransientError, Unavailable, UsageError

__all__ = ["Ack", "AckNotRecorded", "Prepared", "Rejected", "ShipStopped", "Shipper", "TokenRefused", "pump"]

log = get_logger("ship")

SHIP_BATCHES = Counter("headrace_ship_batches_total", "Batches sent to collectors, by result", ["result"])
SHIP_BYTES = Counter("headrace_ship_bytes_total", "Chunk data bytes acked by collectors")
SHIP_CHUNKS = Counter("headrace_ship_chunks_total", "Chunks acked by collectors")
SHIP_LATENCY = Histogram("headrace_ship_seconds", "Time from send to ack of one batch attempt")
DEAD_LETTERS = Counter(
    "headrace_ship_dead_letters_total", "Chunks moved to the dead-letter folder, by reason", ["reason"]
)
WIRE_BYTES = Counter("headrace_ship_wire_bytes_total", "Request body bytes sent, by Content-Encoding", ["encoding"])
PREPARED = Gauge("headrace_ship_batches_prepared", "Batches prepared (compressed) ahead, waiting to be sent")
COMPRESSION_FALLBACKS = Counter(
    "headrace_ship_compression_fallbacks_total", "Collectors found not to read zstd (sent identity for a while)"
)
_TRANSIENT_STATUS = {408, 425, 429}
_TOKEN_STATUS = {401, 403}
_ENCODING_REFUSED = {400, 415}  # to a zstd body: try identity on that collector
_SPLIT_STATUS = {400, 413, 422}  # about the content: halves are tried to isolate the refused chunk


@dataclass(frozen=True, slots=True)
class Ack:
    """A collector's acknowledgement of a whole batch."""

    url: str
    acked: int
    duplicates: int


class Prepared:
    """A batch's request body, and its zstd frame once made (made at most once, on first need)."""

    __slots__ = ("_small", "body", "level")

    def __init__(self, body: bytes, level: int) -> None:
        self.body = body
        self.level = level
        self._small: list[bytes | None] = []

    def compressed(self) -> bytes | None:
        """The zstd body (made once per batch), or None when it is no smaller."""
        if not self._small:
            z = compress(self.body, self.level)
            self._small.append(z if len(z) < len(self.body) else None)
        return self._small[0]


class Rejected(UsageError):
    """A collector refused the batch with a 4xx; sending the same bytes again will not help."""

    def __init__(self, url: str, status: int, body: str) -> None:
        self.url = url
        self.status = status
        self.body = body
        super().__init__(f"{url} refused the batch with HTTP {status}: {body[:500]}")


class TokenRefused(Unavailable):
    """A collector answered 401/403: our token is missing, unknown, or may not write these sources.

    Retried with backoff (never dead-lettered): the data is fine, the credentials are not.
    """


class ShipStopped(TransientError):
    """Shipping was asked to stop before any collector acked the batch (the batch stays spooled)."""


class Shipper:
    """Sends batches to ``urls`` (collector base URLs like ``http://host:7070``) until one acks."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 30.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        stop: threading.Event | None = None,
        transport: httpx.BaseTransport | None = None,
        tls: ClientTLS | ssl.SSLContext | None = None,
        compression: str = "none",
        compression_level: int = 1,
        identity_retry_seconds: float = 600.0,
    ) -> None:
        """``tls``: how https:// collectors are verified and the client certificate presented
        (:mod:`headrace._tls`; default: SSL_CERT_FILE or certifi's bundle, no client certificate)."""
        if not urls:
            raise UsageError("no collector URLs to ship to: set at least one in `collectors`")
        self.urls = [u.rstrip("/") for u in urls]
        self.stop = stop or threading.Event()
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        headers = {"content-type": BATCH_CONTENT_TYPE}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self.tls_context = as_context(tls)
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport, verify=self.tls_context)
        self._next = 0  # index of the collector to try first; sticks to the last one that acked
        #: why the last attempt was refused for its token (401/403); None once a collector acked
        self.refused: str | None = None
        #: per collector URL: wall times of its last ack and last failure, and that failure
        self.collectors: dict[str, dict[str, Any]] = {u: {"last_ack": None, "last_error": None} for u in self.urls}
        self._failing_since: float | None = None  # monotonic: when attempts began to fail without an ack
        if compression not in (ZSTD, "none"):
            raise UsageError(f"compression {compression!r}: use zstd or none")
        self.compression = compression
        self.compression_level = compression_level
        self.identity_retry_seconds = identity_retry_seconds
        self._identity_until: dict[str, float] = {}  # url -> monotonic time until which it is sent identity

    def set_token(self, token: str | None) -> None:
        """Send ``token`` from the next request on (a SIGHUP reload of the sender's config)."""
        if token:
            self._client.headers["authorization"] = f"Bearer {token}"
        else:
            self._client.headers.pop("authorization", None)

    def close(self) -> None:
        self._client.close()

    def down_for(self) -> tuple[float, str] | None:
        """(seconds, last error) while no collector has acked since attempts began to fail; else None."""
        since = self._failing_since
        if since is None:
            return None
        errors = [c["last_error"] for c in self.collectors.values() if c["last_error"]]
        return time.monotonic() - since, errors[-1][1] if errors else "no answer"

    def _note(self, url: str, error: str | None) -> None:
        state = self.collectors.setdefault(url, {"last_ack": None, "last_error": None})
        if error is None:
            state["last_ack"] = time.time()
            self._failing_since = None
        else:
            state["last_error"] = (time.time(), error)
            if self._failing_since is None:
                self._failing_since = time.monotonic()

    def wants_zstd(self, url: str) -> bool:
        """Whether the next batch to ``url`` goes compressed (no recent refusal of zstd by it)."""
        return self.compression == ZSTD and self._identity_until.get(url, 0.0) <= time.monotonic()

    def _post(self, url: str, body: bytes, encoding: str) -> httpx.Response:
        headers = {"content-encoding": ZSTD} if encoding == ZSTD else None
        started = time.monotonic()
        try:
            resp = self._client.post(f"{url}/v1/chunks", content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._next += 1
            SHIP_BATCHES.labels("unavailable").inc()
            raise Unavailable(request_error(url, exc)) from exc
        SHIP_LATENCY.observe(time.monotonic() - started)
        WIRE_BYTES.labels(encoding).inc(len(body))
        return resp

    def _attempt(self, body: bytes, count: int, compressed: Callable[[], bytes | None]) -> Ack:
        url = self.urls[self._next % len(self.urls)]
        try:
            ack = self._attempt_one(url, body, count, compressed)
        except (TransientError, Rejected) as exc:
            self._note(url, str(exc))
            raise
        self._note(url, None)
        return ack

    def _attempt_one(self, url: str, body: bytes, count: int, compressed: Callable[[], bytes | None]) -> Ack:
        small = compressed() if self.wants_zstd(url) else None
        if small is not None:
            resp = self._post(url, small, ZSTD)
            if resp.status_code in _ENCODING_REFUSED:
                first = resp
                resp = self._post(url, body, "identity")
                if 200 <= resp.status_code < 300:
                    self._identity_until[url] = time.monotonic() + self.identity_retry_seconds
                    COMPRESSION_FALLBACKS.inc()
                    log.warning(
                        "ship_compression_refused",
                        url=url,
                        status=first.status_code,
                        detail=first.text[:200],
                        identity_seconds=self.identity_retry_seconds,
                    )
        else:
            resp = self._post(url, body, "identity")
        if 200 <= resp.status_code < 300:
            try:
                data = resp.json()
                ack = Ack(url, int(data.get("acked", count)), int(data.get("duplicates", 0)))
            except (ValueError, AttributeError, TypeError):
                ack = Ack(url, count, 0)
            SHIP_BATCHES.labels("acked").inc()
            if self.refused is not None:
                log.info("ship_token_accepted", url=url)
                self.refused = None
            return ack
        if resp.status_code in _TOKEN_STATUS:
            self._next += 1
            SHIP_BATCHES.labels("token_refused").inc()
            why = f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}"
            if self.refused is None:
                log.error("ship_token_refused", url=url, status=resp.status_code, detail=resp.text[:300])
            self.refused = why
            raise TokenRefused(f"collector refused our token: {why}")
        if resp.status_code >= 500 or resp.status_code in _TRANSIENT_STATUS:
            self._next += 1
            SHIP_BATCHES.labels("unavailable").inc()
            raise Unavailable(f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}")
        SHIP_BATCHES.labels("rejected").inc()
        raise Rejected(url, resp.status_code, resp.text)

    def prepare(
        self, chunks: Sequence[Chunk], encoded: Sequence[bytes | memoryview] | None = None, *, compress_now: bool = True
    ) -> Prepared:
        """The request body of ``chunks`` (see :meth:`ship`), compressed now when zstd is wanted.

        :func:`pump` calls this in its preparing thread, so the next batch is compressed while the
        previous one waits for its ack (zstandard releases the GIL while it compresses).
        """
        body = join_batch(encoded) if encoded is not None else encode_batch(chunks)
        batch = Prepared(body, self.compression_level)
        if compress_now and self.wants_zstd(self.urls[self._next % len(self.urls)]):
            batch.compressed()
        return batch

    def ship(
        self,
        chunks: Sequence[Chunk],
        encoded: Sequence[bytes | memoryview] | None = None,
        *,
        prepared: Prepared | None = None,
    ) -> Ack:
        """Send ``chunks`` as one batch; return the first 2xx ack.

        ``encoded``: the same chunks already encoded (:func:`~headrace._chunk.encode_chunk`, as the
        spool keeps them); the body is then joined from them instead of encoding the chunks again.
        ``prepared``: the body made ahead by :meth:`prepare` from the same chunks (then neither is re-encoded).

        Raises :class:`Rejected` on a 4xx (not retried) and :class:`ShipStopped` when ``stop`` is set
        while no collector is reachable. Transient failures are retried with backoff across the list.
        """
        batch = prepared if prepared is not None else self.prepare(chunks, encoded, compress_now=False)
        body = batch.body
        compressed = batch.compressed

        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("ship_retry", attempt=state.attempt_number, error=str(exc))

        def sleep(seconds: float) -> None:
            if self.stop.wait(seconds):
                raise ShipStopped("stopping: batch left in the spool for the next run")

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError) & tenacity.retry_if_not_exception_type(ShipStopped),
            wait=tenacity.wait_exponential(multiplier=self.min_backoff, max=self.max_backoff)
            + tenacity.wait_random(0, self.min_backoff),
            stop=tenacity.stop_never,
            sleep=sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if self.stop.is_set():
                    raise ShipStopped("stopping: batch left in the spool for the next run")
                # An attempt per collector before backing off: fail over at once, back off per round.
                last: Unavailable | None = None
                for _ in range(len(self.urls)):
                    try:
                        ack = self._attempt(body, len(chunks), compressed)
                    except Unavailable as exc:
                        last = exc
                        continue
                    SHIP_CHUNKS.inc(len(chunks))
                    SHIP_BYTES.inc(sum(len(c.data) for c in chunks))
                    return ack
                assert last is not None
                raise last
        raise AssertionError("unreachable")  # pragma: no cover


def pump(
    spool: Spool,
    shipper: Shipper,
    stop: threading.Event,
    *,
    max_chunks: int = 256,
    max_bytes: int = 4 << 20,
    on_acked: Callable[[list[SpoolEntry], Ack | None], None] | None = None,
    dead_letter_dir: str | Path | None = None,
    idle_wait: float | None = 0.5,
    max_chunk_bytes: int | None = None,
) -> None:
    """Ship everything in ``spool`` until ``stop`` is set (then return after the batch in flight).

    For each batch, in order: :meth:`Shipper.ship`, then ``on_acked(entries, ack)`` (save what
    depends on the ack), then :meth:`Spool.ack`. Three threads form a pipeline: a preparing thread
    peeks the next batch and builds (and compresses) its body with :meth:`Shipper.prepare` while the
    calling thread sends the previous one and waits for its ack, and a helper thread records acks
    (the two last steps, in order, several acked batches at once when they queue up). The spool's
    reserving peek keeps the batches apart; at most one batch is prepared ahead (the next is read
    only once that one is taken), one in flight and one being recorded, and nothing is acked out of
    order. A prepared batch lives in memory only:
    if the process dies, it is offered again from the spool like any batch not acked.

    A :class:`Rejected` batch goes
    whole to ``dead_letter_dir`` as ``<first source>_<first seq_end>_<time>.batch`` (an encoded
    batch) and ``on_acked(entries, None)`` is called before it is released; a chunk that fails
    :func:`~headrace._chunk.validate_chunk` (with ``max_chunk_bytes``, when given) goes there alone
    before sending, as ``<source>_<seq_end>_<time>.invalid.batch``. A batch refused with 400, 413 or
    422 is split in halves, recursively, so only the chunks refused on their own are set aside. Set ``shipper.stop`` to
    the same event so retries end on stop. If ``on_acked`` raises, the error is logged, nothing
    more is acked (the spool keeps everything) and, once the batch in flight is answered,
    :class:`AckNotRecorded` is raised (chained to the error) for the caller's supervisor, which may
    run ``pump`` again: everything not yet released is offered again.

    ``idle_wait``: how long an empty spool is waited on before ``stop`` is looked at again; with
    None there is no timer at all, and whoever sets ``stop`` calls ``spool.wake()``.
    """
    done: queue.Queue[tuple[list[SpoolEntry], Ack | None] | None] = queue.Queue(maxsize=2)
    failed = threading.Event()
    failure: list[BaseException] = []
    halt = threading.Event()  # the sending side has stopped: the preparing thread ends too
    # One-slot handoff from the preparing thread: ("ship", run, body) or ("dead", run, problem).
    handoff = threading.Condition()
    slot: list[tuple[list[SpoolEntry], Prepared | InvalidInput]] = []
    prep_ended = [False]
    prep_error: list[BaseException] = []

    def record_acks() -> None:
        ending = False
        while not ending:
            got = [done.get()]
            while True:  # every ack already waiting: one checkpoint save and one spool ack for all
                try:
                    got.append(done.get_nowait())
                except queue.Empty:
                    break
            if None in got:
                ending = True
                got = got[: got.index(None)]
            items = [item for item in got if item is not None]
            if failed.is_set() or not items:
                continue
            try:
                # Consecutive acked batches are recorded with one on_acked call and one spool ack
                # (one checkpoint save, one head save); a dead-lettered batch gets its own call.
                group: list[SpoolEntry] = []
                last: Ack | None = None
                for run, ack in [*items, ([], None)]:
                    if ack is not None:
                        group += run
                        last = ack
                        continue
                    if group:
                        if on_acked is not None:
                            on_acked(group, last)
                        spool.ack(len(group))
                        group = []
                    if run:
                        if on_acked is not None:
                            on_acked(run, None)
                        spool.ack(len(run))
            except Exception as exc:  # disk full, …: stop shipping rather than ack what is not recorded
                log.error("ack_recording_failed", error=repr(exc))
                failure.append(exc)
                failed.set()
                spool.wake()

    def stopping() -> bool:
        return stop.is_set() or failed.is_set() or halt.is_set()

    def prepare() -> None:
        try:
            while not stopping():
                with handoff:  # the next batch is read from the spool only once the slot is free
                    handoff.wait_for(lambda: not slot or halt.is_set())
                if not spool.wait_nonempty(idle_wait, unreserved=True, until=stopping):
                    continue
                entries = spool.peek(max_chunks, max_bytes, reserve=True)
                if not entries:
                    continue
                runs = [(entries, None)] if max_chunk_bytes is None else _split_invalid(entries, max_chunk_bytes)
                for run, problem in runs:
                    item: Prepared | InvalidInput
                    if problem is not None:
                        item = problem
                    else:
                        item = shipper.prepare([e.chunk for e in run], [e.encoded for e in run])
                    with handoff:
                        handoff.wait_for(lambda: not slot or halt.is_set())
                        if halt.is_set():
                            return
                        slot.append((run, item))
                        PREPARED.inc()
                        handoff.notify_all()
        except BaseException as exc:  # reading the spool failed: the sender raises it for the supervisor
            prep_error.append(exc)
        finally:
            with handoff:
                prep_ended[0] = True
                handoff.notify_all()

    def _ship_run(run: list[SpoolEntry], prepared: Prepared | None) -> None:
        try:
            ack: Ack | None = shipper.ship([e.chunk for e in run], [e.encoded for e in run], prepared=prepared)
        except Rejected as exc:
            if exc.status in _SPLIT_STATUS and len(run) > 1:  # find the chunk(s) refused; ship the rest
                _ship_run(run[: len(run) // 2], None)
                _ship_run(run[len(run) // 2 :], None)
                return
            ack = None
            _dead_letter(spool, run, exc, dead_letter_dir)
        done.put((run, ack))

    acker = threading.Thread(target=record_acks, name="ship-acks", daemon=True)
    acker.start()
    preparer = threading.Thread(target=prepare, name="ship-prepare", daemon=True)
    preparer.start()
    try:
        while True:
            with handoff:
                handoff.wait_for(lambda: bool(slot) or prep_ended[0])
                if not slot:
                    break
                run, item = slot.pop()
                PREPARED.dec()
                handoff.notify_all()
            if stop.is_set() or failed.is_set():
                break  # the prepared batch stays in the spool
            if isinstance(item, InvalidInput):
                _dead_letter(spool, run, item, dead_letter_dir)
                done.put((run, None))
                continue
            try:
                _ship_run(run, item)
            except ShipStopped:
                return
    finally:
        with handoff:
            halt.set()
            if slot:
                slot.clear()
                PREPARED.dec()
            handoff.notify_all()
        spool.wake()
        preparer.join()
        done.put(None)
        acker.join()
        spool.unreserve()
    if prep_error:
        raise prep_error[0]
    if failure:
        raise AckNotRecorded(f"could not record an ack: {failure[0]!r}") from failure[0]


class AckNotRecorded(TransientError):
    """:func:`pump` stopped because ``on_acked`` or the spool's ack failed (nothing more was released)."""


def _split_invalid(
    entries: list[SpoolEntry], max_chunk_bytes: int
) -> list[tuple[list[SpoolEntry], InvalidInput | None]]:
    """``entries`` in order as runs of valid chunks and single invalid ones (with their problem)."""
    out: list[tuple[list[SpoolEntry], InvalidInput | None]] = []
    run: list[SpoolEntry] = []
    for e in entries:
        try:
            validate_chunk(e.chunk, max_chunk_bytes)
        except InvalidInput as exc:
            problem = exc
        except (TypeError, ValueError, AttributeError) as exc:
            problem = InvalidInput("malformed", f"chunk fields of the wrong type: {exc!r}")
        else:
            run.append(e)
            continue
        if run:
            out.append((run, None))
            run = []
        out.append(([e], problem))
    if run:
        out.append((run, None))
    return out


def _dead_letter(
    spool: Spool, entries: list[SpoolEntry], exc: Rejected | InvalidInput, dead_letter_dir: str | Path | None
) -> None:
    target = Path(dead_letter_dir) if dead_letter_dir else spool.dir / "rejected"
    target.mkdir(parents=True, exist_ok=True)
    first = entries[0].chunk
    source = first.source if isinstance(first.source, str) else "bad"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in source)[:100] or "_"
    if isinstance(exc, Rejected):
        name = f"{safe}_{first.seq_end}_{time.time_ns()}.batch"
        meta = {"url": exc.url, "status": exc.status, "body": exc.body}
        reason = "rejected"
        event = "ship_rejected"
    else:
        event = "ship_dead_lettered"
        name = f"{safe}_{first.seq_end}_{time.time_ns()}.invalid.batch"
        meta = {"reason": exc.reason, "detail": exc.detail}
        reason = exc.reason
    try:
        body = encode_batch([e.chunk for e in entries])
    except (TypeError, ValueError):  # fields no JSON header can hold: keep what can be kept
        body = repr([e.chunk for e in entries]).encode()
    write_atomic(target / name, body)
    write_atomic(target / f"{name}.json", json.dumps(meta).encode())
    DEAD_LETTERS.labels(reason).inc(len(entries))
    log.error(event, reason=reason, chunks=len(entries), detail=str(meta)[:500], dead_letter=str(target / name))
