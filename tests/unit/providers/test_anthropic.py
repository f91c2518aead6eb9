"""The chat <-> Messages translation (gateway/wire/anthropic_upstream.py) and the Anthropic
provider's failures, against the recorded stream format and the fake Messages API."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.anthropic import Anthropic, _translated
from gateway.providers.sse import DataLines
from gateway.wire.anthropic_upstream import (
    DEFAULT_MAX_TOKENS,
    ChunkTranslator,
    Unsupported,
    completion,
    messages_body,
)
from tests.fakes.anthropic import KEY, FakeAnthropic, Script
from tests.servers import free_port

RECORDED = (Path(__file__).parent / "fixtures" / "anthropic_tool_use.sse").read_bytes()
USER = {"role": "user", "content": "hi"}


def test_a_conversation_becomes_alternating_turns() -> None:
    call = {"id": "call 1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    body = messages_body(
        {
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": " ", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call 1", "content": "r1"},
                {"role": "tool", "tool_call_id": "call 1", "content": ""},
                {"role": "user", "content": "and?"},
            ]
        }
    )
    rewritten = body["messages"][1]["content"][0]["id"]
    assert rewritten.startswith("toolu_") and rewritten != "call 1"  # a space is not allowed
    assert body == {
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": rewritten, "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": rewritten, "content": "r1"},
                    {"type": "tool_result", "tool_use_id": rewritten},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    }


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        ({"max_tokens": 10, "max_completion_tokens": 20}, {"max_tokens": 20}),
        ({"max_tokens": 10}, {"max_tokens": 10}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
        ({"temperature": 0.2, "top_p": 0.9, "seed": 3}, {"temperature": 0.2, "top_p": 0.9}),
        ({"stream": True, "stream_options": {"include_usage": True}}, {"stream": True}),
        ({"tool_choice": "required"}, {"tool_choice": {"type": "any"}}),
        ({"tool_choice": "none"}, {"tool_choice": {"type": "none"}}),
        ({"tool_choice": "auto"}, {"tool_choice": {"type": "auto"}}),
        (
            {"tool_choice": {"type": "function", "function": {"name": "f"}}},
            {"tool_choice": {"type": "tool", "name": "f"}},
        ),
        (
            {"parallel_tool_calls": False},
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
    ],
)
def test_request_fields(chat: dict[str, Any], expected: dict[str, Any]) -> None:
    body = messages_body({"messages": [USER], **chat})
    body.pop("messages")
    assert body == {"max_tokens": DEFAULT_MAX_TOKENS} | expected


def test_tools_images_and_cache_marks() -> None:
    mark = {"type": "ephemeral"}
    function = {"name": "f", "description": "d", "parameters": {}}
    tool = {"type": "function", "function": function, "cache_control": mark}
    parts = [
        {"type": "text", "text": "look", "cache_control": mark},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
    ]
    body = messages_body({"messages": [{"role": "user", "content": parts}], "tools": [tool]})
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object"}, "cache_control": mark}
    ]
    assert body["messages"][0]["content"][0] == {
        "type": "text",
        "text": "look",
        "cache_control": mark,
    }
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]


@pytest.mark.parametrize(
    ("chat", "named"),
    [
        ({"n": 2}, "'n'"),
        ({"logprobs": True}, "'logprobs'"),
        ({"response_format": {"type": "json_schema"}}, "'response_format'"),
        ({"modalities": ["text", "audio"]}, "'audio'"),
        ({"prediction": {"type": "content"}}, "'prediction'"),
        ({"messages": [{"role": "function", "content": "x"}]}, "'messages[0].role'"),
    ],
)
def test_what_messages_cannot_take_is_refused_by_name(chat: dict[str, Any], named: str) -> None:
    with pytest.raises(Unsupported, match=re.escape(named)):
        messages_body({"messages": [USER], **chat})


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_a_message_becomes_a_completion(stop_reason: str, finish: str) -> None:
    message = {
        "id": "msg_1",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": stop_reason,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 30,
            "output_tokens": 5,
        },
    }
    answer = completion(message)
    said = answer["choices"][0]["message"]
    assert (said["content"], said["reasoning_content"]) == ("Hi", "hmm")
    assert said["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert answer["choices"][0]["finish_reason"] == finish
    assert answer["usage"] == {
        "prompt_tokens": 60,
        "completion_tokens": 5,
        "total_tokens": 65,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 20},
    }


def _split(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [1, 7, 64, len(RECORDED)])
def test_a_recorded_stream_becomes_chunks_whatever_the_reads(size: int) -> None:
    lines, events = DataLines(), ChunkTranslator()
    chunks = [
        json.loads(payload)
        for data in _split(RECORDED, size)
        for payload in _translated(events, lines.feed(data))
    ]
    assert events.done
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Okay, let's check the weather."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert {c["index"] for c in calls} == {0}  # block 1 is the first tool call
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 1672,
        "completion_tokens": 89,
        "total_tokens": 1761,
        "prompt_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 0},
    }
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}


def test_an_error_event_fails_with_the_status_of_its_type() -> None:
    events = ChunkTranslator()
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(AttemptFailed) as caught:
        _translated(events, [b'{"type":"ping"}', msgspec.json.encode(error)])
    assert caught.value.status == 529 and caught.value.retryable
    with pytest.raises(AttemptFailed, match="unreadable") as garbled:
        _translated(events, [b"{not json"])
    assert garbled.value.kind == "protocol"


# ---------------------------------------------------------------- against the fake Messages API


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


def _provider(fake: FakeAnthropic, key: str = KEY, base_url: str | None = None) -> Anthropic:
    return Anthropic(
        ModelConfig.model_validate(
            {
                "provider": "anthropic",
                "base_url": base_url or fake.base_url,
                "model": "claude-x",
                "api_key": key,
                "timeouts": {"connect_s": 1, "first_token_s": 0.6, "total_s": 0.8},
            }
        )
    )


@pytest.mark.parametrize(
    ("script", "status", "retry_after", "retryable"),
    [
        (Script(status=529), 529, None, True),
        (Script(status=429, retry_after="7"), 429, 7.0, True),
        (Script(status=400), 400, None, False),
    ],
)
async def test_error_statuses(
    fake: FakeAnthropic, script: Script, status: int, retry_after: float | None, retryable: bool
) -> None:
    fake.script(script)
    provider = _provider(fake)
    try:
        with pytest.raises(AttemptFailed) as caught:
            await provider.complete({"messages": [USER]})
    finally:
        await provider.aclose()
    failed = caught.value
    assert (failed.kind, failed.status, failed.retry_after) == ("status", status, retry_after)
    assert failed.retryable is retryable and failed.clients_fault is (status == 400)
    assert failed.body is not None and failed.body["error"]["message"] == "injected"


async def test_a_wrong_key_is_a_401_and_a_refused_field_a_400(fake: FakeAnthropic) -> None:
    provider = _provider(fake, key="sk-wrong")
    try:
        with pytest.raises(AttemptFailed) as caught:
            await provider.complete({"messages": [USER]})
        assert caught.value.status == 401 and not caught.value.clients_fault
        with pytest.raises(AttemptFailed) as refused:
            await provider.complete({"messages": [USER], "n": 3})
        assert refused.value.status == 400 and refused.value.clients_fault
    finally:
        await provider.aclose()


async def test_an_error_event_after_the_start_breaks_the_stream(fake: FakeAnthropic) -> None:
    fake.script(Script(error_after_events=4))
    provider = _provider(fake)
    stream = provider.stream({"messages": [USER], "stream": True})
    try:
        first = await anext(stream)
        assert json.loads(first[0])["choices"][0]["delta"]["role"] == "assistant"
        with pytest.raises(AttemptFailed) as caught:
            while True:
                await anext(stream)
        assert caught.value.status == 529 and caught.value.retryable
    finally:
        await stream.aclose()
        await provider.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_timeouts_and_connection_failures_are_retryable(
    fake: FakeAnthropic, stream: bool
) -> None:
    """A slow head fails the stream at first_token_s and the whole answer at total_s."""
    fake.reset()
    fake.script(Script(delay_s=1.0))
    provider = _provider(fake)
    closed = _provider(fake, base_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(AttemptFailed) as slow:
            if stream:
                await anext(provider.stream({"messages": [USER]}))
            else:
                await provider.complete({"messages": [USER]})
        assert slow.value.kind == "timeout" and slow.value.retryable
        with pytest.raises(AttemptFailed) as refused:
            await closed.complete({"messages": [USER]})
        assert refused.value.kind == "connect" and refused.value.retryable
    finally:
        await provider.aclose()
        await closed.aclose()
