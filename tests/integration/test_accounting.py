"""Every request leaves one exact ledger record; budgets act on what was spent."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import httpx
import openai
import pytest

from gateway.ledger import open_ledger
from tests.conftest import OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.servers import RedisProcess

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "price this request exactly"},
]
FRESH = {"cache-control": "no-cache, no-store"}


def by_id(records: list, request_id: str):  # type: ignore[no-untyped-def]
    [record] = [r for r in records if r.request_id == request_id]
    return record


def test_stream_and_non_stream_of_the_same_request_cost_the_same(gateway: Gateway) -> None:
    client = gateway.client()
    plain = client.chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers={**FRESH, "x-gateway-tags": "run=a"}
    )
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=MESSAGES,
        stream=True,
        extra_headers={**FRESH, "x-gateway-tags": "run=b"},
    ) as response:
        chunks = list(response.parse())
        stream_id = response.headers["x-gateway-request-id"]
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    records = gateway.records(2)
    one, two = by_id(records, plain.headers["x-gateway-request-id"]), by_id(records, stream_id)
    # 6 prompt words at $2.50/M, 6 answer words at $10/M; the baseline is the same model
    assert one.cost_usd == two.cost_usd == Decimal("0.000075")
    assert one.cost_usd == Decimal(plain.headers["x-gateway-cost-usd"])
    assert (one.input_tokens, one.output_tokens) == (two.input_tokens, two.output_tokens) == (6, 6)
    assert one.baseline_cost_usd == two.baseline_cost_usd == one.cost_usd
    assert not one.estimated and not two.estimated
    assert (one.stream, two.stream) == (False, True)
    assert (one.tags, two.tags) == ({"run": "a"}, {"run": "b"})
    assert two.ttft_ms is not None and 0 < two.ttft_ms <= two.latency_ms
    assert (one.tenant, one.route, one.model, one.cache, one.status) == (
        "team-a",
        "default",
        "main",
        "bypass",  # no-cache: the cache was not read
        200,
    )


def test_fallback_is_priced_at_the_model_that_answered_against_the_baseline(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    primary.script(*[Fault(status=503)] * 3)
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )
    record = by_id(gateway.records(1), raw.headers["x-gateway-request-id"])
    assert record.model == "backup"
    assert record.cost_usd == Decimal("0.0000018")  # 6 * 0.10 + 6 * 0.20, per million
    assert record.baseline_cost_usd == Decimal("0.000075")  # the same tokens on main


def test_missing_usage_is_estimated_and_marked(gateway: Gateway, primary: FakeUpstream) -> None:
    primary.script(Fault(no_usage=True), Fault(no_usage=True))
    plain = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers=FRESH
    )
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto", messages=MESSAGES, stream=True, extra_headers=FRESH
    ) as response:
        list(response.parse())
        stream_id = response.headers["x-gateway-request-id"]
    records = gateway.records(2)
    for request_id in (plain.headers["x-gateway-request-id"], stream_id):
        record = by_id(records, request_id)
        assert record.estimated
        assert record.input_tokens == 9  # 35 bytes of text / 4, rounded up
        assert record.output_tokens == 10  # "primary says: price this request exactly": 40 / 4
        assert record.cost_usd is not None


def test_cache_hits_cost_nothing_and_keep_their_baseline(gateway: Gateway) -> None:
    first = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )
    hit = gateway.client().chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES
    )
    records = gateway.records(2)
    original, cached = (by_id(records, r.headers["x-gateway-request-id"]) for r in (first, hit))
    assert (cached.cache, cached.route, cached.cost_usd) == ("exact", "cache", Decimal(0))
    assert cached.baseline_cost_usd == original.baseline_cost_usd == Decimal("0.000075")


def test_failures_are_recorded_with_their_status(gateway: Gateway, primary: FakeUpstream) -> None:
    primary.script(Fault(status=400))
    with pytest.raises(openai.BadRequestError):
        gateway.client().chat.completions.create(model="auto", messages=MESSAGES)  # type: ignore[arg-type]
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b"{broken",
        headers={"authorization": f"Bearer {TENANT_KEY}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    records = gateway.records(2)
    assert sorted(r.status for r in records) == [400, 400]
    assert all(r.tenant == "team-a" for r in records)
    refused = by_id(records, response.headers["x-gateway-request-id"])
    assert refused.route is None
    # Refused before any model was called: it certainly cost nothing. The upstream's 400 came
    # from a provider that may bill for it: unknown, never a silent zero.
    assert refused.cost_usd == refused.baseline_cost_usd == Decimal(0)
    (upstream_refusal,) = (r for r in records if r is not refused)
    assert upstream_refusal.cost_usd is None and upstream_refusal.baseline_cost_usd is None


BUDGET = """\
tenants:
  team-a: {api_keys: ["sk-test-tenant-a-0123456789"], daily_budget_usd: 0.00001,
           on_budget_exceeded: reject}
  team-b: {api_keys: ["sk-test-tenant-b-0123456789"], monthly_budget_usd: 0.00001,
           on_budget_exceeded: downgrade}
admin: {api_keys: ["sk-test-admin-0123456789abc"]}
"""


def test_budgets_reject_or_downgrade(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = policy_text(primary, backup, tenants=False) + BUDGET
    gw = start_gateway(text)
    client_a, client_b = gw.client(), gw.client(OTHER_KEY)
    client_a.chat.completions.create(model="auto", messages=MESSAGES, extra_headers=FRESH)  # type: ignore[arg-type]
    gw.records(1)
    with pytest.raises(openai.RateLimitError) as info:
        client_a.chat.completions.create(model="auto", messages=MESSAGES, extra_headers=FRESH)  # type: ignore[arg-type]
    assert info.value.code == "budget_exceeded"
    assert "daily budget" in info.value.message and "resets at" in info.value.message
    assert int(info.value.response.headers["retry-after"]) > 0
    first = client_b.chat.completions.with_raw_response.create(
        model="main", messages=MESSAGES, extra_headers=FRESH
    )
    assert first.headers["x-gateway-model"] == "main"
    gw.records(3)
    later = client_b.chat.completions.with_raw_response.create(
        model="main", messages=MESSAGES, extra_headers=FRESH
    )
    assert (later.headers["x-gateway-route"], later.headers["x-gateway-model"]) == (
        "budget-downgrade",
        "backup",
    )


def test_every_request_is_in_the_redis_ledger_once_though_redis_stopped_mid_run(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    gw = start_gateway(policy_text(primary, backup), redis_url=own_redis.url)
    sent: list[str] = []

    def burst(n: int) -> None:
        for _ in range(n):
            raw = gw.client().chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": f"q {len(sent)}"}]
            )  # type: ignore[arg-type]
            sent.append(raw.headers["x-gateway-request-id"])

    burst(5)
    own_redis.kill()
    burst(5)  # still answered: the cache is bypassed, the ledger spools
    own_redis.start()
    burst(5)
    gw.stop()  # flushes what is pending, to Redis or to the spool

    async def stored() -> list[str]:
        ledger = open_ledger(own_redis.url, gw.data_dir)  # a restart replays any spool left
        await ledger.start()
        await ledger.flush()
        records = await ledger.records()  # type: ignore[attr-defined]
        await ledger.aclose()
        return [r.request_id for r in records]

    assert Counter(asyncio.run(stored())) == Counter(sent)  # every request, exactly once


def test_a_service_tier_is_billed_at_its_own_price_or_not_at_all(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """A client may ask OpenAI for the priority tier (dearer) or flex (cheaper): the answer says
    which it was served in, and the ledger prices that tier, or leaves it unpriced."""
    text = policy_text(primary, backup).replace(
        "price: {input_per_mtok: 2.50, cached_input_per_mtok: 1.25, output_per_mtok: 10}",
        "price: {input_per_mtok: 2.50, cached_input_per_mtok: 1.25, output_per_mtok: 10, "
        "service_tiers: {priority: {input_per_mtok: 5, output_per_mtok: 20}}}",
    )
    assert "service_tiers" in text
    gw = start_gateway(text)
    client = gw.client()
    sent = Counter[str]()

    def cost(tier: str | None, stream: bool = False) -> tuple[str | None, Decimal | None]:
        extra = {} if tier is None else {"service_tier": tier}
        raw = client.chat.completions.with_raw_response.create(
            model="main", messages=MESSAGES, extra_headers=FRESH, stream=stream, **extra
        )
        if stream:
            list(raw.parse())
        request_id = raw.headers["x-gateway-request-id"]
        sent["requests"] += 1
        record = by_id(gw.records(sent["requests"]), request_id)
        return raw.headers.get("x-gateway-cost-usd"), record.cost_usd

    header, usual = cost(None)
    assert usual is not None and header == format(usual.normalize(), "f")
    _, priority = cost("priority")
    assert priority == usual * 2  # every rate doubled in the priority tier
    _, streamed = cost("priority", stream=True)
    assert streamed == priority
    header, flex = cost("flex")
    assert flex is None and header is None  # no flex price in the policy: unpriced, not zero


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_request_keeps_its_tags_route_and_model_in_the_ledger(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream, stream: bool
) -> None:
    """Reports by tag or by model count the requests that failed too (bench/reliability found
    them missing: failure records were made from the arrival alone)."""
    primary.script(*[Fault(status=500)] * 10)
    backup.script(*[Fault(status=500)] * 10)
    with pytest.raises(openai.InternalServerError) as failed:
        gateway.client().chat.completions.create(
            model="auto",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=stream,
            extra_headers={"x-gateway-tags": "run=r7", **FRESH},
        )
    request_id = failed.value.response.headers["x-gateway-request-id"]
    record = by_id(gateway.records(1), request_id)
    assert (record.status, record.tags, record.stream) == (502, {"run": "r7"}, stream)
    assert record.model == "main" and record.route is not None and record.cost_usd is None
