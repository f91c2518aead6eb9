"""The real exporters: OTLP/HTTP (JSON spans, protobuf metrics) to a receiver on 127.0.0.1,
Prometheus text on ``GET /metrics``, and the JSON request log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import httpx
import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.telemetry import REQUEST_LOGGER, JsonFormatter, Telemetry, TelemetryConfig
from gateway.telemetry.spans import InMemorySpanExporter
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.telemetry.conftest import PROMPT, SCRAPE
from tests.integration.telemetry.receiver import OtlpReceiver, attributes, value
from tests.servers import ServerThread

BODY = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def chat(server: ServerThread, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=headers)


def test_spans_reach_an_otlp_http_receiver(
    serve: Callable[[Telemetry], ServerThread], receiver: OtlpReceiver
) -> None:
    telemetry = Telemetry(TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False))
    server = serve(telemetry)
    assert chat(server).status_code == 200
    telemetry.force_flush()
    spans = receiver.wait_for_spans(6)
    assert receiver.content_types[0] == "application/json"
    assert {s.name for s in spans} == {
        "POST /v1/chat/completions",
        "gateway.exact_cache",
        "gateway.route",
        "gateway.call",
        "chat upstream-main",
        "gateway.ledger",
    }
    root = next(s for s in spans if s.name == "POST /v1/chat/completions")
    assert root.parent_span_id == b""
    assert attributes(root)["gen_ai.usage.output_tokens"] == 5
    assert attributes(root)["gateway.cost_usd"] == pytest.approx(0.0000675)
    attempt = next(s for s in spans if s.name == "chat upstream-main")
    call = next(s for s in spans if s.name == "gateway.call")
    assert attempt.parent_span_id == call.span_id
    assert attributes(attempt)["gen_ai.request.model"] == "upstream-main"
    resource = receiver.traces[0].resource_spans[0].resource
    assert {kv.key: value(kv.value) for kv in resource.attributes}["service.name"] == (
        "llm-gateway"
    )
    # Nothing of the prompt travels in a span.
    assert PROMPT.encode() not in b"".join(t.SerializeToString() for t in receiver.traces)


def test_metrics_reach_an_otlp_http_receiver(
    serve: Callable[[Telemetry], ServerThread], receiver: OtlpReceiver, primary: FakeUpstream
) -> None:
    telemetry = Telemetry(
        TelemetryConfig(otlp_endpoint=receiver.endpoint, traces=False, metric_interval_s=3600)
    )
    telemetry.metrics.set_cache_size("exact", lambda: 3)
    server = serve(telemetry)
    primary.script(Fault(status=503))
    assert chat(server).status_code == 200
    telemetry.force_flush()
    assert receiver.traces == []
    metrics: dict[str, Metric] = {
        m.name: m
        for request in receiver.metrics
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    requests = metrics["gateway.requests"].sum
    assert requests.is_monotonic
    assert [(attributes(p), p.as_double) for p in requests.data_points] == [
        (
            {
                "gateway.model": "backup",
                "gateway.route": "default",
                "gateway.cache": "miss",
                "http.response.status_code": 200,
            },
            1.0,
        )
    ]
    duration = metrics["gen_ai.server.request.duration"]
    assert duration.unit == "s"
    (point,) = duration.histogram.data_points
    assert point.count == 1 and sum(point.bucket_counts) == 1
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
    assert not point.HasField("min")
    attempts = {
        attributes(p)["gateway.outcome"]: p.as_double
        for p in metrics["gateway.upstream.attempts"].sum.data_points
    }
    assert attempts == {"503": 1.0, "ok": 1.0}
    (fallback,) = metrics["gateway.fallbacks"].sum.data_points
    assert attributes(fallback) == {"gateway.model": "main", "gateway.fallback.model": "backup"}
    (entries,) = metrics["gateway.cache.entries"].gauge.data_points
    assert entries.as_double == 3
    tokens = {
        attributes(p)["gen_ai.token.type"]: p.as_double
        for p in metrics["gateway.tokens"].sum.data_points
    }
    assert tokens == {"input": 7.0, "cached_input": 2.0, "output": 5.0}


def samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_endpoint_serves_prometheus_text(
    serve: Callable[[Telemetry], ServerThread], primary: FakeUpstream
) -> None:
    telemetry = Telemetry()
    telemetry.metrics.set_cache_size("exact", lambda: 42)
    server = serve(telemetry)
    primary.script(Fault(status=503))
    for _ in range(2):
        assert chat(server).status_code == 200
    response = httpx.get(f"{server.url}/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    requests = {s.labels["model"]: (s.labels, s.value) for s in found["gateway_requests_total"]}
    assert requests == {
        "backup": ({"model": "backup", "route": "default", "cache": "miss", "status": "200"}, 1),
        "main": ({"model": "main", "route": "default", "cache": "miss", "status": "200"}, 1),
    }
    counts = {s.labels["model"]: s.value for s in found["gateway_request_duration_seconds_count"]}
    assert counts == {"backup": 1, "main": 1}
    assert {
        (s.labels["model"], s.labels["type"], s.value) for s in found["gateway_tokens_total"]
    } == {
        (m, t, n)
        for m in ("main", "backup")
        for t, n in (("input", 7), ("cached_input", 2), ("output", 5))
    }
    cost = {
        (s.labels["model"], s.labels["tenant"]): s.value for s in found["gateway_cost_usd_total"]
    }
    assert cost == {
        ("main", "team-a"): pytest.approx(0.0000675),
        ("backup", "team-a"): pytest.approx(0.0000675),
    }
    attempts = {
        (s.labels["model"], s.labels["outcome"]): s.value
        for s in found["gateway_upstream_attempts_total"]
    }
    assert attempts == {("main", "503"): 1, ("main", "ok"): 1, ("backup", "ok"): 1}
    (errors,) = found["gateway_upstream_errors_total"]
    assert errors.labels == {"model": "main", "error": "503"} and errors.value == 1
    (fallbacks,) = found["gateway_fallbacks_total"]
    assert fallbacks.labels == {"from_model": "main", "to_model": "backup"}
    assert found["gateway_cache_entries"][0].value == 42
    assert found["gateway_request_difficulty_count"][0].value == 2
    assert "process_cpu_seconds_total" in found
    openmetrics = httpx.get(
        f"{server.url}/metrics", headers={"accept": "application/openmetrics-text", **SCRAPE}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def request_log() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger(REQUEST_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_one_json_log_line_per_request_without_the_prompt(
    serve: Callable[[Telemetry], ServerThread], request_log: _Lines
) -> None:
    server = serve(Telemetry())
    response = chat(server, **{"x-gateway-tags": "team=search"})
    assert response.status_code == 200
    (line,) = request_log.lines
    assert PROMPT not in line and "launch code" not in line
    entry = json.loads(line)
    assert entry.pop("time").endswith("Z")
    assert entry.pop("request_id").startswith("req_")
    assert entry.pop("latency_ms") > 0
    assert entry == {
        "level": "info",
        "logger": "gateway.request",
        "message": "request",
        "event": "request",
        "tenant": "team-a",
        "route": "default",
        "model": "main",
        "cache": "miss",
        "status": 200,
        "stream": False,
        "input_tokens": 7,
        "cached_input_tokens": 2,
        "output_tokens": 5,
        "estimated": False,
        "cost_usd": 0.0000675,
        "baseline_cost_usd": 0.0000675,
        "ttft_ms": None,
        "difficulty": 0.25,
        "category": "chat",
        "tags": {"team": "search"},
    }


def test_the_prompt_is_logged_only_when_asked_and_lines_carry_the_trace_id(
    serve: Callable[[Telemetry], ServerThread], request_log: _Lines
) -> None:
    exporter = InMemorySpanExporter()
    server = serve(Telemetry(span_exporter=exporter))
    assert chat(server, **{"x-log-prompts": "yes"}).status_code == 200
    entry = json.loads(request_log.lines[-1])
    assert entry["prompt"] == PROMPT and entry["completion"] == "ok"
    root = next(s for s in exporter.get_finished_spans() if s.parent is None)
    assert entry["trace_id"] == f"{root.context.trace_id:032x}"
