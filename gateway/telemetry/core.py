"""`Telemetry`: the traces, metrics and request log of one app, built from its settings.

The app factory makes one and the lifespan closes it (`aclose` flushes the span queue and the
last metrics off the event loop). With no OTLP endpoint there is no tracer at all: requests get
a shared silent `RequestTrace`, and only the Prometheus counters and the log line remain. With
one, lean spans (`spans`) go to the gateway's OTLP/HTTP JSON exporter (`otlp_traces`); tests
inject a `spans.InMemorySpanExporter` instead. The SDK's tracer provider supplies the sampler
(``OTEL_TRACES_SAMPLER``), the ids and the resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry.config import TelemetryConfig
from gateway.telemetry.logs import log_request
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otlp_metrics import RegistryPusher
from gateway.telemetry.otlp_traces import OtlpJsonExporter
from gateway.telemetry.spans import SpanExporter, SpanSink
from gateway.telemetry.tracing import RecordingTrace, RequestTrace

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gateway.ledger.record import LedgerRecord

SCOPE = "gateway"


class Telemetry:
    """Tracing (off unless an endpoint or exporter is given), metrics and request logs."""

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        metric_exporter: MetricExporter | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``span_exporter`` and ``metric_exporter`` replace the OTLP ones (tests keep spans in
        a `spans.InMemorySpanExporter`), and turn tracing or metric export on without an
        endpoint."""
        self.config = config = config or TelemetryConfig()
        resource = Resource.create({"service.name": config.service_name})
        self.metrics = Metrics(registry)
        if span_exporter is None and config.traces_url:
            span_exporter = OtlpJsonExporter(config.traces_url, resource, SCOPE, config.span_export)
        self._spans = span_exporter
        self._sink: SpanSink | None = None
        if span_exporter is not None:
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._sink = SpanSink(provider, span_exporter)
            self.metrics.count_lost_spans(lambda: span_exporter.lost)
        if metric_exporter is None and config.metrics_url:
            metric_exporter = OTLPMetricExporter(endpoint=config.metrics_url)
        self._pusher = (
            None
            if metric_exporter is None
            else RegistryPusher(
                self.metrics.registry, metric_exporter, resource, config.metric_interval_s, SCOPE
            )
        )
        self._silent = RequestTrace(self.metrics)

    @property
    def tracing(self) -> bool:
        return self._sink is not None

    def start_request(self, headers: Mapping[str, str] | None, request_id: str) -> RequestTrace:
        """The trace of a request that has just arrived, child of its ``traceparent`` if any.

        ``headers`` is the request's (Litestar's ``request.headers``: lower-case names)."""
        if self._sink is None:
            if headers is None or "traceparent" not in headers:
                return self._silent
            return RequestTrace(self.metrics, _trace_headers(headers))
        return RecordingTrace(self._sink, self.metrics, headers, request_id)

    def request_done(
        self,
        trace: RequestTrace,
        record: LedgerRecord,
        *,
        prompt: str | None = None,
        completion: str | None = None,
        include_text: bool = False,
    ) -> None:
        """Everything at the end of a request: end its span, count it, log its line."""
        trace_id = trace.trace_id
        trace.end(record)
        self.metrics.observe_request(record)
        log_request(
            record,
            trace_id=trace_id,
            prompt=prompt,
            completion=completion,
            include_text=include_text,
        )

    def observe_request(self, record: LedgerRecord) -> None:
        self.metrics.observe_request(record)

    def observe_attempt(self, model: str, outcome: str) -> None:
        self.metrics.observe_attempt(model, outcome)

    def force_flush(self, timeout_ms: int = 10_000) -> None:
        """Export what is queued now (blocking; tests and shutdown)."""
        if self._spans is not None:
            self._spans.force_flush(timeout_ms)
        if self._pusher is not None:
            self._pusher.push(timeout_ms)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking)."""
        if self._spans is not None:
            self._spans.shutdown()
        if self._pusher is not None:
            self._pusher.shutdown()

    async def aclose(self) -> None:
        """`shutdown` on a worker thread: the last export is a blocking HTTP call."""
        await asyncio.to_thread(self.shutdown)


def _trace_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The incoming W3C trace context, to pass on unchanged when we do not trace."""
    carried = {"traceparent": headers["traceparent"]}
    state = headers.get("tracestate")
    if state:
        carried["tracestate"] = state
    return carried
