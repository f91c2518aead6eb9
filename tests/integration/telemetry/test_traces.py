"""Spans of a request, kept in memory as the exporter receives them: tree, names, kinds, attributes,
and the W3C trace context honoured on the way in and passed on the way out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry import Telemetry
from gateway.telemetry.spans import InMemorySpanExporter, SpanData
from tests.fake_upstream import FakeUpstream, Fault
from tests.servers import ServerThread

BODY = {
    "model": "auto",
    "messages": [{"role": "user", "content": "hello there"}],
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 64,
    "seed": 7,
}
REMOTE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(
    serve: Callable[[Telemetry], ServerThread], exporter: InMemorySpanExporter
) -> ServerThread:
    return serve(Telemetry(span_exporter=exporter))


def post(server: ServerThread, **headers: str) -> httpx.Response:
    response = httpx.post(f"{server.url}/v1/chat/completions", json=BODY, headers=headers)
    assert response.status_code == 200, response.text
    return response


def by_name(spans: Sequence[SpanData]) -> dict[str, SpanData]:
    return {span.name: span for span in spans}


def test_one_span_per_stage_under_the_request_span(
    traced: ServerThread, exporter: InMemorySpanExporter
) -> None:
    post(traced)
    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert sorted(names) == sorted(
        [
            "POST /v1/chat/completions",
            "gateway.exact_cache",
            "gateway.route",
            "gateway.call",
            "chat upstream-main",
            "gateway.ledger",
        ]
    )
    spans_by_name = by_name(spans)
    root = spans_by_name["POST /v1/chat/completions"]
    call = spans_by_name["gateway.call"]
    assert root.parent is None and root.kind is SpanKind.SERVER
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}
    for stage in ("gateway.exact_cache", "gateway.route", "gateway.call", "gateway.ledger"):
        assert spans_by_name[stage].parent is not None
        assert spans_by_name[stage].parent.span_id == root.context.span_id
        assert spans_by_name[stage].kind is SpanKind.INTERNAL
    attempt = spans_by_name["chat upstream-main"]
    assert attempt.parent is not None and attempt.parent.span_id == call.context.span_id
    assert attempt.kind is SpanKind.CLIENT
    # Children lie within their parent in time.
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in spans)
    assert spans_by_name["gateway.exact_cache"].attributes == {"gateway.cache": "miss"}


def test_genai_and_gateway_attributes(
    traced: ServerThread, exporter: InMemorySpanExporter, primary: FakeUpstream
) -> None:
    response = post(traced, **{"x-gateway-tags": "team=search"})
    spans = by_name(exporter.get_finished_spans())
    root = dict(spans["POST /v1/chat/completions"].attributes or {})
    request_id = root.pop("gateway.request_id")
    assert isinstance(request_id, str) and request_id.startswith("req_")
    assert root == {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "auto",
        "gen_ai.request.stream": False,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.seed": 7,
        "gen_ai.response.model": "main",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.cache_read.input_tokens": 2,
        "gateway.tenant": "team-a",
        "gateway.model": "main",
        "gateway.route": "default",
        "gateway.cache": "miss",
        "gateway.cost_usd": 0.0000675,
        "gateway.baseline_cost_usd": 0.0000675,
        "gateway.difficulty": 0.25,
    }
    attempt = spans["chat upstream-main"].attributes
    assert dict(attempt or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai_compatible",
        "gen_ai.system": "openai_compatible",
        "gen_ai.request.model": "upstream-main",
        "server.address": "127.0.0.1",
        "server.port": int(primary.base_url.rsplit(":", 1)[1].split("/")[0]),
        "gateway.model": "main",
        "gateway.attempt": 1,
    }
    assert spans["POST /v1/chat/completions"].status.status_code is StatusCode.UNSET
    assert response.json()["choices"]


def test_incoming_traceparent_is_the_parent_and_goes_upstream_from_the_attempt(
    traced: ServerThread, exporter: InMemorySpanExporter, primary: FakeUpstream
) -> None:
    post(traced, traceparent=f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01", tracestate="vendor=x")
    spans = by_name(exporter.get_finished_spans())
    root = spans["POST /v1/chat/completions"]
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.trace_id:032x}" == REMOTE_TRACE
    assert f"{root.parent.span_id:016x}" == REMOTE_SPAN
    assert f"{root.context.trace_id:032x}" == REMOTE_TRACE
    attempt = spans["chat upstream-main"]
    sent = primary.requests[-1].headers
    assert sent["traceparent"] == f"00-{REMOTE_TRACE}-{attempt.context.span_id:016x}-01"
    assert sent["tracestate"] == "vendor=x"


def test_a_fallback_gives_one_attempt_span_each_and_an_event(
    traced: ServerThread, exporter: InMemorySpanExporter, primary: FakeUpstream
) -> None:
    primary.script(Fault(status=503))
    post(traced)
    spans = exporter.get_finished_spans()
    first, second = by_name(spans)["chat upstream-main"], by_name(spans)["chat upstream-backup"]
    call = by_name(spans)["gateway.call"]
    assert first.parent.span_id == second.parent.span_id == call.context.span_id  # type: ignore[union-attr]
    assert first.status.status_code is StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["error.type"] == "503"
    assert first.attributes["http.response.status_code"] == 503
    assert second.status.status_code is StatusCode.UNSET
    root = by_name(spans)["POST /v1/chat/completions"]
    assert [(e.name, dict(e.attributes or {})) for e in root.events or ()] == [
        ("gateway.fallback", {"from": "main", "to": "backup"})
    ]
    assert root.attributes is not None and root.attributes["gateway.model"] == "backup"


def test_a_failed_request_is_an_error_span(
    traced: ServerThread,
    exporter: InMemorySpanExporter,
    primary: FakeUpstream,
    backup: FakeUpstream,
) -> None:
    primary.script(Fault(status=500))
    backup.script(Fault(status=502))
    response = httpx.post(f"{traced.url}/v1/chat/completions", json=BODY)
    assert response.status_code == 502
    root = by_name(exporter.get_finished_spans())["POST /v1/chat/completions"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None
    assert root.attributes["error.type"] == "502"
    assert root.attributes["http.response.status_code"] == 502


def test_a_sampled_out_caller_is_respected(
    traced: ServerThread, exporter: InMemorySpanExporter, primary: FakeUpstream
) -> None:
    post(traced, traceparent=f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-00")
    assert exporter.get_finished_spans() == ()
    sent = primary.requests[-1].headers["traceparent"]
    assert sent.startswith(f"00-{REMOTE_TRACE}-") and sent.endswith("-00")


def test_with_tracing_off_the_callers_trace_context_passes_through(
    serve: Callable[[Telemetry], ServerThread], primary: FakeUpstream
) -> None:
    server = serve(Telemetry())
    post(server, traceparent=f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01", tracestate="vendor=x")
    sent = primary.requests[-1].headers
    assert sent["traceparent"] == f"00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"
    assert sent["tracestate"] == "vendor=x"
    post(server)
    assert "traceparent" not in primary.requests[-1].headers
