"""The gateway's OTLP/HTTP JSON span exporter against a real receiver on 127.0.0.1: the spans as
they ended, a bounded queue that drops and counts, retries, compression, headers, and no span
lost at shutdown."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from gateway.telemetry import Telemetry, TelemetryConfig
from gateway.telemetry.config import SpanExportSettings
from gateway.telemetry.otlp_traces import OtlpJsonExporter
from gateway.telemetry.spans import InMemorySpanExporter, SpanData
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.telemetry.conftest import PROMPT, SCRAPE
from tests.integration.telemetry.receiver import OtlpReceiver, attributes, value
from tests.servers import ServerThread

BODY = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0.2}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FAST = SpanExportSettings(backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def exporter_for(url: str, settings: SpanExportSettings = FAST) -> OtlpJsonExporter:
    return OtlpJsonExporter(url, Resource.create({"service.name": "test"}), "gateway", settings)


def span(i: int = 1, **attrs: Any) -> SpanData:
    context = SpanContext(0xABC, i, False, TraceFlags(TraceFlags.SAMPLED))
    return SpanData(
        f"span {i}", context, None, SpanKind.INTERNAL, attrs, None, Status(), 1_000, 2_000
    )


def chat(server: ServerThread) -> None:
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=BODY,
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=x"},
    )
    assert reply.status_code == 200, reply.text


def test_the_receiver_gets_the_spans_as_they_ended(
    serve: Callable[[Telemetry], ServerThread], receiver: OtlpReceiver, primary: FakeUpstream
) -> None:
    """The same request kept in memory and exported over OTLP/HTTP JSON: a remote parent, a
    fallback (an event, an error attempt span), every attribute type. The spans in memory,
    as they ended, are the reference."""
    memory = InMemorySpanExporter()
    kept = serve(Telemetry(span_exporter=memory))
    telemetry = Telemetry(TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False))
    exported = serve(telemetry)
    for server in (kept, exported):
        primary.script(Fault(status=503))
        chat(server)
    telemetry.force_flush()

    def ended_view(s: SpanData) -> tuple[Any, ...]:
        assert s.parent is not None or s.name.startswith("POST")
        events = [(e.name, dict(e.attributes or {})) for e in s.events or ()]
        attrs = {k: v for k, v in (s.attributes or {}).items() if k != "gateway.request_id"}
        remote = s.parent is not None and s.parent.is_remote
        return (s.name, s.kind.value + 1, remote, attrs, events, s.status.status_code.value)

    def otlp_view(s: Any) -> tuple[Any, ...]:
        events = [(e.name, attributes(e)) for e in s.events]
        attrs = {k: v for k, v in attributes(s).items() if k != "gateway.request_id"}
        assert s.flags & 0x100 and s.flags & 0x1  # has-is-remote, sampled
        return (s.name, s.kind, bool(s.flags & 0x200), attrs, events, s.status.code)

    expected = sorted(map(ended_view, memory.get_finished_spans()), key=repr)
    spans = receiver.spans()
    assert sorted(map(otlp_view, spans), key=repr) == expected
    assert len(expected) == 7  # the request, 4 stages, 2 attempts
    root = next(s for s in spans if s.name == "POST /v1/chat/completions")
    assert root.trace_id.hex() == TRACEPARENT[3:35]
    assert root.parent_span_id.hex() == TRACEPARENT[36:52]
    assert root.trace_state == "vendor=x"
    assert root.end_time_unix_nano > root.start_time_unix_nano > 1.7e18
    by_id = {s.span_id: s.name for s in spans}
    assert {s.name: by_id.get(s.parent_span_id) for s in spans if s is not root} == {
        "gateway.exact_cache": root.name,
        "gateway.route": root.name,
        "gateway.call": root.name,
        "gateway.ledger": root.name,
        "chat upstream-main": "gateway.call",
        "chat upstream-backup": "gateway.call",
    }
    (resource_spans,) = receiver.traces[0].resource_spans
    resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "llm-gateway"
    assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert resource_spans.scope_spans[0].scope.name == "gateway"
    assert PROMPT.encode() not in b"".join(receiver.bodies)


def test_attribute_values_of_every_type_are_valid_otlp_json(receiver: OtlpReceiver) -> None:
    exporter = exporter_for(f"{receiver.endpoint}/v1/traces")
    exporter.emit(
        span(
            text='quote " and \\ and é',
            yes=True,
            count=-(2**63),
            ratio=0.25,
            nan=float("nan"),
            inf=float("inf"),
            names=("a", "b"),
            numbers=[1, 2],
        )
    )
    exporter.shutdown()
    (exported,) = receiver.spans()
    values = attributes(exported)
    nan = values.pop("nan")
    assert nan != nan
    assert values.pop("names").values[1].string_value == "b"
    assert values.pop("numbers").values[0].int_value == 1
    assert values == {
        "text": 'quote " and \\ and é',
        "yes": True,
        "count": -(2**63),
        "ratio": 0.25,
        "inf": float("inf"),
    }
    assert exported.kind == 1  # SPAN_KIND_INTERNAL
    assert (exported.start_time_unix_nano, exported.end_time_unix_nano) == (1_000, 2_000)


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    """The collector accepts the connection and never answers: the export thread is stuck in
    its POST, the queue fills, and each further span is dropped at once."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/v1/traces"
        settings = SpanExportSettings(max_queue=100, batch_size=10, timeout_s=5, max_attempts=1)
        exporter = exporter_for(url, settings)
        started = time.perf_counter()
        for i in range(10_000):
            exporter.emit(span(i + 1))
        elapsed = time.perf_counter() - started
        assert exporter.queued <= 100
        assert exporter.dropped >= 10_000 - 100 - 10  # at most one batch is in flight
        assert exporter.dropped + exporter.queued <= 10_000
        assert exporter.lost == exporter.dropped  # the batch in flight has not failed yet
        assert elapsed < 1.0, elapsed  # about 1 µs a span; a blocked append would take 5 s
        exporter.shutdown(timeout_millis=100)


def test_503_is_retried_then_the_batch_goes_through(receiver: OtlpReceiver) -> None:
    receiver.fail_next(503, count=2)
    exporter = exporter_for(f"{receiver.endpoint}/v1/traces")
    exporter.emit(span())
    assert exporter.force_flush()
    assert len(receiver.bodies) == 3
    assert [s.name for s in receiver.spans()] == ["span 1"]
    exporter.shutdown()


def test_retries_are_bounded_and_a_400_is_not_retried(receiver: OtlpReceiver) -> None:
    receiver.fail_next(429, count=10, **{"retry-after": "0"})
    exporter = exporter_for(f"{receiver.endpoint}/v1/traces")
    exporter.emit(span(1))
    exporter.force_flush()
    assert len(receiver.bodies) == FAST.max_attempts and receiver.spans() == []
    receiver.failures.clear()
    receiver.fail_next(400)
    exporter.emit(span(2))
    exporter.force_flush()
    assert len(receiver.bodies) == FAST.max_attempts + 1
    exporter.emit(span(3))  # the exporter goes on after failures
    exporter.shutdown()
    assert [s.name for s in receiver.spans()] == ["span 3"]
    assert (exporter.lost, exporter.dropped) == (2, 0)


def test_lost_spans_are_a_metric(
    serve: Callable[[Telemetry], ServerThread], receiver: OtlpReceiver
) -> None:
    """The collector refuses the first request's spans: they are counted as lost on /metrics;
    the second request's spans arrive, and the count stays."""
    config = TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False)
    telemetry = Telemetry(config)
    server = serve(telemetry)
    receiver.fail_next(400)
    chat(server)
    telemetry.force_flush()
    chat(server)
    telemetry.force_flush()
    per_request = len(receiver.spans())
    assert per_request > 0
    scraped = httpx.get(f"{server.url}/metrics", headers=SCRAPE).text
    assert f"gateway_trace_spans_lost_total {float(per_request)}" in scraped


def test_closing_the_telemetry_exports_every_span(
    serve: Callable[[Telemetry], ServerThread], receiver: OtlpReceiver
) -> None:
    """The batch delay is an hour: only the flush at close can deliver the spans."""
    config = TelemetryConfig(
        otlp_endpoint=receiver.endpoint,
        metrics=False,
        span_export=SpanExportSettings(delay_s=3600),
    )
    telemetry = Telemetry(config)
    server = serve(telemetry)
    for _ in range(3):
        chat(server)
    assert receiver.spans() == []
    asyncio.run(telemetry.aclose())
    assert len(receiver.spans()) == 3 * 6


def test_gzip_and_headers_from_the_environment(receiver: OtlpReceiver) -> None:
    config = TelemetryConfig.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=a,authorization=Basic%20abc",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=k%3D1",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        }
    )
    telemetry = Telemetry(config)
    trace = telemetry.start_request({}, "req_1")
    trace.end(status=200)
    telemetry.shutdown()
    (headers,) = receiver.headers
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/json"
    assert headers["x-api-key"] == "k=1"
    assert "x-team" not in headers  # the traces variable replaces the general one
    (body,) = receiver.bodies
    assert body[:2] == b"\x1f\x8b"
    assert b'"resourceSpans"' in gzip.decompress(body)
    assert [s.name for s in receiver.spans()] == ["POST /v1/chat/completions"]


def test_the_sampler_is_honoured_on_the_json_path(
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    telemetry = Telemetry(TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False))
    trace = telemetry.start_request({}, "req_1")
    assert not trace.recording
    trace.end(status=200)
    telemetry.shutdown()
    assert receiver.bodies == []


def test_spans_ended_after_shutdown_are_dropped(receiver: OtlpReceiver) -> None:
    exporter = exporter_for(f"{receiver.endpoint}/v1/traces")
    exporter.shutdown()
    exporter.emit(span())
    assert exporter.dropped == 1 and receiver.bodies == []


def test_status_description_and_events_are_encoded(receiver: OtlpReceiver) -> None:
    exporter = exporter_for(f"{receiver.endpoint}/v1/traces")
    data = span()._replace(
        status=Status(StatusCode.ERROR, "bad"),
        events=[Event("e", {"k": 1}, 5), Event("bare", None, 6)],
        kind=SpanKind.CLIENT,
    )
    exporter.emit(data)
    exporter.shutdown()
    (exported,) = receiver.spans()
    assert (exported.status.code, exported.status.message, exported.kind) == (2, "bad", 3)
    assert [(e.name, e.time_unix_nano, attributes(e)) for e in exported.events] == [
        ("e", 5, {"k": 1}),
        ("bare", 6, {}),
    ]


def test_the_thread_sends_full_batches_and_leaves_the_rest_to_the_delay(
    receiver: OtlpReceiver,
) -> None:
    """A full batch wakes the thread, which sends full batches only (not small ones, chasing
    spans as they arrive); the rest waits for the delay or a flush."""
    exporter = exporter_for(
        f"{receiver.endpoint}/v1/traces",
        SpanExportSettings(batch_size=10, delay_s=3600),
    )
    for i in range(25):
        exporter.emit(span(i + 1))
    deadline = time.monotonic() + 10
    while len(receiver.traces) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert exporter.queued == 5
    exporter.force_flush()
    sizes = [len(request.resource_spans[0].scope_spans[0].spans) for request in receiver.traces]
    assert sizes == [10, 10, 5]
    exporter.shutdown()
