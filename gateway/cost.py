"""What a request cost, from the provider's token counts and the policy's prices.

Money is `Decimal` end to end: prices are read from the policy as exact decimals, and a float
would turn $2.50/Mtok into 2.4999999... in a report an accountant reads.
"""

from __future__ import annotations

from decimal import Decimal

from gateway.policy.schema import Price
from gateway.providers import Usage

_MILLION = Decimal(1_000_000)


def cost_usd(usage: Usage | None, price: Price | None) -> Decimal | None:
    """None when either is unknown: an unknown cost is never reported as zero."""
    if usage is None or price is None:
        return None
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.cached_input_per_mtok
    if cached_price is None:
        cached_price = price.input_per_mtok
    total = (
        (usage.prompt_tokens - cached) * price.input_per_mtok
        + cached * cached_price
        + usage.completion_tokens * price.output_per_mtok
    )
    return total / _MILLION
