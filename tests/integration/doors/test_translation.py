"""One conversation through every door: the model receives the same request, and each door's
usage is what the ledger records.

The conversation has everything a translation can lose: a system prompt, a tool the model
called, the tool's result, a follow-up question, tools, a stop string (where the API has one),
a token limit and a temperature. Each door's official SDK sends it; what the fake upstream
received is compared after a normalisation that removes only the differences of form that the
Chat Completions API itself allows (a string or text parts, a tool's description).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream

SYSTEM = "Answer briefly."
QUESTION = "What is two plus two?"
FOLLOW_UP = "Thanks. Say it once more."
CALL_ID = "call_sum01"
ARGUMENTS = {"a": 2, "b": 2}
RESULT = "4"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
NO_CACHE = {"cache-control": "no-cache, no-store"}
"""Each door must reach the model: the same conversation is the same exact-cache entry."""


def _chat(client: openai.OpenAI) -> tuple[Any, dict[str, int]]:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": CALL_ID,
                        "type": "function",
                        "function": {"name": "add", "arguments": json.dumps(ARGUMENTS)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": CALL_ID, "content": RESULT},
            {"role": "user", "content": FOLLOW_UP},
        ],
        tools=[{"type": "function", "function": {"name": "add", "parameters": SCHEMA}}],
        stop=["END"],
        max_tokens=50,
        temperature=0.2,
        extra_headers=NO_CACHE,
    )
    usage = raw.parse().usage
    assert usage is not None
    return raw, {"input": usage.prompt_tokens, "output": usage.completion_tokens}


def _messages(client: anthropic.Anthropic) -> tuple[Any, dict[str, int]]:
    raw = client.messages.with_raw_response.create(
        model="auto",
        system=SYSTEM,
        messages=[
            {"role": "user", "content": QUESTION},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": CALL_ID, "name": "add", "input": ARGUMENTS}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": CALL_ID, "content": RESULT},
                    {"type": "text", "text": FOLLOW_UP},
                ],
            },
        ],
        tools=[{"name": "add", "input_schema": SCHEMA}],  # type: ignore[list-item]
        stop_sequences=["END"],
        max_tokens=50,
        extra_body={"temperature": 0.2},  # no longer in this SDK's signature; still sent
        extra_headers=NO_CACHE,
    )
    usage = raw.parse().usage
    return raw, {"input": usage.input_tokens, "output": usage.output_tokens}


def _responses(client: openai.OpenAI) -> tuple[Any, dict[str, int]]:
    raw = client.responses.with_raw_response.create(
        model="auto",
        instructions=SYSTEM,
        input=[
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": CALL_ID,
                "name": "add",
                "arguments": json.dumps(ARGUMENTS),
            },
            {"type": "function_call_output", "call_id": CALL_ID, "output": RESULT},
            {"role": "user", "content": FOLLOW_UP},
        ],
        tools=[{"type": "function", "name": "add", "parameters": SCHEMA, "strict": False}],
        max_output_tokens=50,
        temperature=0.2,
        store=False,
        extra_headers=NO_CACHE,
    )
    usage = raw.parse().usage
    assert usage is not None
    return raw, {"input": usage.input_tokens, "output": usage.output_tokens}


def _text(content: Any) -> str | None:
    """A message's text, whether sent as a string or as text parts."""
    if isinstance(content, list):
        return "\n".join(part["text"] for part in content if part.get("type") == "text")
    return content or None


def _essence(body: dict[str, Any]) -> dict[str, Any]:
    """What the model is asked, without the differences of form Chat Completions allows."""
    messages = []
    for message in body["messages"]:
        calls = [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in message.get("tool_calls") or []
        ]
        messages.append(
            (message["role"], _text(message.get("content")), calls, message.get("tool_call_id"))
        )
    tools = [(t["function"]["name"], t["function"]["parameters"]) for t in body["tools"]]
    return {
        "messages": messages,
        "tools": tools,
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens"),
        "temperature": body["temperature"],
        "stop": body.get("stop"),
    }


def test_every_door_asks_the_model_the_same_and_records_what_it_reports(
    gateway: Gateway, primary: FakeUpstream, anthropic_client: anthropic.Anthropic
) -> None:
    sent = {
        "chat": _chat(gateway.client()),
        "messages": _messages(anthropic_client),
        "responses": _responses(gateway.client()),
    }
    received = {door: _essence(r.body) for door, r in zip(sent, primary.requests, strict=True)}
    chat = received["chat"]
    assert chat["messages"] == [
        ("system", SYSTEM, [], None),
        ("user", QUESTION, [], None),
        ("assistant", None, [(CALL_ID, "add", ARGUMENTS)], None),
        ("tool", RESULT, [], CALL_ID),
        ("user", FOLLOW_UP, [], None),
    ]
    assert received["messages"] == chat
    # The Responses API has no stop strings; the rest is the same request.
    assert received["responses"] == {**chat, "stop": None}

    records = {r.request_id: r for r in gateway.records(3)}
    for door, (raw, usage) in sent.items():
        record = records[raw.headers["x-gateway-request-id"]]
        assert (record.input_tokens, record.output_tokens) == (
            usage["input"],
            usage["output"],
        ), door
        assert record.model == raw.headers["x-gateway-model"] == "main", door
        assert record.cost_usd is not None and record.cost_usd > 0, door


def test_an_answer_cached_through_one_door_is_served_through_the_others(
    gateway: Gateway, primary: FakeUpstream, anthropic_client: anthropic.Anthropic
) -> None:
    """The caches hold the pipeline's answer, not a door's: one conversation asked through
    chat is answered from the exact cache when it comes again as Messages, Responses or a
    legacy Completions prompt, each in its own format."""
    question = "Name a colour of the sky."
    first = gateway.client().chat.completions.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": question}], max_tokens=40
    )
    assert first.headers["x-gateway-cache"] == "miss"
    text = first.parse().choices[0].message.content
    message = anthropic_client.messages.with_raw_response.create(
        model="main", messages=[{"role": "user", "content": question}], max_tokens=40
    )
    response = gateway.client().responses.with_raw_response.create(
        model="main", input=question, max_output_tokens=40, store=False
    )
    legacy = gateway.client().completions.with_raw_response.create(
        model="main", prompt=question, max_tokens=40
    )
    for raw in (message, response, legacy):
        assert raw.headers["x-gateway-cache"] == "exact"
        assert raw.headers["x-gateway-cost-usd"] == "0"
    assert message.parse().content[0].text == text  # type: ignore[union-attr]
    assert response.parse().output_text == text
    assert legacy.parse().choices[0].text == text
    assert len(primary.requests) == 1
