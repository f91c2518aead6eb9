"""Bedrock against a fake Bedrock runtime (real HTTP, signatures recomputed with botocore):
the provider alone, then end to end through a running gateway with the openai SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.models import AwsOptions, ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.bedrock import Bedrock
from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream
from tests.fakes.aws import ACCESS_KEY, REGION, SECRET_KEY, event, streamed
from tests.fakes.bedrock import BedrockFault, FakeBedrock
from tests.fakes.policy import policy_with_backup
from tests.integration.providers.client import stream_chunks
from tests.servers import module_fixtures

ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku:0"
USER = [{"role": "user", "content": "hello there"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather.now",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}},
        },
    }
]
MINIMAL = ("content-type", "host", "x-amz-date")


_bedrock, bedrock = module_fixtures("bedrock", FakeBedrock)


def provider(fake: FakeBedrock, **aws: Any) -> Bedrock:
    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, **aws}
    config = ModelConfig(
        provider="bedrock",
        base_url=fake.url,
        model=ARN,
        aws=AwsOptions(region=REGION, **keys),
    )
    return Bedrock(config)


async def test_an_arn_reaches_bedrock_whole_and_the_signature_holds(bedrock: FakeBedrock) -> None:
    client = provider(bedrock)
    try:
        reply = await client.complete({"messages": USER, "max_tokens": 20})
    finally:
        await client.aclose()
    body = json.loads(reply.body)
    assert body["choices"][0]["message"]["content"] == "bedrock says: hello there"
    (received,) = bedrock.requests
    assert received.model_id == ARN
    assert received.signed.ok, received.signed.problem
    assert received.signed.signed_headers == MINIMAL
    assert received.body["inferenceConfig"] == {"maxTokens": 20}


async def test_a_session_token_is_sent_and_signed(bedrock: FakeBedrock) -> None:
    client = provider(bedrock, session_token="session-token-1")
    try:
        await client.complete({"messages": USER})
    finally:
        await client.aclose()
    (received,) = bedrock.requests
    assert received.signed.ok and received.headers["x-amz-security-token"] == "session-token-1"
    assert received.signed.signed_headers == (*MINIMAL, "x-amz-security-token")


async def test_a_wrong_secret_fails_the_signature_check(bedrock: FakeBedrock) -> None:
    client = provider(bedrock, secret_access_key="not-the-secret")
    with pytest.raises(AttemptFailed) as failed:
        try:
            await client.complete({"messages": USER})
        finally:
            await client.aclose()
    assert failed.value.status == 403 and not failed.value.retryable
    assert not bedrock.requests[0].signed.ok


@pytest.mark.parametrize(
    ("fault", "status", "retryable", "clients_fault"),
    [
        (BedrockFault(400, "ValidationException"), 400, False, True),
        (BedrockFault(400, "ThrottlingException"), 429, True, False),
        (BedrockFault(429, "ModelNotReadyException"), 503, True, False),
        (BedrockFault(503, "ServiceUnavailableException"), 503, True, False),
        (BedrockFault(403, "AccessDeniedException"), 403, False, False),
    ],
)
async def test_errors_are_read_as_json_and_classified_by_type(
    bedrock: FakeBedrock, fault: BedrockFault, status: int, retryable: bool, clients_fault: bool
) -> None:
    bedrock.script(fault)
    got, failure = await streamed(provider(bedrock), {"messages": USER})
    assert got == [] and failure is not None
    assert (failure.status, failure.retryable, failure.clients_fault) == (
        status,
        retryable,
        clients_fault,
    )
    assert failure.kind == "status" and f"injected {fault.error_type}" in failure.message


async def test_a_throttling_frame_after_two_deltas_is_a_retryable_failure(
    bedrock: FakeBedrock,
) -> None:
    bedrock.script(BedrockFault(stream_exception="throttlingException", after_deltas=2))
    got, failure = await streamed(provider(bedrock), {"messages": USER})
    assert [c["choices"][0]["delta"].get("content") for c in got] == ["bedrock", " says:"]
    assert failure is not None and failure.status == 429 and failure.retryable
    assert "throttlingException" in failure.message


@pytest.mark.parametrize(
    "raw",
    [
        b'{"message": "an error sent as a 200"}' * 3,
        event("contentBlockDelta", {"delta": {"text": "hi"}})[:-1] + b"\x00",  # a bad CRC
    ],
)
async def test_bytes_that_are_not_frames_are_a_protocol_failure(
    bedrock: FakeBedrock, raw: bytes
) -> None:
    bedrock.script(BedrockFault(raw_stream=raw))
    got, failure = await streamed(provider(bedrock), {"messages": USER})
    assert got == [] and failure is not None
    assert failure.kind == "protocol" and "unreadable event stream" in failure.message


async def test_a_streamed_tool_call_with_frames_cut_anywhere(bedrock: FakeBedrock) -> None:
    for split in (1, 5, 13, 40):
        bedrock.split = split
        body = {"messages": USER, "tools": TOOLS, "stream": True}
        got, failure = await streamed(provider(bedrock), body)
        assert failure is None
        calls = [
            t for c in got if c["choices"] for t in c["choices"][0]["delta"].get("tool_calls", [])
        ]
        assert calls[0]["function"]["name"] == "weather.now"
        assert json.loads("".join(t["function"]["arguments"] for t in calls)) == {
            "echo": "hello there"
        }
        assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert got[-1]["usage"]["completion_tokens"] > 0


def policy(bedrock: FakeBedrock, backup: FakeUpstream, aws: str) -> str:
    entry = f"""\
        provider: bedrock
        base_url: {bedrock.url}
        model: "{ARN}"
        aws: {aws}
        price: {{input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3,
                 cache_write_per_mtok: 3.75}}
        """
    return policy_with_backup("claude", entry, backup.base_url)


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway],
    bedrock: FakeBedrock,
    backup: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Gateway:
    """A gateway whose bedrock model finds its credentials in a shared credentials file's
    profile, as botocore's chain does."""
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[tests]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return start_gateway(policy(bedrock, backup, f"{{region: {REGION}, profile: tests}}"))


def test_chat_with_a_tool_call_then_its_result_streamed_and_not(
    gateway: Gateway, bedrock: FakeBedrock
) -> None:
    client = gateway.client()
    first = client.chat.completions.create(model="auto", messages=USER, tools=TOOLS)  # type: ignore[arg-type]
    (call,) = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather.now"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"echo": "hello there"}  # type: ignore[union-attr]
    follow_up = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    stream = client.chat.completions.create(
        model="auto",
        messages=follow_up,
        tools=TOOLS,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "bedrock got the tool's result: sunny"
    assert all(r.signed.ok for r in bedrock.requests)
    sent = bedrock.requests[1].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] != "weather.now"


@pytest.mark.parametrize("stream", [False, True])
def test_the_ledger_prices_cache_writes_and_reads_to_the_cent(
    gateway: Gateway, bedrock: FakeBedrock, stream: bool
) -> None:
    client = gateway.client()
    for cache, words in (((0, 2000), "hello there"), ((2000, 0), "hello again")):
        bedrock.cache = cache
        messages = [{"role": "user", "content": words}]  # apart, so the exact cache stays out
        if stream:
            usage = stream_chunks(client, messages)[-1].usage
        else:
            usage = client.chat.completions.create(model="auto", messages=messages).usage
        assert usage is not None and usage.prompt_tokens == 2 + 2000
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == cache[0]
        assert getattr(usage.prompt_tokens_details, "cache_write_tokens", None) == cache[1]
    write, read = sorted(gateway.records(2), key=lambda r: r.time)
    # 2 input tokens at 3 USD/M, 2000 written at 3.75 (then read at 0.30), 5 output at 15
    assert write.cost_usd == Decimal("0.000006") + Decimal("0.0075") + Decimal("0.000075")
    assert read.cost_usd == Decimal("0.000006") + Decimal("0.0006") + Decimal("0.000075")
    assert (read.input_tokens, read.cached_input_tokens, read.output_tokens) == (2002, 2000, 5)
    assert (write.input_tokens, write.cached_input_tokens) == (2002, 0)


@pytest.mark.parametrize(
    ("fault", "stream"),
    [
        (BedrockFault(503, "ServiceUnavailableException"), False),
        (BedrockFault(stream_exception="throttlingException"), True),
    ],
)
def test_bedrock_failing_falls_back_to_the_other_provider(
    gateway: Gateway, bedrock: FakeBedrock, backup: FakeUpstream, fault: BedrockFault, stream: bool
) -> None:
    bedrock.script(fault, fault)  # both attempts on bedrock fail
    client = gateway.client()
    if stream:
        chunks = list(client.chat.completions.create(model="auto", messages=USER, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = (
            client.chat.completions.create(model="auto", messages=USER).choices[0].message.content
            or ""
        )
    assert text == "backup says: hello there"
    assert len(bedrock.requests) == 2 and len(backup.requests) == 1
    (record,) = gateway.records(1)
    assert record.model == "backup"
