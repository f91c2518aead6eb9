"""The ledger stage: estimates, costs and baselines, GPU-hour prices, budget periods."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from gateway.pipeline import ledger as account
from gateway.pipeline.budget import periods
from gateway.pipeline.normalize import chat_request
from gateway.policy.schema import Policy, Price, cheapest_model
from gateway.providers import Usage


def request(stream: bool = False) -> Any:
    body = {
        "model": "auto",
        "stream": stream,
        "messages": [{"role": "user", "content": "twelve bytes"}],
    }
    return chat_request(
        msgspec.json.encode(body),
        request_id="r",
        tenant="t",
        tags_header="a=b",
        arrived=(1000.0, 0.0),
    )


def test_a_stream_asks_upstream_for_usage_but_remembers_the_client_did_not() -> None:
    r = request(stream=True)
    assert r.body["stream_options"] == {"include_usage": True}
    assert not r.wants_usage


def test_missing_usage_is_estimated_and_marked() -> None:
    usage, estimated = account.counted(None, request(), "nine char")
    assert estimated and usage == Usage(3, 3, 6)  # 12 bytes / 4; 9 bytes / 4 rounded up
    usage, estimated = account.counted(Usage(1, 2, 3), request(), "nine char")
    assert not estimated and usage == Usage(1, 2, 3)


def policy(baseline: str | None = "large", small_price: dict[str, Any] | None = None) -> Policy:
    def model(price: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "provider": "openai_compatible",
            "base_url": "http://x/v1",
            "model": "m",
            "price": price,
        }

    return Policy.model_validate(
        {
            "version": 1,
            "baseline_model": baseline,
            "models": {
                "small": model(small_price),
                "large": model({"input_per_mtok": "2.50", "output_per_mtok": "10"}),
            },
            "routes": [{"name": "r", "to": "small"}],
        }
    )


def test_record_costs_and_baseline() -> None:
    p = policy(small_price={"input_per_mtok": "0.02", "output_per_mtok": "0.04"})
    rec = account.record(p, request(), route="r", model="small", usage=Usage(1000, 500, 1500))
    assert rec.cost_usd == Decimal("0.00004")  # 1000 * 0.02 + 500 * 0.04, per million
    assert rec.baseline_cost_usd == Decimal("0.0075")  # 1000 * 2.5 + 500 * 10, per million
    assert (rec.tenant, rec.tags, rec.time, rec.status) == ("t", {"a": "b"}, 1000.0, 200)


def test_an_answer_is_priced_in_the_service_tier_it_was_served_in() -> None:
    tiers = {"priority": {"input_per_mtok": "0.04", "output_per_mtok": "0.08"}}
    p = policy(
        small_price={"input_per_mtok": "0.02", "output_per_mtok": "0.04", "service_tiers": tiers}
    )
    usage = Usage(1000, 500, 1500)

    def priced(tier: str | None) -> tuple[Decimal | None, Decimal | None]:
        rec = account.record(p, request(), route="r", model="small", usage=usage, service_tier=tier)
        return rec.cost_usd, rec.baseline_cost_usd

    usual = (Decimal("0.00004"), Decimal("0.0075"))
    assert priced(None) == priced("default") == priced("auto") == usual
    # priority: its own price; the baseline model has none for that tier, so no saving is claimed
    assert priced("priority") == (Decimal("0.00008"), None)
    assert priced("flex") == (None, None)  # a tier without a price is unpriced, never the usual


def test_unpriced_model_costs_none_and_no_baseline_means_no_saving() -> None:
    rec = account.record(policy(), request(), route="r", model="small", usage=Usage(10, 10, 20))
    assert rec.cost_usd is None
    p = policy(baseline=None, small_price={"input_per_mtok": "1", "output_per_mtok": "1"})
    rec = account.record(p, request(), route="r", model="small", usage=Usage(10, 10, 20))
    assert rec.baseline_cost_usd == rec.cost_usd == Decimal("0.00002")


def test_gpu_hour_price() -> None:
    price = Price(
        gpu_hour_usd=Decimal("3.60"),
        input_tokens_per_s=Decimal(10000),
        output_tokens_per_s=Decimal(1000),
    )
    assert price.input_rate == Decimal("0.1")  # 3.60 * 1e6 / (3600 * 10000)
    assert price.output_rate == Decimal("1")
    assert price.cached_input_rate == price.input_rate
    with pytest.raises(ValueError, match="either input_per_mtok"):
        Price(
            gpu_hour_usd=Decimal(1),
            input_per_mtok=Decimal(1),
            output_per_mtok=Decimal(1),
            input_tokens_per_s=Decimal(1),
            output_tokens_per_s=Decimal(1),
        )
    with pytest.raises(ValueError, match="either input_per_mtok"):
        Price(input_per_mtok=Decimal(1))


def test_cheapest_model() -> None:
    assert cheapest_model(policy()) == "large"  # the only priced one
    p = policy(small_price={"input_per_mtok": "0.02", "output_per_mtok": "0.04"})
    assert cheapest_model(p) == "small"


def test_budget_periods_are_utc_day_and_month() -> None:
    (daily, d0, d1), (monthly, m0, m1) = periods(1_798_675_200.0 + 3600)  # 2026-12-31 01:00Z
    assert (daily, monthly) == ("daily", "monthly")
    assert (d0, d1) == (1_798_675_200.0, 1_798_761_600.0)
    assert m0 == 1_796_083_200.0  # 2026-12-01
    assert m1 == 1_798_761_600.0  # 2027-01-01
