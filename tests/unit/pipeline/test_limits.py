"""The limits stage's pure half: max_tokens defaults and ceilings, and that the default it adds
is part of the exact cache's key."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.pipeline import exact_cache, limits, normalize
from gateway.pipeline.normalize import ChatRequest
from gateway.policy.limits import MaxTokens


def request(**fields: object) -> ChatRequest:
    body = {"model": "small", "messages": [{"role": "user", "content": "hi"}], **fields}
    return normalize.chat_request(
        normalize.msgspec.json.encode(body), request_id="r", tenant="t", tags_header=None
    )


def test_the_default_is_added_only_when_the_client_sends_no_length() -> None:
    rule = MaxTokens(default=256, ceiling=1024)
    assert limits.for_model(request(), "small", rule).body["max_tokens"] == 256
    sent = request(max_completion_tokens=100)
    assert limits.for_model(sent, "small", rule) is sent
    field = MaxTokens(default=256, field="max_completion_tokens")
    assert limits.for_model(request(), "small", field).body["max_completion_tokens"] == 256
    nothing = request()
    assert limits.for_model(nothing, "small", MaxTokens()) is nothing


def test_above_the_ceiling_reject_names_the_field_and_clamp_lowers_it() -> None:
    with pytest.raises(BadRequest) as caught:
        limits.for_model(request(max_completion_tokens=5000), "small", MaxTokens(ceiling=1024))
    assert caught.value.param == "max_completion_tokens"
    clamp = MaxTokens(ceiling=1024, above_ceiling="clamp")
    both = limits.for_model(request(max_tokens=5000, max_completion_tokens=10), "small", clamp)
    assert (both.body["max_tokens"], both.body["max_completion_tokens"]) == (1024, 10)


def test_the_applied_default_keys_the_exact_cache() -> None:
    def key_with(default: int) -> str:
        shaped = limits.for_model(request(), "small", MaxTokens(default=default))
        return exact_cache.key(shaped, "v1", "digest")

    assert key_with(256) != key_with(512)
    assert key_with(256) == exact_cache.key(request(max_tokens=256), "v1", "digest")
