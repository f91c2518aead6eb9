"""What a request cost, from the provider's token counts and the policy's prices.

Money is `Decimal` end to end: prices are read from the policy as exact decimals, and a float
would turn $2.50/Mtok into 2.4999999... in a report an accountant reads.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol, runtime_checkable

from gateway.policy.schema import Price
from gateway.providers import Usage
from gateway.providers.engine_meter import Throughput

_MILLION = Decimal(1_000_000)


@runtime_checkable
class Metered(Protocol):
    """A provider that knows its engine's throughput: the bundled engine in-process, or a
    separate local engine read from its /metrics (`gateway.providers.engine_meter`)."""

    def throughput(self) -> Throughput: ...


def measured(provider: object) -> Throughput | None:
    """What ``provider`` measured, for a price with ``throughput: measured``; None if it
    measures nothing (the hosted providers)."""
    return provider.throughput() if isinstance(provider, Metered) else None


def cost_usd(usage: Usage | None, price: Price | None, *, batch: bool = False) -> Decimal | None:
    """None when either is unknown: an unknown cost is never reported as zero. ``batch``: a
    line of a batch, with the price's ``batch_discount`` taken off every rate."""
    if usage is None or price is None:
        return None
    # Prompt tokens include those read from and written to the provider's cache (OpenAI's
    # usage shape; translating providers report theirs so).
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    total = (
        (usage.prompt_tokens - cached - written) * price.input_rate
        + cached * price.cached_input_rate
        + written * price.cache_write_rate
        + usage.completion_tokens * price.output_rate
    )
    if batch:
        total *= 1 - price.batch_discount
    return total / _MILLION
