"""The context fingerprint: what must match besides the question, and what must not matter."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.ml.text import request_text
from gateway.semantic.fingerprint import context_fingerprint

BASE: dict[str, Any] = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Write a function that reverses a string."},
    ],
    "temperature": 0,
}


def variant(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE)
    body.update(changes)
    return body


def with_messages(*messages: dict[str, Any]) -> dict[str, Any]:
    return variant(messages=list(messages))


FP = context_fingerprint(BASE)


def test_the_question_text_is_not_part_of_the_fingerprint() -> None:
    other = with_messages(BASE["messages"][0], {"role": "user", "content": "Reverse a string."})
    assert context_fingerprint(other) == FP
    assert request_text(other["messages"]) == "Reverse a string."


@pytest.mark.parametrize(
    "body",
    [
        with_messages({"role": "system", "content": "You answer in French."}, BASE["messages"][1]),
        with_messages(BASE["messages"][1]),  # no system prompt
        with_messages({"role": "developer", "content": "Be terse."}, BASE["messages"][1]),
        variant(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        variant(tool_choice="none"),
        variant(response_format={"type": "json_object"}),
        variant(max_tokens=16),
        variant(stop=["\n"]),
        variant(seed=7),
        variant(n=2),
        variant(temperature=0.7),
        variant(top_p=0.5),
        variant(model="large"),
        variant(some_future_parameter=True),  # unknown fields are kept: safer
    ],
)
def test_answer_shaping_context_changes_the_fingerprint(body: dict[str, Any]) -> None:
    assert context_fingerprint(body) != FP


def test_prior_turns_scope_a_follow_up_to_its_conversation() -> None:
    def conversation(first: str) -> dict[str, Any]:
        return with_messages(
            {"role": "user", "content": first},
            {"role": "assistant", "content": "def f(s): return s[::-1]"},
            {"role": "user", "content": "now do it in Rust"},
        )

    a, b = conversation("reverse a string in Python"), conversation("sort a list in Python")
    assert request_text(a["messages"]) == request_text(b["messages"]) == "now do it in Rust"
    assert context_fingerprint(a) != context_fingerprint(b)
    assert context_fingerprint(a) == context_fingerprint(conversation("reverse a string in Python"))


def test_images_in_the_last_message_are_context() -> None:
    def ask(url: str) -> dict[str, Any]:
        return with_messages(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        )

    assert request_text(ask("https://x/1.png")["messages"]) == "What is in this picture?"
    assert context_fingerprint(ask("https://x/1.png")) != context_fingerprint(
        ask("https://x/2.png")
    )


@pytest.mark.parametrize(
    "body",
    [
        variant(stream=True, stream_options={"include_usage": True}),
        variant(user="end-user-42", metadata={"k": "v"}, store=True),
        variant(temperature=0.0),  # same bucket as 0
        with_messages(
            {
                "role": "system",
                "content": [{"type": "text", "text": "You are a terse assistant.  "}],
            },
            BASE["messages"][1],
        ),
        {**BASE, "messages": list(BASE["messages"]), "temperature": 0},
    ],
)
def test_equivalent_requests_share_a_fingerprint(body: dict[str, Any]) -> None:
    assert context_fingerprint(body) == FP


def test_nearby_temperatures_share_a_bucket() -> None:
    assert context_fingerprint(variant(temperature=0.2)) == context_fingerprint(
        variant(temperature=0.3)
    )
    assert context_fingerprint(variant(temperature=None)) == context_fingerprint(
        variant(temperature=1.0)
    )
