"""Spans exported over OTLP/HTTP JSON from a bounded queue, by a thread of their own.

The request path only appends each ended span (a `SpanData` tuple) to a deque: when the queue
holds ``max_queue`` spans the span is dropped and counted instead, so a slow or absent
collector never blocks or grows a request. The thread wakes as soon as ``batch_size`` spans
wait, and exports the full batches; or, when ``delay_s`` has passed, everything queued. It
encodes each batch as OTLP JSON (`otlp_json`), compresses it when asked, and POSTs it to
``{endpoint}/v1/traces`` with a timeout. 429, 502, 503 and 504 and transport errors are
retried with exponential backoff and jitter (tenacity; a ``Retry-After`` in seconds is
honoured up to ``max_backoff_s``) a bounded number of times; then the batch is dropped and
logged. `force_flush` and `shutdown` export everything queued before they return, so no span
is lost at shutdown.

Why not the SDK's `BatchSpanProcessor` and OTLP exporter: they need the SDK's `ReadableSpan`
(built on the request path, several µs per span) and encode protobuf at about 50 µs a span
on the thread that shares the GIL with the event loop; see bench/telemetry/RESULTS.md.
"""

from __future__ import annotations

import gzip
import http.client
import itertools
import logging
import ssl
import threading
import time
import zlib
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from gateway.telemetry.config import SpanExportSettings
from gateway.telemetry.otlp_json import SpanEncoder
from gateway.telemetry.spans import SpanData

log = logging.getLogger(__name__)
RETRYABLE = frozenset({429, 502, 503, 504})
_SLICE = 64  # spans encoded between two releases of the GIL


class SpanExporter:
    """The span queue and its export thread (started here; stopped by `shutdown`)."""

    def __init__(
        self,
        url: str,
        resource: Resource,
        scope: str,
        settings: SpanExportSettings | None = None,
    ) -> None:
        self.url = url
        self.settings = s = settings or SpanExportSettings()
        self._encoder = SpanEncoder(resource, scope)
        self._queue: deque[SpanData] = deque()
        self._drops = itertools.count()  # next() is atomic: safe from any thread
        self._dropped = 0
        self._reported = 0
        self._unsent = 0  # written by whoever holds the export lock
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._closed = False
        self._headers = {**s.headers, "content-type": "application/json"}
        if s.compression in ("gzip", "deflate"):
            self._headers["content-encoding"] = s.compression
        self._connection = _Connection(url, s)
        self._retrying = Retrying(
            stop=stop_after_attempt(s.max_attempts) | stop_after_delay(s.max_backoff_s * 4),
            wait=_Backoff(s),
            retry=retry_if_result(lambda r: r.status in RETRYABLE)
            | retry_if_exception_type((OSError, http.client.HTTPException)),
            # Out of attempts: the last reply (logged below), or the last error raised again.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        self._thread = threading.Thread(target=self._run, name="gateway-otlp-spans", daemon=True)
        self._thread.start()

    def emit(self, span: SpanData) -> None:
        """Queue an ended span (the request path: never blocks, never raises)."""
        queue = self._queue
        if len(queue) >= self.settings.max_queue or self._closed:
            self._dropped = next(self._drops) + 1
            return
        queue.append(span)
        if len(queue) >= self.settings.batch_size and not self._wake.is_set():
            self._wake.set()

    @property
    def dropped(self) -> int:
        """Spans dropped because the queue was full (or ended after shutdown)."""
        return self._dropped

    @property
    def lost(self) -> int:
        """Spans that never reached the collector: dropped from a full queue, or in a batch
        that still failed after the retries (``gateway_trace_spans_lost_total``)."""
        return self._dropped + self._unsent

    @property
    def queued(self) -> int:
        return len(self._queue)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued now, on the calling thread; False if time ran out."""
        return self._export(len(self._queue), time.monotonic() + timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Stop taking spans, export what is queued, stop the thread and close the client."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_millis / 1000)
        self._connection.close()

    def _run(self) -> None:
        size = self.settings.batch_size
        while not self._closed:
            full = self._wake.wait(self.settings.delay_s)
            self._wake.clear()
            # Woken by a full batch: full batches only, the rest waits for more spans or for
            # the delay; the delay passed: everything. Never "until the queue is empty": the
            # request path keeps appending, and chasing it sends many small batches.
            queued = len(self._queue)
            self._export(queued - queued % size if full else queued, None)
        self._export(len(self._queue), None)

    def _export(self, count: int, deadline: float | None) -> bool:
        """Export the ``count`` oldest spans in batches; False if ``deadline`` passed first."""
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._export_lock.acquire(timeout=wait):
            return False
        try:
            queue, size = self._queue, self.settings.batch_size
            count = min(count, len(queue))  # force_flush may have taken them meanwhile
            while count > 0:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch = [queue.popleft() for _ in range(min(size, count))]
                count -= len(batch)
                self._send(batch)
            if self._dropped != self._reported:
                log.warning("span queue full: %d spans dropped so far", self._dropped)
                self._reported = self._dropped
            return True
        finally:
            self._export_lock.release()

    def _send(self, batch: list[SpanData]) -> None:
        # NOTE: encoding holds the GIL, which the event loop needs back as soon as its I/O is
        # ready; a batch is encoded in slices with a sleep(0) between them (it releases the
        # GIL, so a waiting thread takes it at once) rather than waiting to be preempted after
        # the 5 ms switch interval: a request waits at most one slice (~0.1-0.2 ms).
        parts = []
        for start in range(0, len(batch), _SLICE):
            parts.append(self._encoder.spans(batch[start : start + _SLICE]))
            time.sleep(0)
        body = self._encoder.body(parts)
        if self.settings.compression == "gzip":
            body = gzip.compress(body, compresslevel=6, mtime=0)
        elif self.settings.compression == "deflate":
            body = zlib.compress(body, 6)
        try:
            reply = self._retrying(self._connection.post, body, self._headers)
        except Exception as exc:  # the export thread must live on, whatever the failure
            self._unsent += len(batch)
            log.warning("%d spans not exported to %s: %r", len(batch), self.url, exc)
            return
        if not 200 <= reply.status < 300:
            self._unsent += len(batch)
            log.warning(
                "%d spans not exported to %s: HTTP %d %r",
                len(batch),
                self.url,
                reply.status,
                reply.body[:200],
            )


class _Backoff(wait_base):
    """Exponential backoff with jitter, or the reply's ``Retry-After`` seconds when longer."""

    def __init__(self, settings: SpanExportSettings) -> None:
        self._max = settings.max_backoff_s
        self._backoff = wait_exponential(multiplier=settings.backoff_s, max=self._max)
        self._jitter = wait_random(0, settings.backoff_s)

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = min(self._backoff(retry_state) + self._jitter(retry_state), self._max)
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            after = outcome.result().retry_after
            if after.isdigit():
                return min(max(backoff, float(after)), self._max)
        return backoff


class _Reply(NamedTuple):
    status: int
    retry_after: str
    body: bytes


class _Connection:
    """One kept-alive HTTP(S) connection to the collector, opened again after any failure.

    Why http.client rather than httpx: this runs on a thread that shares the GIL with the
    event loop, and one POST through http.client costs a fraction of httpx's Python work; the
    one connection needs no pool, and httpx would log every export at INFO."""

    def __init__(self, url: str, settings: SpanExportSettings) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = settings.timeout_s
        self._tls = _tls(settings) if self._https else None
        self._open: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> _Reply:
        connection = self._open or self._connect()
        try:
            connection.request("POST", self._path, body, headers)
            response = connection.getresponse()
            after = response.getheader("retry-after") or ""
            reply = _Reply(response.status, after, response.read())
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return reply

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            self._open = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._tls
            )
        else:
            self._open = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._open

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


def _tls(settings: SpanExportSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.certificate)
    if settings.client_certificate is not None:
        context.load_cert_chain(settings.client_certificate, settings.client_key)
    return context
