"""The bundled engine's reused prompt tokens and measured throughput, priced in the ledger."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from gateway.ledger.sums import from_nanos, to_nanos
from tests.conftest import LOCAL_ENGINE_POLICY, Gateway

pytestmark = pytest.mark.model

PRICE = (
    "price: {{gpu_hour_usd: 3.6, input_tokens_per_s: 1000, output_tokens_per_s: 10, "
    "cached_input_per_mtok: 0.5, throughput: {throughput}}}"
)
CONFIGURED = "price: {{input_per_mtok: 0.02, output_per_mtok: 0.02}}"
POLICY = LOCAL_ENGINE_POLICY.replace(CONFIGURED, PRICE)
SYSTEM = "You are a terse assistant for the harbour master's office. Answer in one sentence."


def ask(gw: Gateway, question: str) -> int:
    """Greedy, uncached by the gateway; returns the engine's cached prompt tokens."""
    completion = gw.client().chat.completions.create(
        model="auto",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        max_tokens=6,
        temperature=0,
        extra_headers={"cache-control": "no-cache"},
    )
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    return completion.usage.prompt_tokens_details.cached_tokens or 0


def per_mtok(gpu_hour: Decimal, tokens_per_s: Decimal) -> Decimal:
    return gpu_hour * 1_000_000 / (3600 * tokens_per_s)


def expected_cost(
    record: object, input_tps: Decimal, output_tps: Decimal, cached_rate: Decimal
) -> Decimal:
    gpu = Decimal("3.6")
    cached = record.cached_input_tokens  # type: ignore[attr-defined]
    fresh = record.input_tokens - cached  # type: ignore[attr-defined]
    output = record.output_tokens  # type: ignore[attr-defined]
    total = (
        fresh * per_mtok(gpu, input_tps) + cached * cached_rate + output * per_mtok(gpu, output_tps)
    )
    return from_nanos(to_nanos(total / 1_000_000))  # as the ledger keeps it, to the nano-dollar


@pytest.fixture
def pricing_gateway(
    start_gateway: Callable[..., Gateway], request: pytest.FixtureRequest
) -> Callable[[str], Gateway]:
    cache_dir = request.config.cache.mkdir("local-engine-models")
    return lambda throughput: start_gateway(
        POLICY.format(cache_dir=cache_dir, throughput=throughput)
    )


def test_reused_prompt_tokens_reach_the_ledger_at_the_cached_price(
    pricing_gateway: Callable[[str], Gateway],
) -> None:
    gw = pricing_gateway("configured")
    assert ask(gw, "When does the bakery open?") == 0
    cached = ask(gw, "Where do the boats go?")
    assert cached > 16  # the shared system prompt, at least
    first, second = sorted(gw.records(2), key=lambda r: r.time)
    assert (first.cached_input_tokens, second.cached_input_tokens) == (0, cached)
    for record in (first, second):
        assert record.cost_usd == expected_cost(record, Decimal(1000), Decimal(10), Decimal("0.5"))


def test_measured_throughput_prices_each_request_at_what_the_engine_measured(
    pricing_gateway: Callable[[str], Gateway],
) -> None:
    """The rates are whole tokens/s read when the request is recorded; with no other request
    running, the engine still reports the same figures right after, so the cost is checked
    exactly."""
    gw = pricing_gateway("measured")
    ask(gw, "When does the bakery open?")
    (record,) = gw.records(1)
    engine = gw.app.state.services.policies.current.providers["local-small"]
    prefill, decode = engine.throughput()
    assert prefill is not None and decode is not None
    assert record.cost_usd == expected_cost(
        record, Decimal(round(prefill)), Decimal(round(decode)), Decimal("0.5")
    )
    assert record.cost_usd != expected_cost(record, Decimal(1000), Decimal(10), Decimal("0.5"))
