"""A price per GPU hour at configured or measured throughput."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from gateway.pipeline.cost import cost_usd, measured
from gateway.policy.models import Price
from gateway.providers import PromptTokensDetails, Usage

GPU = {"gpu_hour_usd": "3.6", "input_tokens_per_s": 1000, "output_tokens_per_s": 10}


def test_measured_figures_replace_the_configured_ones_as_whole_tokens_per_second() -> None:
    price = Price.model_validate({**GPU, "throughput": "measured"})
    assert (price.input_rate, price.output_rate) == (Decimal(1), Decimal(100))
    at = price.at_throughput(1999.6, 24.4)
    assert (at.input_tokens_per_s, at.output_tokens_per_s) == (Decimal(2000), Decimal(24))
    assert at.input_rate == Decimal("0.5")
    assert at.output_rate == Decimal("3.6") * 1_000_000 / (3600 * Decimal(24))
    # Not measured yet (None), or measured below one token a second: the configured figure.
    partial = price.at_throughput(None, 0.2)
    assert (partial.input_tokens_per_s, partial.output_tokens_per_s) == (Decimal(1000), Decimal(1))


def test_a_configured_price_ignores_measurements() -> None:
    price = Price.model_validate(GPU)
    assert price.at_throughput(5000.0, 50.0) is price


def test_measured_needs_a_gpu_hour_price() -> None:
    with pytest.raises(ValidationError, match="throughput: measured needs gpu_hour_usd"):
        Price.model_validate({"input_per_mtok": 1, "output_per_mtok": 2, "throughput": "measured"})


def test_cached_prompt_tokens_cost_the_cached_rate_at_measured_throughput() -> None:
    price = Price.model_validate(
        {**GPU, "throughput": "measured", "cached_input_per_mtok": "0.1"}
    ).at_throughput(2000.0, 20.0)
    usage = Usage(1000, 100, 1100, PromptTokensDetails(cached_tokens=400))
    expected = (600 * Decimal("0.5") + 400 * Decimal("0.1") + 100 * Decimal(50)) / 1_000_000
    assert cost_usd(usage, price) == expected


class Engine:
    def throughput(self) -> tuple[float | None, float | None]:
        return 123.0, None


def test_only_a_provider_that_measures_reports_throughput() -> None:
    assert measured(Engine()) == (123.0, None)
    assert measured(object()) is None
