"""`Telemetry`: the traces, metrics and request log of one app, built from its settings.

The app factory makes one and the lifespan closes it (`aclose` flushes the span queue and the
last metrics off the event loop). With no OTLP endpoint there is no tracer at all: requests get
a shared silent `RequestTrace`, and only the Prometheus counters and the log line remain. With
one, spans go to the gateway's own OTLP/HTTP JSON exporter (`otlp_traces`); an injected SDK
``span_exporter`` (tests, or anything the SDK can export to), or the SDK's protobuf exporter
when ``http/protobuf`` is asked for, gets them through the SDK's span processors instead.
Either way the SDK's tracer provider supplies the sampler (``OTEL_TRACES_SAMPLER``), the ids
and the resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from gateway.telemetry.config import TelemetryConfig
from gateway.telemetry.logs import log_request
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otlp_metrics import RegistryPusher
from gateway.telemetry.spans import SpanSink, sdk_emitter
from gateway.telemetry.tracing import RecordingTrace, RequestTrace

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter
    from prometheus_client import CollectorRegistry

    from gateway.ledger.record import LedgerRecord

SCOPE = "gateway"


class _Spans(Protocol):
    """Where ended spans are flushed and stopped: an SDK tracer provider or our exporter."""

    def force_flush(self, timeout_millis: int = ...) -> bool: ...

    def shutdown(self) -> None: ...


class Telemetry:
    """Tracing (off unless an endpoint or exporter is given), metrics and request logs."""

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        *,
        span_exporter: SpanExporter | None = None,
        batch: bool = True,
        metric_exporter: MetricExporter | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``span_exporter`` and ``metric_exporter`` replace the OTLP ones (tests use the SDK's
        in-memory span exporter); ``batch=False`` exports each span as it ends."""
        self.config = config = config or TelemetryConfig()
        resource = Resource.create({"service.name": config.service_name})
        self.metrics = Metrics(registry)
        self._spans: _Spans | None = None
        self._sink: SpanSink | None = None
        if (
            span_exporter is None
            and config.traces_url
            and config.traces_protocol == "http/protobuf"
        ):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=config.traces_url)
        if span_exporter is not None or config.traces_url:
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            if span_exporter is not None:
                processor = (
                    BatchSpanProcessor(span_exporter)
                    if batch
                    else SimpleSpanProcessor(span_exporter)
                )
                provider.add_span_processor(processor)
                self._spans = provider
                self._sink = SpanSink(provider, sdk_emitter(processor, provider.resource, SCOPE))
            else:
                from gateway.telemetry.otlp_traces import SpanExporter as OtlpJsonExporter

                assert config.traces_url is not None
                exporter = OtlpJsonExporter(
                    config.traces_url, provider.resource, SCOPE, config.span_export
                )
                self._spans = exporter
                self._sink = SpanSink(provider, exporter.emit)
                self.metrics.count_lost_spans(lambda: exporter.lost)
        if metric_exporter is None and config.metrics_url:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

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
