"""The telemetry API without a server: settings, the silent trace, metrics, logs, conversion."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest
from opentelemetry.trace import INVALID_SPAN, StatusCode
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.ledger.record import LedgerRecord
from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed
from gateway.telemetry import (
    REQUEST_LOGGER,
    Telemetry,
    TelemetryConfig,
    attempt,
    configure_logging,
    current,
    fallback,
    log_request,
    upstream_headers,
)
from gateway.telemetry.config import SpanExportSettings
from gateway.telemetry.otlp_metrics import convert
from gateway.telemetry.spans import InMemorySpanExporter

CONFIG = ModelConfig(
    provider="openai_compatible", base_url="https://api.openai.com/v1", model="gpt-4o"
)
RECORD = LedgerRecord(
    time=0.0,
    request_id="req_1",
    tenant="team-a",
    route="default",
    model="large",
    input_tokens=10,
    output_tokens=20,
    cost_usd=Decimal("0.000225"),
    latency_ms=120.0,
    ttft_ms=30.0,
    stream=True,
)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_config_from_the_standard_environment() -> None:
    assert TelemetryConfig.from_env({}).traces_url is None
    config = TelemetryConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "gw-1",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }
    )
    assert config.traces_url == "http://collector:4318/v1/traces"
    assert config.metrics_url == "http://collector:4318/v1/metrics"
    assert (config.service_name, config.metric_interval_s) == ("gw-1", 5.0)
    off = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert off.traces_url is None and off.metrics_url == "http://c:4318/v1/metrics"
    disabled = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert disabled.traces_url is None and disabled.metrics_url is None
    own = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"})
    assert own.traces_url == "http://t/x" and own.metrics_url is None


def test_span_export_settings_from_the_standard_environment() -> None:
    assert TelemetryConfig.from_env({}).span_export == SpanExportSettings()
    export = TelemetryConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1, B = x%2Cy ,broken",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "GZIP",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/ca.pem",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10",
            "OTEL_BSP_SCHEDULE_DELAY": "250",
        }
    ).span_export
    assert export.headers == {"a": "1", "b": "x,y"}
    assert (export.compression, export.timeout_s, export.certificate) == ("gzip", 3.0, "/ca.pem")
    assert (export.max_queue, export.batch_size, export.delay_s) == (100, 10, 0.25)
    odd = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "brotli", "OTEL_BSP_MAX_QUEUE_SIZE": "lots"}
    ).span_export
    assert (odd.compression, odd.max_queue) == (None, 2048)


def test_tracing_off_is_one_shared_silent_trace_with_shared_no_op_stages() -> None:
    telemetry = Telemetry()
    assert not telemetry.tracing
    trace = telemetry.start_request({"content-type": "application/json"}, "req_1")
    assert trace is telemetry.start_request({}, "req_2")
    assert trace.stage("route") is trace.stage("call") is trace.stage("ledger")
    with trace.stage("route") as span:
        assert span is INVALID_SPAN
        span.set_attribute("gateway.route", "x")  # a no-op, not an error
    assert trace.upstream_headers() == {}
    assert trace.trace_id is None and not trace.recording
    telemetry.request_done(trace, RECORD)  # metrics and log still work


def test_outside_a_request_the_call_stage_helpers_do_nothing() -> None:
    with attempt("large", CONFIG, 1) as span:
        assert span is INVALID_SPAN
    fallback("large", "small")
    assert upstream_headers() == {}
    assert not current().recording


def metric_values(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = telemetry.metrics.render()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_attempts_are_counted_even_with_tracing_off() -> None:
    telemetry = Telemetry()
    trace = telemetry.start_request({}, "req_1")
    with trace.activate():
        with pytest.raises(AttemptFailed), attempt("large", CONFIG, 1):
            raise AttemptFailed("timeout", "timed out")
        with pytest.raises(AttemptFailed), attempt("large", CONFIG, 2):
            raise AttemptFailed("status", "busy", status=429)
        fallback("large", "small")
        with attempt("small", CONFIG, 1):
            pass
    values = metric_values(telemetry)
    attempts = "gateway_upstream_attempts_total"
    assert values[(attempts, (("model", "large"), ("outcome", "timeout")))] == 1
    assert values[(attempts, (("model", "large"), ("outcome", "429")))] == 1
    assert values[(attempts, (("model", "small"), ("outcome", "ok")))] == 1
    assert values[("gateway_upstream_errors_total", (("error", "429"), ("model", "large")))] == 1
    key = ("gateway_fallbacks_total", (("from_model", "large"), ("to_model", "small")))
    assert values[key] == 1


def test_observe_request_counts_what_the_record_says() -> None:
    telemetry = Telemetry()
    telemetry.observe_request(RECORD)
    telemetry.observe_request(LedgerRecord(time=0, request_id="r", tenant="t", status=401))
    values = metric_values(telemetry)
    labels = (("cache", "miss"), ("model", "large"), ("route", "default"), ("status", "200"))
    assert values[("gateway_requests_total", labels)] == 1
    labels = (("cache", "miss"), ("model", "none"), ("route", "none"), ("status", "401"))
    assert values[("gateway_requests_total", labels)] == 1
    ttft = ("gateway_time_to_first_token_seconds_sum", (("cache", "miss"), ("model", "large")))
    assert values[ttft] == pytest.approx(0.03)
    cost = ("gateway_cost_usd_total", (("model", "large"), ("tenant", "team-a")))
    assert values[cost] == pytest.approx(0.000225)


def test_each_app_has_its_own_registry() -> None:
    first, second = Telemetry(), Telemetry()
    first.observe_request(RECORD)
    assert ("gateway_requests_total", ()) not in metric_values(second)
    assert not any(name == "gateway_requests_total" for name, _ in metric_values(second))


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, its handlers and level restored after the test reconfigures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_log_line_never_has_text_unless_both_given_and_asked(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    log_request(RECORD, prompt="secret prompt", completion="secret answer")
    log_request(RECORD, include_text=True)
    log_request(RECORD, prompt="asked prompt", completion="asked answer", include_text=True)
    logging.getLogger("other").warning("plain %s", "line", extra={"port": 1})
    first, second, third, other = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "secret" not in stream.getvalue().split("\n")[0]
    assert "prompt" not in first and "completion" not in first
    assert "prompt" not in second
    assert (third["prompt"], third["completion"]) == ("asked prompt", "asked answer")
    assert first["logger"] == REQUEST_LOGGER and first["cost_usd"] == 0.000225
    assert first["ttft_ms"] == 30.0 and first["stream"] is True
    assert (other["message"], other["level"], other["port"]) == ("plain line", "warning", 1)


def test_text_log_format_shows_the_fields(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream)
    log_request(RECORD)
    line = stream.getvalue()
    assert "gateway.request: request" in line and "model=large" in line and "status=200" in line


def test_a_request_that_raises_ends_its_span_with_the_errors_status() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(span_exporter=exporter)
    trace = telemetry.start_request({}, "req_1")

    class Boom(Exception):
        status_code = 503

    with pytest.raises(Boom), trace.activate(), trace.stage("call"):
        raise Boom
    stage, root = exporter.get_finished_spans()
    assert stage.name == "gateway.call" and stage.status.status_code is StatusCode.ERROR
    assert stage.attributes is not None and stage.attributes["error.type"] == "Boom"
    assert root.attributes is not None and root.attributes["http.response.status_code"] == 503
    assert root.status.status_code is StatusCode.ERROR
    trace.end(RECORD)  # idempotent
    assert len(exporter.get_finished_spans()) == 2


def test_well_known_hosts_name_their_provider() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(span_exporter=exporter)
    trace = telemetry.start_request({"traceparent": TRACEPARENT}, "req_1")
    with trace.activate(), trace.attempt("large", CONFIG, 1):
        sent = upstream_headers()
    trace.end(RECORD)
    attempt_span, root = exporter.get_finished_spans()
    assert attempt_span.attributes is not None
    assert attempt_span.attributes["gen_ai.provider.name"] == "openai"
    assert attempt_span.attributes["server.port"] == 443
    assert attempt_span.name == "chat gpt-4o"
    assert sent["traceparent"].split("-")[2] == f"{attempt_span.context.span_id:016x}"
    assert root.attributes is not None
    assert root.attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.03)


def test_sampler_from_the_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(span_exporter=exporter)
    trace = telemetry.start_request({}, "req_1")
    assert not trace.recording
    assert trace.stage("route") is trace.stage("call")
    with trace.activate():
        assert upstream_headers()["traceparent"].endswith("-00")
    trace.end(RECORD)
    assert exporter.get_finished_spans() == ()


def test_prometheus_histograms_convert_to_otlp_buckets() -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "gateway_request_duration_seconds", "d", ["model"], buckets=(0.1, 1), registry=registry
    )
    for seconds in (0.05, 0.5, 0.7, 3):
        histogram.labels("m").observe(seconds)
    (metric,) = convert(registry, 1, 2)
    assert metric.name == "gen_ai.server.request.duration" and metric.unit == "s"
    (point,) = metric.data.data_points  # type: ignore[union-attr]
    assert point.attributes == {"gateway.model": "m"}
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [1, 2, 1]
    assert (point.count, point.sum) == (4, pytest.approx(4.25))
