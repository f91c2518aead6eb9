"""The Responses door through a running gateway, with the official openai SDK (and the Agents
SDK): what the client gets, and what the fake upstream received."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import uvicorn
import websockets
from websockets.sync.client import connect

from tests.conftest import TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream, Fault
from tests.integration.doors.responses_events import RESPONSE, check_lifecycle, post, stream
from tests.servers import free_port

LOOKUP = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_a_string_input_is_answered_as_a_response(gateway: Gateway, primary: FakeUpstream) -> None:
    raw = gateway.client().responses.with_raw_response.create(
        model="auto",
        input="hello there",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.2,
        top_p=0.9,
        user="u-1",
        metadata={"ticket": "T-7"},
        prompt_cache_key="pk-1",
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.completed_at is not None
    assert response.output_text == "primary says: hello there"
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    # Echoed as the API does.
    assert response.instructions == "Be brief." and response.metadata == {"ticket": "T-7"}
    assert (response.max_output_tokens, response.temperature, response.top_p) == (50, 0.2, 0.9)
    assert response.model == "upstream-main" and response.store is True
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (4, 4)
    assert response.usage.total_tokens == 8
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    RESPONSE.validate_json(raw.http_response.content)  # strictly, not the SDK's lenient parse
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-model"] == "main"
    assert raw.headers["x-gateway-cost-usd"] == "0.00005"  # 4 x $2.50/M + 4 x $10/M
    # The translation: instructions as the system message first, the limits and sampling.
    sent = primary.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.2, 0.9)
    assert (sent["user"], sent["prompt_cache_key"]) == ("u-1", "pk-1")
    assert "metadata" not in sent and "input" not in sent and "instructions" not in sent


def test_input_items_become_chat_messages(gateway: Gateway, primary: FakeUpstream) -> None:
    response = gateway.client().responses.create(
        model="auto",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "salut", "annotations": []}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "and this?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "low",
                    },
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},  # dropped on this route
        ],
    )
    assert response.status == "completed"
    assert primary.requests[-1].body["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "salut"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                },
            ],
        },
    ]


def test_a_function_tool_round_trip_through_previous_response_id(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    client = gateway.client()
    first = client.responses.create(
        model="auto", input="paris", instructions="Use tools.", tools=[LOOKUP], tool_choice="auto"
    )
    [call] = first.output
    assert call.type == "function_call" and call.id is not None and call.id.startswith("fc_")
    assert call.call_id == "call_fake0001" and call.name == "lookup"
    assert json.loads(call.arguments) == {"echo": "paris"}
    sent = primary.requests[-1].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {k: LOOKUP[k] for k in ("name", "description", "parameters", "strict")},
        }
    ]
    assert sent["tool_choice"] == "auto"
    second = client.responses.create(
        model="auto",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "the capital"}],
        tools=[LOOKUP],
    )
    assert second.output_text == "primary got the tool's result: the capital"
    assert second.previous_response_id == first.id
    # The whole conversation reached the model; the first turn's instructions did not carry over.
    assert primary.requests[-1].body["messages"] == [
        {"role": "user", "content": "paris"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake0001",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake0001", "content": "the capital"},
    ]


def test_foreign_call_ids_replay_as_given(gateway: Gateway, primary: FakeUpstream) -> None:
    """History from another provider (Anthropic's ``toolu_`` ids) replays without a 400: the
    call_id is the tool call's id, the item id is not sent."""
    response = gateway.client().responses.create(
        model="auto",
        input=[
            {"role": "user", "content": "paris"},
            {
                "type": "function_call",
                "id": "fc_x",
                "call_id": "toolu_01A",
                "name": "lookup",
                "arguments": "{}",
            },
            {"type": "function_call", "call_id": "toolu_01B", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "toolu_01A", "output": "one"},
            {
                "type": "function_call_output",
                "call_id": "toolu_01B",
                "output": [{"type": "input_text", "text": "two"}],
            },
        ],
    )
    assert response.output_text == "primary got the tool's result: two"
    messages = primary.requests[-1].body["messages"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["toolu_01A", "toolu_01B"]
    assert [(m["role"], m["tool_call_id"]) for m in messages[2:]] == [
        ("tool", "toolu_01A"),
        ("tool", "toolu_01B"),
    ]


def test_text_format_json_schema_reaches_upstream_as_response_format(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = gateway.client().responses.create(
        model="auto",
        input="where?",
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
    )
    sent = primary.requests[-1].body
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    assert sent["reasoning_effort"] == "low"
    assert response.text.format is not None and response.text.format.type == "json_schema"
    gateway.client().responses.create(
        model="auto", input="x", text={"format": {"type": "json_object"}}
    )
    assert primary.requests[-1].body["response_format"] == {"type": "json_object"}


def test_a_stream_follows_the_responses_event_grammar(gateway: Gateway) -> None:
    headers, events = stream(gateway, {"model": "auto", "input": "stream me"})
    assert headers["x-gateway-cache"] == "miss" and headers["x-gateway-model"] == "main"
    final = check_lifecycle(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == final["output"][0]["content"][0]["text"] == "primary says: stream me"
    # Streamed and non-streamed usage are the same (PITFALLS 2.11).
    plain = gateway.client().responses.create(model="auto", input="stream me", temperature=0.5)
    assert plain.usage is not None and final["usage"] == plain.usage.model_dump(exclude_none=True)


def test_the_sdk_stream_helper_gets_the_final_response(gateway: Gateway) -> None:
    with gateway.client().responses.stream(model="auto", input="hello", tools=[LOOKUP]) as events:
        seen = list(events)
        final = events.get_final_response()
    assert [e.sequence_number for e in seen] == list(range(len(seen)))
    arguments = "".join(e.delta for e in seen if e.type == "response.function_call_arguments.delta")
    [call] = final.output
    assert call.type == "function_call" and call.arguments == arguments
    assert [e.type for e in seen].count("response.function_call_arguments.delta") == 2
    assert seen[-1].type == "response.completed" and seen[0].response.id == final.id


def test_a_streamed_tool_call_chains_at_once(gateway: Gateway, primary: FakeUpstream) -> None:
    """Turn 2 sent the moment turn 1's stream completed finds turn 1 stored (PITFALLS 2.1)."""
    _, events = stream(gateway, {"model": "auto", "input": "paris", "tools": [LOOKUP]})
    first = check_lifecycle(events)
    call = first["output"][0]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done[0]["arguments"] == call["arguments"] == '{"echo": "paris"}'
    sent_at = time.monotonic()
    _, events = stream(
        gateway,
        {
            "model": "auto",
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "42"}],
        },
    )
    assert time.monotonic() - sent_at < 5
    second = check_lifecycle(events)
    assert second["output"][0]["content"][0]["text"] == "primary got the tool's result: 42"
    assert [m["role"] for m in primary.requests[-1].body["messages"]] == [
        "user",
        "assistant",
        "tool",
    ]


def test_a_length_stop_is_an_incomplete_response(gateway: Gateway) -> None:
    response = gateway.client().responses.create(
        model="auto", input="one two three four five", max_output_tokens=3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "primary says: one"
    _, events = stream(gateway, {"model": "auto", "input": "one two three", "max_output_tokens": 3})
    final = check_lifecycle(events)
    assert events[-1]["type"] == "response.incomplete" and final["status"] == "incomplete"
    assert final["output"][0]["status"] == "incomplete"


def test_a_stream_that_breaks_ends_with_response_failed_and_is_not_stored(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    primary.script(Fault(drop_after_chunks=3))
    _, events = stream(gateway, {"model": "auto", "input": "one two three four"})
    final = check_lifecycle(events)
    assert events[-1]["type"] == "response.failed" and final["status"] == "failed"
    assert final["error"]["code"] == "server_error"
    assert "broke" in final["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        gateway.client().responses.retrieve(final["id"])


def test_a_cache_hit_is_replayed_as_a_response_streamed_or_not(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    client = gateway.client()
    first = client.responses.create(model="auto", input="cache me", temperature=0)
    calls = len(primary.requests)
    raw = client.responses.with_raw_response.create(model="auto", input="cache me", temperature=0)
    again = raw.parse()
    assert raw.headers["x-gateway-cache"] == "exact"
    assert again.id != first.id and again.output_text == first.output_text
    assert again.usage == first.usage
    headers, events = stream(gateway, {"model": "auto", "input": "cache me", "temperature": 0})
    assert headers["x-gateway-cache"] == "exact"
    final = check_lifecycle(events)
    assert final["output"][0]["content"][0]["text"] == "primary says: cache me"
    assert len(primary.requests) == calls
    # A replayed answer is stored like any other, and continues.
    follow = client.responses.create(model="auto", previous_response_id=final["id"], input="more")
    assert follow.output_text == "primary says: more"
    roles = [m["role"] for m in primary.requests[-1].body["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_the_ledger_records_usage_and_cost(gateway: Gateway) -> None:
    gateway.client().responses.create(model="auto", input="count me")
    stream(gateway, {"model": "auto", "input": "and me too"})
    plain, streamed = gateway.records(2)
    assert (plain.input_tokens, plain.output_tokens, plain.stream) == (2, 4, False)
    assert (streamed.input_tokens, streamed.output_tokens, streamed.stream) == (3, 5, True)
    assert plain.cost_usd is not None and plain.cost_usd > 0
    assert streamed.cost_usd is not None and streamed.cost_usd > 0


@pytest.mark.parametrize(
    ("body", "param", "named"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, "tools[0].type", "web_search_preview"),
        (
            {"tools": [LOOKUP, {"type": "file_search", "vector_store_ids": ["vs"]}]},
            "tools[1].type",
            "file_search",
        ),
        (
            {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]},
            "tools[0].type",
            "code_interpreter",
        ),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type", "mcp"),
        (
            {"input": [{"type": "custom_tool_call", "call_id": "c", "name": "p", "input": ""}]},
            "input[0].type",
            "custom_tool_call",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "item_reference"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0].file_id",
            "Files API",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "input_file",
        ),
        ({"background": True}, "background", "background"),
        ({"conversation": "conv_1"}, "conversation", "conversation"),
        ({"include": ["file_search_call.results"]}, "include", "file_search_call.results"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "tool"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id", "resp_nope"),
    ],
)
def test_what_cannot_be_carried_is_refused_by_name(
    gateway: Gateway, primary: FakeUpstream, body: dict[str, object], param: str, named: str
) -> None:
    answer = post(gateway, {"model": "auto", "input": "hi", **body})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and named in error["message"]
    assert error["type"] == "invalid_request_error"
    assert primary.requests == []


def test_what_the_agents_sdk_sends_by_default_is_accepted(gateway: Gateway) -> None:
    """Codex-style and Agents-style defaults: include of encrypted reasoning, store false,
    truncation, stream_options, reasoning summaries (dropped, documented)."""
    answer = post(
        gateway,
        {
            "model": "auto",
            "input": [{"role": "user", "content": "hi"}],
            "include": ["reasoning.encrypted_content"],
            "store": False,
            "truncation": "auto",
            "parallel_tool_calls": True,
            "tools": [],
            "reasoning": {"effort": None, "summary": "auto"},
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["store"] is False and answer.json()["truncation"] == "auto"


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_agent_runs_its_function_tool_through_the_gateway(
    gateway: Gateway, primary: FakeUpstream, streamed: bool
) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def lookup(echo: str) -> str:
        """Look a word up."""
        ran.append(echo)
        return f"found {echo}"

    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TENANT_KEY, max_retries=0)
    agent = Agent(
        name="helper",
        instructions="Use the lookup tool.",
        tools=[lookup],
        model=OpenAIResponsesModel(model="auto", openai_client=client),
    )
    try:
        if streamed:
            result = Runner.run_streamed(agent, "paris")
            async for _ in result.stream_events():
                pass
        else:
            result = await Runner.run(agent, "paris")
    finally:
        await client.close()
    assert ran == ["paris"]
    assert result.final_output == "primary got the tool's result: found paris"
    first, second = (r.body for r in primary.requests)
    assert first["messages"][0] == {"role": "system", "content": "Use the lookup tool."}
    assert first["tools"][0]["function"]["name"] == "lookup"
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert first.get("stream", False) is streamed


def test_a_websocket_upgrade_gets_a_quick_426(gateway: Gateway) -> None:
    """Codex's first try (PITFALLS 2.10): where the server reads the upgrade as plain HTTP
    (the tests' servers), and where it hands it over as a WebSocket (``gateway serve``; the
    sans-I/O implementation here, as the legacy one warns when imported)."""
    answer = httpx.get(
        f"{gateway.url}/v1/responses",
        headers={"upgrade": "websocket", "connection": "Upgrade"},
        timeout=5,
    )
    assert answer.status_code == 426
    assert answer.json()["error"]["code"] == "websocket_not_supported"
    port = free_port()
    config = uvicorn.Config(
        gateway.app, port=port, ws="websockets-sansio", lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/v1/responses", open_timeout=5)
        assert refused.value.response.status_code == 426
        assert b"websocket_not_supported" in refused.value.response.body
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.model
def test_the_local_engine_answers_a_response(local_gateway: Gateway) -> None:
    gw = local_gateway
    client = gw.client()
    response = client.responses.create(
        model="auto",
        input="What is the capital of France?",
        instructions="Be brief.",
        max_output_tokens=8,
        temperature=0,
    )
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and 0 < response.usage.output_tokens <= 8
    _, events = stream(gw, {"model": "auto", "input": "Say hi.", "max_output_tokens": 4})
    final = check_lifecycle(events)
    assert final["usage"]["output_tokens"] <= 4
