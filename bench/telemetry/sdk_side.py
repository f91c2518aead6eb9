"""The OpenTelemetry SDK's way of doing what the gateway's telemetry does, for the bench to
measure beside ours: the same spans with the same attributes, the same metrics.

- `SdkTraces`: the SDK's tracer (``start_as_current_span``), its `BatchSpanProcessor` and its
  OTLP/HTTP protobuf exporter; the span tree and attributes of `gateway.telemetry.tracing`
  (taken from `gateway.telemetry.genai`), ``traceparent`` injected for the upstream by the
  SDK's propagator. The Prometheus metrics and the log line are the gateway's, as with ours.
- `SdkInstruments`: the SDK's meter with a `PeriodicExportingMetricReader` and its OTLP/HTTP
  metric exporter; each Prometheus observation of `gateway.telemetry.metrics.Metrics` also
  recorded on an OpenTelemetry instrument (what the registry bridge, `otlp_metrics`, avoids).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Counter, Histogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.ledger.record import LedgerRecord
from gateway.pipeline.normalize import ChatRequest
from gateway.policy.schema import ModelConfig
from gateway.telemetry import STAGE_SPANS, log_request
from gateway.telemetry.genai import (
    ROOT_SPAN,
    attempt_attributes,
    attempt_name,
    record_attributes,
    request_attributes,
    root_attributes,
)
from gateway.telemetry.metrics import (
    DIFFICULTY_BUCKETS,
    LATENCY_BUCKETS,
    NONE,
    TTFT_BUCKETS,
    Metrics,
)
from gateway.telemetry.otlp_metrics import NAMES

_PROPAGATOR = TraceContextTextMapPropagator()


class SdkTraces:
    """Traces through the SDK alone, to ``{endpoint}/v1/traces``."""

    def __init__(self, endpoint: str, max_queue: int) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "llm-gateway"}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"), max_queue_size=max_queue
            )
        )
        self.tracer = self.provider.get_tracer("gateway")
        self.metrics = Metrics()

    def request(
        self,
        chat: ChatRequest,
        stages: tuple[str, ...],
        config: ModelConfig,
        finish: Callable[[ChatRequest], LedgerRecord],
    ) -> None:
        """One request's telemetry: `bench.telemetry.run.with_telemetry`, the SDK's way."""
        tracer = self.tracer
        with tracer.start_as_current_span(
            ROOT_SPAN, kind=SpanKind.SERVER, attributes=root_attributes(chat.request_id)
        ) as root:
            root.set_attributes(request_attributes(chat))
            for stage in stages:
                with tracer.start_as_current_span(STAGE_SPANS[stage]):
                    pass
            with (
                tracer.start_as_current_span(STAGE_SPANS["call"]),
                tracer.start_as_current_span(
                    attempt_name(config),
                    kind=SpanKind.CLIENT,
                    attributes=attempt_attributes("local-small", config, 1),
                ),
            ):
                carrier: dict[str, str] = {}
                _PROPAGATOR.inject(carrier)
            self.metrics.observe_attempt("local-small", "ok")
            with tracer.start_as_current_span(STAGE_SPANS["ledger"]):
                record = finish(chat)
            root.set_attributes(record_attributes(record))
            root.set_attribute("http.response.status_code", record.status)
            trace_id = format_trace_id(root.get_span_context().trace_id)
        self.metrics.observe_request(record)
        log_request(record, trace_id=trace_id)

    def force_flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


class SdkInstruments:
    """OpenTelemetry instruments beside the Prometheus ones, exported every ``interval_s``."""

    def __init__(self, endpoint: str, interval_s: float) -> None:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
            export_interval_millis=interval_s * 1000,
        )
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "llm-gateway"}),
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter("gateway")

        def counter(family: str) -> Counter:
            return meter.create_counter(*NAMES[family])  # the bridge's names and units

        def histogram(family: str, buckets: Sequence[float]) -> Histogram:
            name, unit = NAMES[family]
            return meter.create_histogram(name, unit, explicit_bucket_boundaries_advisory=buckets)

        self.requests = counter("gateway_requests")
        self.latency = histogram("gateway_request_duration_seconds", LATENCY_BUCKETS)
        self.ttft = histogram("gateway_time_to_first_token_seconds", TTFT_BUCKETS)
        self.tokens = counter("gateway_tokens")
        self.cost = counter("gateway_cost_usd")
        self.baseline = counter("gateway_baseline_cost_usd")
        self.difficulty = histogram("gateway_request_difficulty", DIFFICULTY_BUCKETS)
        self.attempts = counter("gateway_upstream_attempts")

    def observe_request(self, record: LedgerRecord) -> None:
        """What `Metrics.observe_request` counts, on the OpenTelemetry instruments."""
        model = {"gateway.model": record.model or NONE}
        cache = {**model, "gateway.cache": record.cache}
        self.requests.add(
            1,
            {
                **cache,
                "gateway.route": record.route or NONE,
                "http.response.status_code": record.status,
            },
        )
        self.latency.record(record.latency_ms / 1000, cache)
        if record.ttft_ms is not None:
            self.ttft.record(record.ttft_ms / 1000, cache)
        for kind, count in (
            ("input", record.input_tokens),
            ("cached_input", record.cached_input_tokens),
            ("output", record.output_tokens),
        ):
            if count:
                self.tokens.add(count, {**model, "gen_ai.token.type": kind})
        tenant = {**model, "gateway.tenant": record.tenant}
        if record.cost_usd is not None:
            self.cost.add(float(record.cost_usd), tenant)
        if record.baseline_cost_usd is not None:
            self.baseline.add(float(record.baseline_cost_usd), tenant)
        if record.difficulty is not None:
            self.difficulty.record(record.difficulty)

    def observe_attempt(self, model: str, outcome: str) -> None:
        self.attempts.add(1, {"gateway.model": model, "gateway.outcome": outcome})

    def force_flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()
