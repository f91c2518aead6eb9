"""Spans exported over OTLP/HTTP JSON from a bounded queue, by a thread of their own.

The request path only appends each ended span (a `SpanData` tuple) to a deque: when the queue
holds ``max_queue`` spans the span is dropped and counted instead, so a slow or absent
collector never blocks or grows a request. The thread wakes as soon as ``batch_size`` spans
wait, and exports the full batches; or, when ``delay_s`` has passed, everything queued. It
encodes each batch as OTLP JSON (`otlp_json`) and POSTs it to ``{endpoint}/v1/traces``
(`otlp_http`: compression, bounded retries); a batch that still fails is dropped, logged and
counted as lost. `force_flush` and `shutdown` export everything queued before they return, so
no span is lost at shutdown.

Why not the SDK's `BatchSpanProcessor` and OTLP exporter: they need the SDK's `ReadableSpan`
(built on the request path) and encode protobuf on a thread that shares the GIL with the event
loop: about twice the CPU per traced request, side by side in bench/telemetry/RESULTS.md.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque

from opentelemetry.sdk.resources import Resource

from gateway.telemetry.config import SpanExportSettings
from gateway.telemetry.otlp_http import OtlpPoster
from gateway.telemetry.otlp_json import SpanEncoder
from gateway.telemetry.spans import SpanData

log = logging.getLogger(__name__)
_SLICE = 64  # spans encoded between two releases of the GIL


class OtlpJsonExporter:
    """The span queue and its export thread (started here; stopped by `shutdown`): the
    production `spans.SpanExporter`."""

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
        self._poster = OtlpPoster(url, s, "application/json")
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
        self._poster.close()

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
        failure = self._poster.post(self._encoder.body(parts))
        if failure is not None:
            self._unsent += len(batch)
            log.warning("%d spans not exported to %s: %s", len(batch), self.url, failure)
