"""The real request path, traced to an OTLP receiver, counted on /metrics, logged as JSON."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import REQUEST_LOGGER, JsonFormatter, TelemetryConfig
from tests.conftest import ADMIN_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.telemetry.receiver import OtlpReceiver, attributes

SECRET = "the launch code is 0000"
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{PARENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def test_a_request_with_a_fallback_is_traced_counted_and_logged(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = start_gateway(
        policy_text(primary, backup),
        telemetry=TelemetryConfig(otlp_endpoint=receiver.endpoint, metrics=False),
    )
    primary.script(*[Fault(status=503)] * 3)
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        raw = gw.client().chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": SECRET}],
            extra_headers={"traceparent": TRACEPARENT},
        )
    assert raw.headers["x-gateway-model"] == "backup"
    gw.app.state.telemetry.force_flush()
    spans = {span.name: span for span in receiver.wait_for_spans(8)}

    root = spans["POST /v1/chat/completions"]
    assert root.trace_id.hex() == PARENT_TRACE  # the caller's trace is honoured
    stages = {name for name, span in spans.items() if span.parent_span_id == root.span_id}
    assert {
        "gateway.exact_cache",
        "gateway.route",
        "gateway.call",
        "gateway.ledger",
    } <= stages
    root_attrs = attributes(root)
    assert root_attrs["gateway.route"] == "default" and root_attrs["gateway.tenant"] == "team-a"
    assert root_attrs["gen_ai.response.model"] and root_attrs["gen_ai.usage.input_tokens"] == 5
    attempts = [s for s in receiver.spans() if s.name.startswith("chat ")]
    assert [s.name for s in attempts] == ["chat upstream-main"] * 3 + ["chat upstream-backup"]
    assert all(s.parent_span_id == spans["gateway.call"].span_id for s in attempts)
    assert attributes(attempts[-1])["gen_ai.request.model"] == "upstream-backup"
    # the upstream joined the trace, as a child of the attempt that called it
    assert backup.requests[-1].headers["traceparent"].split("-")[1] == PARENT_TRACE
    assert SECRET not in str(receiver.traces)

    families = {
        f.name: f
        for f in text_string_to_metric_families(
            httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
        )
    }
    requests = families["gateway_requests"].samples
    assert any(s.labels["model"] == "backup" and s.value == 1 for s in requests)
    fallbacks = families["gateway_fallbacks"].samples
    assert any(
        s.labels == {"from_model": "main", "to_model": "backup"} and s.value == 1 for s in fallbacks
    )

    [line] = [JsonFormatter().format(r) for r in caplog.records if r.name == REQUEST_LOGGER]
    logged = json.loads(line)
    assert (
        logged["model"] == "backup" and logged["request_id"] == raw.headers["x-gateway-request-id"]
    )
    assert SECRET not in line


def _load(gw: Gateway) -> dict[str, float]:
    text = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name in ("gateway_requests_in_flight", "gateway_requests_queued")
    }


def test_requests_in_flight_count_a_stream_until_its_end(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """The autoscaling signal: a stream being served is one request in flight; scrapes and
    probes are not counted."""
    gw = start_gateway(policy_text(primary, backup))
    assert _load(gw) == {"gateway_requests_in_flight": 0, "gateway_requests_queued": 0}
    primary.script(Fault(chunk_delay_s=0.3))
    stream = gw.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with stream:
        next(iter(stream))
        assert _load(gw)["gateway_requests_in_flight"] == 1
        assert [c for c in stream]
    deadline = time.monotonic() + 5  # the server may finish its last send after the client
    while _load(gw)["gateway_requests_in_flight"] != 0:
        assert time.monotonic() < deadline, "the finished stream is still counted"
        time.sleep(0.05)
