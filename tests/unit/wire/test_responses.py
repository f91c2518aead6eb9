"""The Responses translation, both ways, without a server: requests into chat bodies, chat
answers and chunks into Responses and their events, each checked against the openai SDK's
types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.errors import BadRequest
from gateway.wire.responses import chat_body, input_messages, read_request
from gateway.wire.responses_output import Output, frame, usage

EVENT = TypeAdapter(ResponseStreamEvent)
RESPONSE = TypeAdapter(Response)


def _chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return chat_body(read_request({"model": "m", "input": "hi", **body}), history or [])


def test_settings_map_to_their_chat_fields() -> None:
    chat = _chat(
        {
            "instructions": "Be brief.",
            "max_output_tokens": 20,
            "temperature": 0.1,
            "top_p": 0.5,
            "user": "u",
            "service_tier": "flex",
            "safety_identifier": "s",
            "prompt_cache_key": "k",
            "metadata": {"a": "b"},
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "reasoning": {"effort": "high", "summary": "auto"},
            "truncation": "disabled",
            "store": False,
            "include": ["reasoning.encrypted_content"],
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "max_tokens": 20,
        "temperature": 0.1,
        "top_p": 0.5,
        "user": "u",
        "service_tier": "flex",
        "safety_identifier": "s",
        "prompt_cache_key": "k",
        "response_format": {"type": "json_object"},
        "verbosity": "low",
        "reasoning_effort": "high",
    }


def test_a_stream_asks_for_usage_and_history_comes_between_instructions_and_input() -> None:
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    chat = _chat({"stream": True, "instructions": "sys"}, history)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert [m["content"] for m in chat["messages"]] == ["sys", "a", "b", "hi"]


def test_function_tools_and_tool_choice() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": None}
    chat = _chat(
        {
            "tools": [tool],
            "tool_choice": {"type": "function", "name": "f"},
            "parallel_tool_calls": False,
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "strict": None},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    # Without tools, parallel_tool_calls means nothing (and chat would refuse it).
    assert "parallel_tool_calls" not in _chat({"parallel_tool_calls": True, "tools": []})


def test_items_become_messages_and_a_turns_calls_join_its_assistant_message() -> None:
    messages = input_messages(
        [
            {"role": "user", "content": "q"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "let me see"}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "c1",
                "name": "f",
                "arguments": "{}",
            },
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"x":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"},
            {"type": "function_call_output", "call_id": "c2", "output": "r2"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
            {
                "role": "assistant",
                "content": [
                    {"type": "refusal", "refusal": "no"},
                    {"type": "output_text", "text": "sorry"},
                ],
            },
        ]
    )
    assert messages == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "let me see",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"x":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": "r2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "no"}, {"type": "text", "text": "sorry"}],
        },
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"include": "x"}, "include"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "image_generation"}]}, "tools[0].type"),
        ({"tools": [{"type": "local_shell"}]}, "tools[0].type"),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "function", "name": "f", "defer_loading": True}]},
            "tools[0].defer_loading",
        ),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"text": "json"}, "text"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"truncation": "middle"}, "truncation"),
        ({"store": "yes"}, "store"),
        ({"input": None}, "input"),
        ({"input": 5}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": 3}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image", "image_url": "u"}],
                    }
                ]
            },
            "input[1].output",
        ),
    ],
)
def test_what_chat_cannot_carry_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    if param == "input[1].output":  # the output follows its call
        call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
        body = {"input": [call, *body["input"]]}
    with pytest.raises(BadRequest) as refused:
        read_request({"model": "m", "input": "hi", **body})
    assert refused.value.param == param


def _frame(**body: Any) -> dict[str, Any]:
    return frame(read_request({"model": "auto", "input": "hi", **body}), "resp_1", 1700000000)


def _completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "model": "upstream",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def test_a_completion_becomes_a_response() -> None:
    output = Output(
        _frame(metadata={"a": "b"}, tools=[{"type": "function", "name": "f"}]), events=False
    )
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    output.completion(
        _completion({"role": "assistant", "content": "ok", "tool_calls": [call]}, "tool_calls")
    )
    response = output.finish()
    RESPONSE.validate_python(response)
    assert output.take() == []
    assert response["status"] == "completed" and response["model"] == "upstream"
    message, function_call = response["output"]
    assert message["content"] == [
        {"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}
    ]
    assert (function_call["call_id"], function_call["arguments"]) == ("call_1", "{}")
    assert function_call["id"].startswith("fc_") and message["id"].startswith("msg_")
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    assert response["metadata"] == {"a": "b"} and response["tools"] == [
        {"type": "function", "name": "f"}
    ]
    # The output reads back as the next turn's history.
    assert input_messages(response["output"]) == [
        {"role": "assistant", "content": "ok", "tool_calls": [call]}
    ]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    output = Output(_frame(), events=False)
    output.completion(_completion({"role": "assistant", "content": "par"}, finish))
    response = output.finish()
    RESPONSE.validate_python(response)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete" and "completed_at" not in response


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"model": "upstream", "choices": choices, **extra}


def _events(output: Output) -> list[dict[str, Any]]:
    events = []
    for frame_bytes in output.take():
        head, data = frame_bytes.decode().rstrip("\n").split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        EVENT.validate_python(event)
        events.append(event)
    return events


def test_a_stream_of_text_refusal_and_calls_tells_each_item_in_order() -> None:
    output = Output(_frame(stream=True), events=True)
    for delta in (
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {"refusal": "no"},
        {
            "tool_calls": [
                {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"a"'}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}
            ]
        },
    ):
        output.chunk(_chunk(delta))
    output.chunk(_chunk({}, "tool_calls"))
    output.chunk(
        _chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    )
    output.finish()
    output.end()
    events = _events(output)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [(e["type"], e.get("output_index"), e.get("content_index")) for e in events] == [
        ("response.created", None, None),
        ("response.in_progress", None, None),
        ("response.output_item.added", 0, None),
        ("response.content_part.added", 0, 0),
        ("response.output_text.delta", 0, 0),
        ("response.output_text.delta", 0, 0),
        ("response.output_text.done", 0, 0),
        ("response.content_part.done", 0, 0),
        ("response.content_part.added", 0, 1),
        ("response.refusal.delta", 0, 1),
        ("response.refusal.done", 0, 1),
        ("response.content_part.done", 0, 1),
        ("response.output_item.done", 0, None),
        ("response.output_item.added", 1, None),
        ("response.function_call_arguments.delta", 1, None),
        ("response.function_call_arguments.delta", 1, None),
        ("response.function_call_arguments.done", 1, None),
        ("response.output_item.done", 1, None),
        ("response.output_item.added", 2, None),
        ("response.function_call_arguments.delta", 2, None),
        ("response.function_call_arguments.done", 2, None),
        ("response.output_item.done", 2, None),
        ("response.completed", None, None),
    ]
    # Items are announced empty and in progress, and closed whole.
    assert events[2]["item"]["content"] == [] and events[2]["item"]["status"] == "in_progress"
    assert events[13]["item"]["arguments"] == ""
    final = events[-1]["response"]
    assert events[16]["arguments"] == final["output"][1]["arguments"] == '{"a":1}'
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][0]["content"][1] == {"type": "refusal", "refusal": "no"}
    assert final["usage"]["total_tokens"] == 7
    RESPONSE.validate_python(final)
    assert (
        events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    )
    assert events[0]["response"]["model"] == "upstream"  # the first chunk's, not "auto"


def test_a_broken_stream_ends_with_one_failed_event() -> None:
    output = Output(_frame(stream=True), events=True)
    output.fail("The upstream stream broke: reset")
    assert [e["type"] for e in _events(output)] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    output = Output(_frame(stream=True), events=True)
    output.chunk(_chunk({"content": "par"}))
    output.fail("The upstream stream broke: reset")
    events = _events(output)
    assert [e["type"] for e in events][-1] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "code": "server_error",
        "message": "The upstream stream broke: reset",
    }


def test_usage_without_details_and_no_usage() -> None:
    assert usage({"prompt_tokens": 1, "completion_tokens": 2}) == {
        "input_tokens": 1,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 3,
    }
    assert usage(None) is None


def test_the_frame_echoes_the_settings_with_the_apis_defaults() -> None:
    echoed = _frame()
    RESPONSE.validate_python(echoed)
    assert (echoed["tool_choice"], echoed["truncation"], echoed["parallel_tool_calls"]) == (
        "auto",
        "disabled",
        True,
    )
    assert echoed["text"] == {"format": {"type": "text"}} and echoed["store"] is True
    verbose = _frame(
        text={"verbosity": "low"}, reasoning={"effort": "low"}, parallel_tool_calls=False
    )
    assert verbose["text"] == {"format": {"type": "text"}, "verbosity": "low"}
    assert verbose["reasoning"] == {"effort": "low", "summary": None}
    assert verbose["parallel_tool_calls"] is False
