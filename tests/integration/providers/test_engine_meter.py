"""A price per GPU hour from a separate local engine's measured throughput: the gateway reads
the engine's /metrics beside its OpenAI API and prices each request at the prefill and decode
tokens/s it measured (the compose and Kubernetes deployments, where the engine is its own
server behind ``provider: openai_compatible``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tests.conftest import TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream

GPU_HOUR = Decimal("3.6")  # so that a rate is 1000 / tokens_per_s USD per million tokens
METRICS = """# TYPE local_engine_prefill_tokens_per_second gauge
local_engine_prefill_tokens_per_second{{model="m"}} {prefill}
# TYPE local_engine_decode_tokens_per_second gauge
local_engine_decode_tokens_per_second{{model="m"}} {decode}
"""


def policy(engine: FakeUpstream) -> str:
    return f"""version: 1
models:
  local:
    provider: openai_compatible
    base_url: {engine.base_url}
    model: smollm2
    price:
      gpu_hour_usd: {GPU_HOUR}
      input_tokens_per_s: 1000
      output_tokens_per_s: 100
      throughput: measured
routes:
  - {{name: default, to: local}}
tenants:
  team-a: {{api_keys: ["{TENANT_KEY}"]}}
"""


def ask(gw: Gateway, i: int) -> object:
    """A request the caches cannot answer (a new question each time)."""
    return gw.client().chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": f"question {i}"}]
    )


def cost_at(usage: object, prefill: int, decode: int) -> Decimal:
    prompt, completion = usage.prompt_tokens, usage.completion_tokens  # type: ignore[attr-defined]
    per_mtok_in, per_mtok_out = Decimal(1000) / prefill, Decimal(1000) / decode
    return (prompt * per_mtok_in + completion * per_mtok_out) / 1_000_000


def test_requests_are_priced_at_what_the_engine_measured(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream
) -> None:
    primary.metrics = METRICS.format(prefill=2000.4, decode=400.0)
    gw = start_gateway(policy(primary))
    first: Any = ask(gw, 0)
    usage = first.parse().usage
    # the first request starts the reading: it is priced at the configured figures
    assert Decimal(first.headers["x-gateway-cost-usd"]) == cost_at(usage, 1000, 100)
    deadline = time.monotonic() + 10
    for i in itertools.count(1):
        raw: Any = ask(gw, i)
        if Decimal(raw.headers["x-gateway-cost-usd"]) != cost_at(raw.parse().usage, 1000, 100):
            break
        assert time.monotonic() < deadline, "the engine's figures were never read"
        time.sleep(0.05)
    # measured rates, rounded to whole tokens per second
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost_at(raw.parse().usage, 2000, 400)
    assert any(r.path == "/metrics" for r in primary.requests)


def test_a_server_without_engine_metrics_keeps_the_configured_price(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream
) -> None:
    gw = start_gateway(policy(primary))  # the fake serves no /metrics: 404
    for i in range(3):
        raw: Any = ask(gw, i)
        assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost_at(raw.parse().usage, 1000, 100)
        time.sleep(0.1)
