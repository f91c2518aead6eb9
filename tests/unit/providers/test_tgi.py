"""TGI's generate API to and from Chat Completions: requests, answers, stream lines, refusals."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.providers import AttemptFailed
from gateway.providers.tgi import TgiStream, completion_from_tgi, prompt, tgi_request

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "!"}]},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "2+2?"},
]


def test_the_conversation_becomes_the_documented_template() -> None:
    assert prompt(CONVERSATION) == (
        "System: Be brief.\n\nUser: Hi !\n\nAssistant: Hello.\n\nUser: 2+2?\n\nAssistant:"
    )


@pytest.mark.parametrize(
    ("fields", "parameters"),
    [
        ({}, {}),
        ({"max_completion_tokens": 7, "max_tokens": 9}, {"max_new_tokens": 7}),
        ({"max_tokens": 9}, {"max_new_tokens": 9}),
        ({"temperature": 0}, {"do_sample": False}),
        ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 0.7, "top_p": 0.9}),
        ({"top_p": 1}, {}),
        ({"stop": "\n"}, {"stop": ["\n"]}),
        ({"stop": ["a", "b"], "seed": 3}, {"stop": ["a", "b"], "seed": 3}),
        ({"frequency_penalty": 0.5, "user": "u", "stream_options": {}}, {"frequency_penalty": 0.5}),
    ],
)
def test_parameters(fields: dict[str, Any], parameters: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}
    request = tgi_request(body)
    base = {"return_full_text": False, "details": True, "decoder_input_details": True}
    assert request == {"inputs": "User: x\n\nAssistant:", "parameters": base | parameters,
                       "stream": False}  # fmt: skip


def test_a_stream_does_not_ask_for_the_prompts_tokens() -> None:
    """TGI answers decoder_input_details on a stream with a 422."""
    request = tgi_request({"messages": [{"role": "user", "content": "x"}], "stream": True})
    assert request["stream"] is True
    assert "decoder_input_details" not in request["parameters"]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [TOOL]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"functions": [TOOL["function"]]}, "functions"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "user", "content": [IMAGE]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "tool", "tool_call_id": "1", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}], "content": None}]},
            "messages[0].tool_calls",
        ),
    ],
)
def test_what_generate_cannot_do_is_a_400_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], **fields}
    with pytest.raises(AttemptFailed) as caught:
        tgi_request(body)
    failure = caught.value
    assert (failure.kind, failure.status, failure.clients_fault) == ("status", 400, True)
    assert failure.body is not None and failure.body["error"]["param"] == param


def test_text_only_fields_set_to_their_defaults_pass() -> None:
    body = {"messages": [], "n": 1, "logprobs": False, "response_format": {"type": "text"}}
    assert tgi_request(body)["inputs"] == "Assistant:"


@pytest.mark.parametrize(
    ("details", "finish", "usage"),
    [
        (
            {"finish_reason": "length", "generated_tokens": 2, "prefill": [{"id": 1}] * 5},
            "length",
            {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        ),
        ({"finish_reason": "eos_token", "generated_tokens": 2}, "stop", None),
        (
            {"finish_reason": "stop_sequence", "generated_tokens": 2, "prefill": []},
            "stop",
            {"prompt_tokens": 0, "completion_tokens": 2, "total_tokens": 2},
        ),
        (None, "stop", None),
    ],
)
def test_an_answer_becomes_a_chat_completion(
    details: dict[str, Any] | None, finish: str, usage: dict[str, int] | None
) -> None:
    generated = {"generated_text": " Four.", "details": details}
    for payload in ([generated], generated):  # the / route's list, /generate's object
        completion = completion_from_tgi(msgspec.json.encode(payload), "tgi-model")
        assert completion["object"] == "chat.completion" and completion["model"] == "tgi-model"
        assert completion["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " Four."},
                "logprobs": None,
                "finish_reason": finish,
            }
        ]
        assert completion.get("usage") == usage


@pytest.mark.parametrize("payload", [b"{", b"[]", b'[{"text": 1}]', b'{"error": "x"}'])
def test_an_unreadable_answer_is_a_protocol_failure(payload: bytes) -> None:
    with pytest.raises(AttemptFailed) as caught:
        completion_from_tgi(payload, "m")
    assert caught.value.kind == "protocol"


def _line(text: str, special: bool = False, details: dict[str, Any] | None = None) -> bytes:
    token = {"id": 1, "text": text, "logprob": -0.1, "special": special}
    return msgspec.json.encode({"index": 1, "token": token, "generated_text": None,
                                "details": details})  # fmt: skip


def test_a_stream_becomes_chat_chunks() -> None:
    stream = TgiStream("tgi-model")
    chunks = []
    for line in (
        _line("Hel"),
        _line("lo"),
        _line("</s>", special=True, details={"finish_reason": "eos_token", "generated_tokens": 3}),
    ):
        assert not stream.done
        chunks += [msgspec.json.decode(c) for c in stream.feed(line)]
    assert stream.done
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "tgi-model"
    assert all("usage" not in c for c in chunks)


def test_a_stream_without_text_still_opens_the_assistants_turn() -> None:
    stream = TgiStream("m")
    (chunk,) = stream.feed(_line("", details={"finish_reason": "length", "generated_tokens": 1}))
    choice = msgspec.json.decode(chunk)["choices"][0]
    assert choice["delta"] == {"role": "assistant"} and choice["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("error_type", "kind", "status", "retryable"),
    [
        ("overloaded", "status", 503, True),
        ("validation", "status", 422, False),
        ("generation", "protocol", None, False),
        (None, "protocol", None, False),
    ],
)
def test_a_stream_error_line(
    error_type: str | None, kind: str, status: int | None, retryable: bool
) -> None:
    stream = TgiStream("m")
    stream.feed(_line("a"))
    line = msgspec.json.encode({"error": "it broke", "error_type": error_type})
    with pytest.raises(AttemptFailed) as caught:
        stream.feed(line)
    assert (caught.value.kind, caught.value.status) == (kind, status)
    assert caught.value.retryable is retryable


def test_an_unreadable_stream_line_is_a_protocol_failure() -> None:
    with pytest.raises(AttemptFailed) as caught:
        TgiStream("m").feed(b"not json")
    assert caught.value.kind == "protocol"
