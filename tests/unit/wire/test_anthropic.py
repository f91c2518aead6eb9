"""The Messages translation, pure: requests to chat bodies, answers and chunks back.

The stream tests translate the fake upstream's own chunks for a request and check the events
three ways: Anthropic's SSE grammar (`check_grammar`), the anthropic SDK's event types, and the
SDK's stream accumulator, whose final Message must equal the non-streamed translation.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.errors import BadRequest, GatewayError
from gateway.wire import anthropic, anthropic_output
from tests import fake_upstream

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
BASE = {"model": "auto", "max_tokens": 50}


def chat(**fields: Any) -> dict[str, Any]:
    return anthropic.chat_body({**BASE, **fields})


# ------------------------------------------------------------------------------ requests


def test_a_plain_request() -> None:
    body = chat(
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
        stop_sequences=["END"],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "u-1", "other": "dropped"},
        service_tier="auto",
    )
    assert body == {
        "model": "auto",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "stop": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "user": "u-1",
    }


def test_system_blocks_stay_separate_parts_and_hints_are_dropped() -> None:
    body = chat(
        system=[
            {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Two."},
        ],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        cache_control={"type": "ephemeral"},
    )
    assert body["messages"] == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        },
        {"role": "user", "content": "hi"},
    ]


def test_a_stream_asks_for_usage() -> None:
    body = chat(messages=[{"role": "user", "content": "hi"}], stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_tool_history_with_parallel_calls_keeps_ids_and_order() -> None:
    body = chat(
        tools=[
            {"name": "get", "description": "Gets.", "input_schema": {"type": "object"}},
            {
                "name": "put",
                "input_schema": {"type": "object"},
                "cache_control": {"type": "ephemeral"},
                "strict": True,
            },
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "do both"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get", "input": {"k": 1}},
                    {"type": "tool_use", "id": "functions.put:1", "name": "put", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "one"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "functions.put:1",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "no"},
                            {"type": "text", "text": "way"},
                        ],
                    },
                    {"type": "text", "text": "and now?"},
                ],
            },
        ],
    )
    rewritten = anthropic.tool_id("functions.put:1")
    assert rewritten.startswith("toolu_") and rewritten == anthropic.tool_id("functions.put:1")
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get", "parameters": {"type": "object"}, "description": "Gets."},
        },
        {
            "type": "function",
            "function": {"name": "put", "parameters": {"type": "object"}, "strict": True},
        },
    ]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "get", "arguments": '{"k":1}'},
                },
                {
                    "id": rewritten,
                    "type": "function",
                    "function": {"name": "put", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "one"},
        {"role": "tool", "tool_call_id": rewritten, "content": "Error: no\nway"},
        {"role": "user", "content": "and now?"},
    ]


def test_images_become_image_url_parts() -> None:
    body = chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA="},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {"type": "text", "text": "what?"},
                ],
            }
        ]
    )
    assert body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        {"type": "text", "text": "what?"},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get"}, {"type": "function", "function": {"name": "get"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    tools = [{"name": "get", "input_schema": {"type": "object"}}]
    body = chat(messages=[{"role": "user", "content": "x"}], tools=tools, tool_choice=choice)
    assert body["tool_choice"] == expected and "parallel_tool_calls" not in body


def test_an_assistant_turn_of_thinking_alone_is_empty_text() -> None:
    body = chat(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            {"role": "user", "content": "b"},
        ],
        thinking={"type": "disabled"},
    )
    assert body["messages"][1] == {"role": "assistant", "content": ""}


USER = [{"role": "user", "content": "hi"}]


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": USER, "max_tokens": None}, "max_tokens"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": USER, "mcp_servers": []}, "mcp_servers"),
        ({"messages": USER, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
        (
            {"messages": USER, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            "tools[0]",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "u"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        # Claude Code with many MCP servers (PITFALLS 1.12): too many tools, too long a name.
        ({"messages": USER, "tools": [_tool(f"mcp__{i:03}") for i in range(150)]}, "tools"),
        ({"messages": USER, "tools": [_tool("mcp__" + "x" * 75)]}, "tools[0].name"),
        ({"messages": USER, "tools": [_tool("functions.Bash")]}, "tools[0].name"),
    ],
)
def test_what_cannot_be_expressed_is_refused_by_name(fields: dict[str, Any], param: str) -> None:
    body = {**BASE, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(BadRequest) as info:
        anthropic.chat_body(body)
    assert (info.value.param or "").startswith(param), info.value.message
    assert param in info.value.message


def test_count_tokens_needs_no_max_tokens() -> None:
    body = anthropic.chat_body({"model": "auto", "messages": USER, "stream": True}, counting=True)
    assert "max_tokens" not in body and "stream" not in body


# --------------------------------------------------------------------- the two vocabularies


@pytest.mark.parametrize(
    ("finish", "tool", "matched", "expected"),
    [
        ("stop", False, None, ("end_turn", None)),
        ("stop", False, "END", ("stop_sequence", "END")),
        ("stop", False, "OTHER", ("end_turn", None)),  # not one of the request's
        ("stop", False, 128001, ("end_turn", None)),  # vLLM: a stop token's id
        ("length", False, None, ("max_tokens", None)),
        ("length", True, None, ("max_tokens", None)),  # a cut call is not a call
        ("tool_calls", True, None, ("tool_use", None)),
        ("tool_calls", False, None, ("end_turn", None)),  # no tool block was emitted
        ("stop", True, None, ("tool_use", None)),  # servers that say stop after a call
        ("content_filter", False, None, ("refusal", None)),
        (None, False, None, ("end_turn", None)),
    ],
)
def test_stop_reason(
    finish: str | None, tool: bool, matched: Any, expected: tuple[str, str | None]
) -> None:
    assert (
        anthropic_output.stop_reason(finish, tool_emitted=tool, matched=matched, stops=["END"])
        == expected
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
    ],
)
def test_finish_reason(reason: str, finish: str) -> None:
    assert anthropic_output.finish_reason(reason) == finish


def test_usage_both_shapes_keep_the_total() -> None:
    plain = anthropic_output.usage(100, 7, None)
    assert plain == {"input_tokens": 100, "output_tokens": 7}
    cached = anthropic_output.usage(100, 7, 60)
    assert cached == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    total = (
        cached["input_tokens"]
        + cached["cache_creation_input_tokens"]
        + cached["cache_read_input_tokens"]
    )
    assert total == 100
    back = anthropic_output.chat_usage(
        {
            "input_tokens": 40,
            "cache_creation_input_tokens": 25,
            "cache_read_input_tokens": 60,
            "output_tokens": 7,
        }
    )
    assert back == {
        "prompt_tokens": 125,
        "completion_tokens": 7,
        "total_tokens": 132,
        "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 25},
    }
    assert (
        anthropic_output.chat_usage({"input_tokens": 3, "output_tokens": 2})["prompt_tokens"] == 3
    )


# ------------------------------------------------------------------------------- answers

TOOLS_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "call it"}],
    "tools": [{"type": "function", "function": {"name": "echo", "parameters": {}}}],
}
TEXT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there friend"}]}


def _message(body: dict[str, Any], **answer: Any) -> dict[str, Any]:
    completion = fake_upstream.completion("up", body) | answer
    return anthropic_output.message(json.dumps(completion).encode(), "msg_1", ["END"])


def test_a_text_answer() -> None:
    message = _message(TEXT_BODY)
    Message.model_validate(message)
    assert message["content"] == [{"type": "text", "text": "up says: hello there friend"}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 5}
    assert message["id"] == "msg_1" and message["model"] == "m"


def test_a_tool_answer() -> None:
    message = _message(TOOLS_BODY)
    Message.model_validate(message)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_fake0001", "name": "echo", "input": {"echo": "call it"}}
    ]
    assert message["stop_reason"] == "tool_use"


def test_cached_prompt_tokens_are_read_tokens() -> None:
    details = {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "prompt_tokens_details": {"cached_tokens": 8},
    }
    message = _message(TEXT_BODY, usage=details)
    assert (
        message["usage"]["input_tokens"] == 2 and message["usage"]["cache_read_input_tokens"] == 8
    )


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    completion = fake_upstream.completion("up", TEXT_BODY)
    completion["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "No."}
    message = anthropic_output.message(json.dumps(completion).encode(), "msg_1", [])
    assert message["content"] == [{"type": "text", "text": "No."}]
    assert message["stop_reason"] == "refusal"


def test_vllm_names_the_stop_string() -> None:
    completion = fake_upstream.completion("up", TEXT_BODY)
    completion["choices"][0]["stop_reason"] = "END"
    message = anthropic_output.message(json.dumps(completion).encode(), "msg_1", ["END"])
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]"])
def test_tool_arguments_that_are_no_object_are_a_502(arguments: str) -> None:
    completion = fake_upstream.completion("up", TOOLS_BODY)
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = arguments
    with pytest.raises(GatewayError) as info:
        anthropic_output.message(json.dumps(completion).encode(), "msg_1", [])
    assert info.value.status_code == 502


def test_an_unreadable_answer_is_a_502() -> None:
    with pytest.raises(GatewayError) as info:
        anthropic_output.message(b"{}", "msg_1", [])
    assert info.value.status_code == 502


# -------------------------------------------------------------------------------- streams


def parse_sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of an SSE body as Anthropic frames it."""
    events = []
    for frame in data.decode().split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def check_grammar(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Anthropic's event grammar: message_start first; each block started, given deltas of
    its own kind, stopped, with indices from 0 and no gaps; one message_delta once every
    block is stopped; message_stop last (or an error event ends it)."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" or names == ["error"], names
    assert names[-1] in ("message_stop", "error"), names
    assert "error" not in names[:-1], names
    open_block: dict[str, Any] | None = None
    next_index, deltas_seen = 0, 0
    for name, data in events:
        assert data["type"] == name
        if name == "content_block_start":
            assert open_block is None and data["index"] == next_index, (data, next_index)
            open_block = data["content_block"]
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == next_index
            kind = {"text": "text_delta", "tool_use": "input_json_delta"}[open_block["type"]]
            assert data["delta"]["type"] == kind
        elif name == "content_block_stop":
            assert open_block is not None and data["index"] == next_index
            open_block, next_index = None, next_index + 1
        elif name == "message_delta":
            assert open_block is None
            deltas_seen += 1
    assert deltas_seen == (1 if names[-1] == "message_stop" else deltas_seen)
    if names[-1] == "message_stop":
        assert names[-2] == "message_delta"


def check_sdk_types(events: list[tuple[str, dict[str, Any]]]) -> None:
    """Every event validates as the SDK's own type (ping and error are not stream events)."""
    for name, data in events:
        if name not in ("ping", "error"):
            EVENTS.validate_python(data)


def accumulated(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The Message the SDK's stream accumulator builds from the events."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for name, data in events:
        if name in ("ping", "error"):
            continue
        snapshot = accumulate_event(
            event=EVENTS.validate_python(data), current_snapshot=snapshot, json_bufs=buffers
        )
    assert snapshot is not None
    return snapshot.to_dict(exclude_none=True)


def _translated(
    chunks: list[bytes], stops: list[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    translator = anthropic_output.StreamTranslator("msg_1", stops or [])
    out = b"".join(translator.feed(c) for c in chunks) + translator.finish()
    return parse_sse(out)


def _upstream_chunks(body: dict[str, Any]) -> list[bytes]:
    """The fake upstream's stream for ``body``, as the pipeline passes it (data payloads)."""
    frames = fake_upstream.chunks("up", {**body, "stream_options": {"include_usage": True}})
    return [f.removeprefix(b"data: ").strip() for f in frames if f != b"data: [DONE]\n\n"]


@pytest.mark.parametrize("body", [TEXT_BODY, TOOLS_BODY, {**TEXT_BODY, "max_tokens": 2}])
def test_a_stream_accumulates_to_the_non_streamed_message(body: dict[str, Any]) -> None:
    events = _translated(_upstream_chunks(body))
    check_grammar(events)
    check_sdk_types(events)
    assert [n for n, _ in events][:2] == ["message_start", "ping"]
    streamed = accumulated(events)
    whole = _message(body)
    assert streamed["content"] == whole["content"]
    assert streamed["stop_reason"] == whole["stop_reason"]
    assert streamed["usage"] == whole["usage"]


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return msgspec.json.encode({"model": "m", "choices": choices, **extra})


def test_text_then_parallel_calls_make_three_blocks() -> None:
    chunks = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Let me "}),
        _chunk({"content": "look."}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "function": {"name": "get", "arguments": ""}}
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "function": {"name": "put", "arguments": "{}"}}
                ]
            }
        ),
        _chunk({}, "tool_calls"),
        _chunk(
            usage={
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "prompt_tokens_details": {"cached_tokens": 5},
            }
        ),
    ]
    events = _translated(chunks)
    check_grammar(events)
    check_sdk_types(events)
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["index"] == 1
    )
    assert json.loads(partial) == {"q": "x"}
    message = accumulated(events)
    assert [b["type"] for b in message["content"]] == ["text", "tool_use", "tool_use"]
    assert message["content"][1]["input"] == {"q": "x"} and message["content"][2]["input"] == {}
    assert message["stop_reason"] == "tool_use"
    final = events[-2][1]
    assert final["usage"] == {
        "input_tokens": 4,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
    }


def test_a_stream_with_no_chunks_still_has_its_frame() -> None:
    events = _translated([])
    check_grammar(events)
    check_sdk_types(events)
    assert [n for n, _ in events] == ["message_start", "ping", "message_delta", "message_stop"]


def test_a_length_stop_during_a_call_is_max_tokens_and_vllm_stop_strings_count() -> None:
    cut = _translated(
        [
            _chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": "n", "arguments": "{"}}
                    ]
                }
            ),
            _chunk({}, "length"),
        ]
    )
    assert cut[-2][1]["delta"]["stop_reason"] == "max_tokens"
    stopped = _translated(
        [
            _chunk({"content": "hi"}),
            _chunk(
                {},
                "stop",
            ),
        ],
        ["END"],
    )
    assert stopped[-2][1]["delta"]["stop_reason"] == "end_turn"
    vllm = [
        _chunk({"content": "hi"}),
        msgspec.json.encode(
            {
                "model": "m",
                "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}
                ],
            }
        ),
    ]
    named = _translated(vllm, ["END"])
    assert named[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_the_grammar_check_catches_broken_streams() -> None:
    good = _translated([_chunk({"content": "hi"}), _chunk({}, "stop")])
    broken = [e for e in good if e[0] != "content_block_start"]
    with pytest.raises(AssertionError):
        check_grammar(broken)
    gap = [(n, {**d, "index": 1} if "index" in d else d) for n, d in good]
    with pytest.raises(AssertionError):
        check_grammar(gap)
