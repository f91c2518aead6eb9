from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.errors import BadRequest
from gateway.pipeline.cost import cost_usd
from gateway.pipeline.normalize import chat_request, parse_tags
from gateway.policy.schema import Price
from gateway.providers import PromptTokensDetails, Usage


def request(body: bytes, tenant: str = "t", tags: str | None = None):  # type: ignore[no-untyped-def]
    return chat_request(body, request_id="req_1", tenant=tenant, tags_header=tags)


def test_request_fields() -> None:
    r = request(
        b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url",'
        b' "image_url": {"url": "x"}}]}], "tools": [{"type": "function"}], "stream": true, '
        b'"x_custom": 1}',
        tags="a=1, b = 2",
    )
    assert r.stream and r.has_tools and r.has_images
    assert dict(r.tags) == {"a": "1", "b": "2"}
    assert r.body["x_custom"] == 1
    assert r.prompt_tokens == 0  # an image part carries no text


def test_prompt_token_estimate() -> None:
    r = request(
        '{"model": "auto", "messages": [{"role": "user", "content": "héllo wörld"}]}'.encode()
    )
    assert r.prompt_tokens == 4  # 13 UTF-8 bytes / 4, rounded up


def test_malformed_tags() -> None:
    with pytest.raises(BadRequest):
        parse_tags("a=1,broken")


def test_cost_is_exact_and_unknown_is_none() -> None:
    price = Price(
        input_per_mtok=Decimal("2.50"),
        cached_input_per_mtok=Decimal("1.25"),
        output_per_mtok=Decimal("10"),
    )
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=200,
        total_tokens=1200,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=400),
    )
    assert cost_usd(usage, price) == Decimal("0.004")  # (600*2.5 + 400*1.25 + 200*10) / 1e6
    assert cost_usd(None, price) is None
    assert cost_usd(usage, None) is None


def test_cache_writes_are_priced_at_their_own_rate() -> None:
    """Anthropic's shape, translated: prompt tokens include cache reads and cache writes."""
    price = Price(
        input_per_mtok=Decimal("3"),
        cached_input_per_mtok=Decimal("0.30"),
        cache_write_per_mtok=Decimal("3.75"),
        output_per_mtok=Decimal("15"),
    )
    details = PromptTokensDetails(cached_tokens=2000, cache_write_tokens=1000)
    usage = Usage(prompt_tokens=3100, completion_tokens=100, prompt_tokens_details=details)
    # (100*3 + 2000*0.30 + 1000*3.75 + 100*15) / 1e6
    assert cost_usd(usage, price) == Decimal("0.00615")
    unpriced_writes = Price(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    assert cost_usd(usage, unpriced_writes) == Decimal("0.0108")  # every prompt token at 3
