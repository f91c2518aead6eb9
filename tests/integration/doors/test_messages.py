"""The Anthropic Messages door through a running gateway, with the official anthropic SDK.

What the fake upstream received is the translation test: the Messages request as a Chat
Completions one (roles, system text, tools, stop, max_tokens). Streams are also read raw and
checked against Anthropic's event grammar and the SDK's event types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.unit.wire.test_anthropic import check_grammar, check_sdk_types, parse_sse

USER = [{"role": "user", "content": "hello there"}]
TOOL = {
    "name": "lookup",
    "description": "Looks a word up.",
    "input_schema": {"type": "object", "properties": {"echo": {"type": "string"}}},
}


def raw_stream(gateway: Gateway, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    """The SSE events of a streamed request, read without the SDK."""
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": TENANT_KEY, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    return response, parse_sse(response.content)


def test_a_message_is_translated_there_and_back(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    raw = anthropic_client.messages.with_raw_response.create(
        model="auto",
        max_tokens=100,
        system="Be brief.",
        messages=USER,  # type: ignore[arg-type]
        metadata={"user_id": "u-7"},
        # Sampling fields left this SDK's signature; clients still send them.
        extra_body={"temperature": 0.2, "top_k": 5},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id == "msg_" + raw.headers["x-gateway-request-id"].removeprefix("req_")
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "primary says: hello there")
    ]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 4)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-model"] == "main"
    assert raw.headers["x-gateway-route"] == "default"
    assert raw.headers["x-gateway-cost-usd"] == "0.00005"  # 4 x $2.50/M + 4 x $10/M
    sent = primary.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    assert sent["max_tokens"] == 100 and sent["temperature"] == 0.2 and sent["top_k"] == 5
    assert sent["user"] == "u-7" and sent["model"] == "upstream-main"
    assert "x-api-key" not in primary.requests[-1].headers
    assert primary.requests[-1].headers["authorization"] == "Bearer sk-upstream-secret"
    record = gateway.records(1)[0]
    assert (record.input_tokens, record.output_tokens) == (4, 4)
    assert record.cost_usd == Decimal("0.00005") and record.model == "main"


def test_a_stream_in_anthropics_events(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    with anthropic_client.messages.stream(
        model="auto",
        max_tokens=100,
        system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        messages=USER,  # type: ignore[arg-type]
    ) as stream:
        assert stream.response.headers["x-gateway-model"] == "main"
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "primary says: hello there"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens > 0
    sent = primary.requests[-1].body
    assert sent["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
    }
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    record = gateway.records(1)[0]
    assert record.stream and record.output_tokens == 4 and record.cost_usd is not None

    response, events = raw_stream(
        gateway, {"model": "auto", "max_tokens": 100, "messages": USER, "stop_sequences": ["x"]}
    )
    assert response.headers["x-gateway-request-id"].startswith("req_")
    check_grammar(events)
    check_sdk_types(events)


def test_a_tool_round_trip(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    first = anthropic_client.messages.create(
        model="auto",
        max_tokens=100,
        messages=[{"role": "user", "content": "ink"}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "lookup"},
    )
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.name == "lookup" and call.input == {"echo": "ink"}
    sent = primary.requests[-1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": TOOL["input_schema"],
                "description": "Looks a word up.",
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}

    # The same call streamed: the input_json_delta pieces make the same input.
    with anthropic_client.messages.stream(
        model="auto",
        max_tokens=100,
        messages=[{"role": "user", "content": "ink"}],
        tools=[TOOL],  # type: ignore[list-item]
    ) as stream:
        partial = "".join(
            e.delta.partial_json
            for e in stream
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        )
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert streamed.content[0].type == "tool_use" and streamed.content[0].input == call.input
    assert json.loads(partial) == call.input

    second = anthropic_client.messages.create(
        model="auto",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "ink"},
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "black"}],
            },
        ],
        tools=[TOOL],  # type: ignore[list-item]
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "primary got the tool's result: black"
    history = primary.requests[-1].body["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["id"] == call.id == history[2]["tool_call_id"]
    assert history[1]["tool_calls"][0]["function"] == {
        "name": "lookup",
        "arguments": '{"echo":"ink"}',
    }


def test_stop_sequences_and_max_tokens(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    stopped = anthropic_client.messages.create(
        model="auto",
        max_tokens=100,
        messages=[{"role": "user", "content": "one two three"}],
        stop_sequences=["two"],
    )
    assert primary.requests[-1].body["stop"] == ["two"]
    assert stopped.content[0].type == "text" and stopped.content[0].text == "primary says: one "
    # OpenAI's wire does not say which stop string matched (vLLM's stop_reason would), so
    # the gateway cannot tell it from the model's own end: end_turn, honestly.
    assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)

    cut = anthropic_client.messages.create(
        model="auto", max_tokens=2, messages=[{"role": "user", "content": "a b c d"}]
    )
    assert primary.requests[-1].body["max_tokens"] == 2
    assert cut.stop_reason == "max_tokens"
    with anthropic_client.messages.stream(
        model="auto", max_tokens=2, messages=[{"role": "user", "content": "a b c d e"}]
    ) as stream:
        assert stream.get_final_message().stop_reason == "max_tokens"


def test_count_tokens_counts_system_and_tools_and_calls_no_model(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    plain = anthropic_client.messages.with_raw_response.count_tokens(model="auto", messages=USER)  # type: ignore[arg-type]
    assert plain.headers["x-gateway-token-count"] == "estimate"
    base = plain.parse().input_tokens
    assert base == 3  # 11 bytes of text / 4, rounded up
    more = anthropic_client.messages.count_tokens(
        model="main",
        messages=USER,  # type: ignore[arg-type]
        system="A system prompt of some length.",
        tools=[TOOL],  # type: ignore[list-item]
        extra_query={"beta": "true"},
    )
    assert more.input_tokens > base + 20
    assert primary.requests == []
    assert gateway.records(1, timeout_s=0.3) == []
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.count_tokens(model="nope", messages=USER)  # type: ignore[arg-type]
    refused = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens?beta=true",
        json={"model": "auto", "messages": USER},
        headers={"x-api-key": "sk-wrong-key-0000000000"},
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"


def test_keys_errors_and_their_shape(gateway: Gateway) -> None:
    for headers in ({}, {"x-api-key": "sk-wrong-key-0000000000"}):
        response = httpx.post(
            f"{gateway.url}/v1/messages",
            json={"model": "auto", "max_tokens": 5, "messages": USER},
            headers=headers,
        )
        assert response.status_code == 401
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "authentication_error"
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-wrong-0000", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError),
    ):
        bad.messages.create(model="auto", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    # x-api-key, as Claude Code sends it, and Bearer both authenticate.
    for headers in ({"x-api-key": TENANT_KEY}, {"authorization": f"Bearer {TENANT_KEY}"}):
        ok = httpx.post(
            f"{gateway.url}/v1/messages",
            json={"model": "auto", "max_tokens": 5, "messages": USER},
            headers={**headers, "anthropic-version": "2023-06-01", "anthropic-beta": "x-1"},
        )
        assert ok.status_code == 200 and ok.json()["type"] == "message"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"model": "auto", "messages": USER}, "max_tokens"),
        ({"model": "auto", "max_tokens": 5, "messages": USER, "container": "c"}, "container"),
        (
            {
                "model": "auto",
                "max_tokens": 5,
                "messages": USER,
                "thinking": {"type": "enabled", "budget_tokens": 1024},
            },
            "thinking",
        ),
    ],
)
def test_a_bad_body_is_a_bad_request_in_anthropics_shape(
    anthropic_client: anthropic.Anthropic, primary: FakeUpstream, body: dict[str, Any], named: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_client.post("/v1/messages", body=body, cast_to=anthropic.types.Message)
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert named in info.value.body["error"]["message"]
    assert primary.requests == []


def test_upstream_failures_after_retries_raise_the_sdks_exceptions(
    anthropic_client: anthropic.Anthropic, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(*[Fault(status=503)] * 3)
    backup.script(*[Fault(status=503)] * 2)
    with pytest.raises(anthropic.ServiceUnavailableError) as unavailable:
        anthropic_client.messages.create(model="auto", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert unavailable.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    primary.script(*[Fault(status=529)] * 3)
    backup.script(*[Fault(status=529)] * 2)
    with pytest.raises(anthropic.InternalServerError) as failed:
        anthropic_client.messages.create(model="auto", max_tokens=5, messages=USER)  # type: ignore[arg-type]
    assert failed.value.status_code == 502
    assert len(primary.requests) == 6 and len(backup.requests) == 4


def test_a_stream_that_breaks_ends_with_an_error_event(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    primary.script(Fault(drop_after_chunks=3))
    with (
        pytest.raises(anthropic.APIStatusError) as info,
        anthropic_client.messages.stream(
            model="auto", max_tokens=100, messages=[{"role": "user", "content": "a b c d e"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    primary.script(Fault(drop_after_chunks=3))
    _, events = raw_stream(gateway, {"model": "auto", "max_tokens": 100, "messages": USER})
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"] == "api_error"
    check_grammar(events)
    assert gateway.records(2)[-1].status == 502


def test_a_cache_hit_is_replayed_in_anthropics_format(
    gateway: Gateway, anthropic_client: anthropic.Anthropic, primary: FakeUpstream
) -> None:
    ask = {
        "model": "auto",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "cache me"}],
    }
    first = anthropic_client.messages.create(**ask)  # type: ignore[arg-type]
    second = _until_hit(lambda: anthropic_client.messages.with_raw_response.create(**ask))  # type: ignore[arg-type]
    assert second.headers["x-gateway-route"] == "cache"
    assert second.headers["x-gateway-cost-usd"] == "0"
    hit = second.parse()
    assert hit.content == first.content and hit.usage == first.usage
    assert hit.stop_reason == "end_turn" and hit.id != first.id
    with anthropic_client.messages.stream(**ask) as stream:  # type: ignore[arg-type]
        assert stream.response.headers["x-gateway-cache"] == "exact"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == first.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == first.usage.output_tokens
    response, events = raw_stream(gateway, ask)
    assert response.headers["x-gateway-cache"] == "exact"
    check_grammar(events)
    check_sdk_types(events)
    assert len(primary.requests) == 1


def _until_hit(call: Callable[[], Any]) -> Any:
    """The answer once the cache has stored the first (it stores after the response)."""
    deadline = time.monotonic() + 5
    while True:
        raw = call()
        if raw.headers["x-gateway-cache"] == "exact" or time.monotonic() > deadline:
            assert raw.headers["x-gateway-cache"] == "exact"
            return raw
        time.sleep(0.05)


def test_the_policy_tokenizer_counts_exactly(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    pytest.importorskip("transformers")
    from local_engine import models

    cache_dir = request.config.cache.mkdir("local-engine-models")
    tokenizer_dir = models.local_path(models.resolve("smollm2-135m-instruct"), cache_dir)
    text = policy_text(primary, backup).replace(
        "model: upstream-main", f'model: upstream-main\n    tokenizer: "{tokenizer_dir}"'
    )
    gw = start_gateway(text)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEY, max_retries=0) as sdk:
        raw = sdk.messages.with_raw_response.count_tokens(
            model="main",
            system="Be brief.",
            messages=USER,  # type: ignore[arg-type]
        )
        with_tools = sdk.messages.count_tokens(
            model="main",
            system="Be brief.",
            messages=USER,
            tools=[TOOL],  # type: ignore[arg-type,list-item]
        )
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    assert raw.headers["x-gateway-token-count"] == "tokenizer"
    assert raw.parse().input_tokens == len(expected)
    assert with_tools.input_tokens > len(expected) + 20


@pytest.mark.model
def test_the_local_engine_answers_through_the_messages_door(local_gateway: Gateway) -> None:
    gw = local_gateway
    ask: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 8,
        "system": "Answer in one word.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "extra_body": {"temperature": 0},
    }
    with anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0) as sdk:
        raw = sdk.messages.with_raw_response.create(**ask)
        message = raw.parse()
        with sdk.messages.stream(**ask, extra_headers={"cache-control": "no-cache"}) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        counted = sdk.messages.with_raw_response.count_tokens(
            model="local-small", system=ask["system"], messages=ask["messages"]
        )
        # auto: every rule sends to local-small, so its tokenizer counts exactly too
        counted_auto = sdk.messages.count_tokens(
            system=ask["system"], messages=ask["messages"], model="auto"
        )
    assert raw.headers["x-gateway-model"] == "local-small"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    prompt = _prompt_tokens(message.usage)
    assert 0 < message.usage.output_tokens <= 8 and prompt > 5
    assert streamed == message.content[0].text  # greedy: the same answer
    # the same prompt again: the engine may serve part of it from its prefix cache, which
    # Anthropic's usage reports apart (cache_read_input_tokens), out of input_tokens
    assert final.stop_reason == message.stop_reason
    assert (_prompt_tokens(final.usage), final.usage.output_tokens) == (
        prompt,
        message.usage.output_tokens,
    )
    records = gw.records(2)
    assert {r.output_tokens for r in records} == {message.usage.output_tokens}
    assert {r.input_tokens for r in records} == {prompt}
    # count_tokens: the engine's own tokenizer, through its chat template, as the engine counts.
    assert counted.headers["x-gateway-token-count"] == "tokenizer"
    assert counted.parse().input_tokens == prompt == counted_auto.input_tokens


def _prompt_tokens(usage: anthropic.types.Usage) -> int:
    """Every prompt token of an Anthropic usage: fresh, read from a cache, written to one."""
    cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    return usage.input_tokens + cached


def test_count_tokens_names_only_chat_models(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    embed = f"""models:
  embed:
    provider: openai_compatible
    base_url: {primary.base_url}
    model: upstream-embed
    kind: embeddings
"""
    gw = start_gateway(policy_text(primary, backup).replace("models:\n", embed, 1))
    with anthropic.Anthropic(base_url=gw.url, api_key=TENANT_KEY, max_retries=0) as sdk:
        with pytest.raises(anthropic.NotFoundError) as info:
            sdk.messages.count_tokens(model="embed", messages=USER)  # type: ignore[arg-type]
        assert "['backup', 'main']" in info.value.message
        assert sdk.messages.count_tokens(model="main", messages=USER).input_tokens == 3  # type: ignore[arg-type]
