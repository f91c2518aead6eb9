"""``provider: anthropic`` end to end: the openai SDK -> the gateway -> the fake Messages API
(a real server that checks key, version and body shape), streamed and not, with a tool loop, a
fallback after 529s, a retried 429, an error event mid-stream, and the ledger's cost."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.policy.load import PolicyError, load_policy
from tests.conftest import ADMIN_KEY, TENANT_KEY, Gateway
from tests.fake_upstream import FakeUpstream
from tests.fakes.anthropic import KEY, FakeAnthropic, Script
from tests.fakes.policy import policy
from tests.integration.providers.client import TOOLS, stream_chunks
from tests.servers import module_fixtures

_claude, claude = module_fixtures("claude", FakeAnthropic)


PRICE = (
    "{input_per_mtok: 3, cached_input_per_mtok: 0.30, cache_write_per_mtok: 3.75,"
    " output_per_mtok: 15}"
)


def claude_model(claude: FakeAnthropic) -> str:
    return textwrap.dedent(f"""\
        provider: anthropic
        base_url: {claude.base_url}
        model: claude-sonnet-4-5
        api_key: {KEY}""")


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], claude: FakeAnthropic, backup: FakeUpstream
) -> Gateway:
    return start_gateway(policy(backup, "claude", claude_model(claude), PRICE))


def tool_loop(client: openai.OpenAI, stream: bool, model: str = "auto") -> tuple[str, str, str]:
    """Ask ``model`` with the tool, answer its call, return (call id, arguments, final text)
    (the vertex tests ask Claude on Vertex the same)."""
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "find kiwi"},
    ]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=messages,
                tools=TOOLS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        calls = [c for ch in chunks if ch.choices for c in ch.choices[0].delta.tool_calls or []]
        call_id = calls[0].id or ""
        arguments = "".join(c.function.arguments or "" for c in calls if c.function)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    else:
        answer = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
        call_id, arguments = call.id, call.function.arguments  # type: ignore[union-attr]
        finish = answer.choices[0].finish_reason
    assert finish == "tool_calls"
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "lookup", "arguments": arguments},
            }
        ],
    }
    messages += [assistant, {"role": "tool", "tool_call_id": call_id, "content": "a green fruit"}]
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    return call_id, arguments, final.choices[0].message.content or ""


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_through_messages(
    gateway: Gateway, claude: FakeAnthropic, stream: bool
) -> None:
    call_id, arguments, final = tool_loop(gateway.client(), stream)
    assert (call_id, json.loads(arguments)) == ("toolu_01A", {"echo": "find kiwi"})
    assert final == "result: a green fruit"
    assert claude.problems == []
    first, second = claude.requests
    assert first.headers["x-api-key"] == KEY and first.headers["anthropic-version"] == "2023-06-01"
    assert first.body["system"] == [{"type": "text", "text": "Be brief."}]
    assert first.body["model"] == "claude-sonnet-4-5" and first.body["max_tokens"] == 4096
    assert first.body["tools"][0]["input_schema"]["properties"] == {"echo": {"type": "string"}}
    assert first.body.get("stream", False) is stream
    assert second.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "lookup",
                    "input": {"echo": "find kiwi"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a green fruit"}
            ],
        },
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_529s_fall_back_to_the_next_provider(
    gateway: Gateway, claude: FakeAnthropic, backup: FakeUpstream, stream: bool
) -> None:
    claude.script(Script(status=529), Script(status=529))
    client = gateway.client()
    messages: Any = [{"role": "user", "content": "hello"}]
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="auto", messages=messages, stream=True)
            if c.choices
        )
    else:
        text = (
            client.chat.completions.create(model="auto", messages=messages)
            .choices[0]
            .message.content
            or ""
        )
    assert text.startswith("backup says: hello")
    assert len(claude.requests) == 2 and len(backup.requests) == 1
    assert gateway.records(1)[0].model == "backup"


def test_a_429_is_retried_after_its_retry_after(gateway: Gateway, claude: FakeAnthropic) -> None:
    claude.script(Script(status=429, retry_after="0"))
    answer = gateway.client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=50
    )
    assert answer.choices[0].message.content == "claude says: hello"
    assert answer.choices[0].finish_reason == "stop"
    assert len(claude.requests) == 2 and claude.requests[1].body["max_tokens"] == 50


def test_an_error_event_mid_stream_ends_the_stream_with_an_error(
    gateway: Gateway, claude: FakeAnthropic
) -> None:
    claude.script(Script(error_after_events=4))
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    headers = {"authorization": f"Bearer {TENANT_KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    assert json.loads(events[1][5:])["choices"][0]["delta"]["content"] == "claude "
    assert '"upstream_stream_broken"' in events[-1] and "[DONE]" not in events[-1]


@pytest.mark.parametrize("stream", [False, True])
def test_the_ledger_prices_cache_writes_and_reads_apart(
    gateway: Gateway, claude: FakeAnthropic, stream: bool
) -> None:
    claude.script(Script(cache_creation=1000), Script(cache_read=2000))
    client = gateway.client()
    for _ in range(2):  # different texts: the gateway's own cache must not answer
        text = f"count {_}"
        messages: Any = [{"role": "user", "content": text}]
        if stream:
            usage = stream_chunks(client, messages)[-1].usage
        else:
            usage = client.chat.completions.create(model="auto", messages=messages).usage
        assert usage is not None
    write, read = gateway.records(2)
    inputs = [len(json.dumps(r.body["messages"]).split()) for r in claude.requests]
    assert write.input_tokens == inputs[0] + 1000 and read.input_tokens == inputs[1] + 2000
    assert read.cached_input_tokens == 2000 and usage.prompt_tokens_details.cached_tokens == 2000  # type: ignore[union-attr]
    per_mtok = Decimal(1_000_000)
    assert write.cost_usd == (inputs[0] * 3 + 1000 * Decimal("3.75") + 7 * 15) / per_mtok
    assert read.cost_usd == (inputs[1] * 3 + 2000 * Decimal("0.30") + 7 * 15) / per_mtok


def test_the_key_is_redacted_and_required(gateway: Gateway, tmp_path: Path) -> None:
    shown = httpx.get(
        f"{gateway.url}/admin/policy", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert shown.status_code == 200 and "claude-sonnet-4-5" in shown.text
    assert KEY not in shown.text
    keyless = gateway.policy_path.read_text().replace(f"    api_key: {KEY}\n", "")
    (tmp_path / "keyless.yaml").write_text(keyless)
    with pytest.raises(PolicyError, match="anthropic needs api_key"):
        load_policy(tmp_path / "keyless.yaml")
