"""The legacy Completions translation, both ways, without a server."""

from __future__ import annotations

import json

import pytest

from gateway.errors import BadRequest, UpstreamUnavailable
from gateway.wire import completions


def test_a_prompt_becomes_one_user_message_with_the_legacy_default_length() -> None:
    chat = completions.chat_body(
        {"model": "m", "prompt": "hi", "echo": False, "best_of": 1, "stop": ["x"], "n": 2}
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "stop": ["x"],
        "n": 2,
    }


@pytest.mark.parametrize("sent", [{"max_tokens": 5}, {"max_completion_tokens": 5}])
def test_a_length_the_client_sends_is_kept(sent: dict[str, int]) -> None:
    chat = completions.chat_body({"model": "m", "prompt": "hi", **sent})
    assert {k: chat.get(k) for k in ("max_tokens", "max_completion_tokens")} == {
        "max_tokens": None,
        "max_completion_tokens": None,
        **sent,
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "s"}, "suffix"),
        ({"echo": True}, "echo"),
        ({"logprobs": 0}, "logprobs"),
        ({"best_of": 2}, "best_of"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"functions": []}, "functions"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as refused:
        completions.chat_body({"model": "m", "prompt": "p", **fields})
    assert refused.value.param == param


def test_a_chat_completion_becomes_a_text_completion() -> None:
    chat = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 7,
        "model": "up",
        "system_fingerprint": "fp",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "yes"},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": None},
                "finish_reason": "length",
            },
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    out = json.loads(completions.completion(json.dumps(chat).encode()))
    assert out == {
        "id": "cmpl-abc",
        "object": "text_completion",
        "created": 7,
        "model": "up",
        "system_fingerprint": "fp",
        "choices": [
            {"text": "yes", "index": 0, "logprobs": None, "finish_reason": "stop"},
            {"text": "", "index": 1, "logprobs": None, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def test_an_unreadable_answer_is_a_502_not_a_crash() -> None:
    with pytest.raises(UpstreamUnavailable) as failed:
        completions.completion(b'{"choices": 3}')
    assert failed.value.status_code == 502


def _chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return json.dumps(
        {"id": "chatcmpl-z", "created": 1, "model": "up", "choices": [choice], **extra}
    ).encode()


def test_stream_chunks_map_and_the_role_only_opening_is_dropped() -> None:
    assert completions.chunk(_chunk({"role": "assistant", "content": ""})) is None
    text = json.loads(completions.chunk(_chunk({"content": "he"})) or b"")
    assert text["object"] == "text_completion" and text["id"] == "cmpl-z"
    assert text["choices"] == [{"text": "he", "index": 0, "logprobs": None, "finish_reason": None}]
    assert "usage" not in text
    end = json.loads(completions.chunk(_chunk({}, "stop")) or b"")
    assert end["choices"][0]["finish_reason"] == "stop"
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    last = json.loads(
        completions.chunk(json.dumps({"id": "chatcmpl-z", "choices": [], "usage": usage}).encode())
        or b""
    )
    assert last["choices"] == [] and last["usage"] == usage


def test_a_payload_that_is_no_chunk_passes_unchanged() -> None:
    error = b'{"error": {"message": "broken"}}'
    assert completions.chunk(error) == error
    assert completions.chunk(b"not json") == b"not json"
