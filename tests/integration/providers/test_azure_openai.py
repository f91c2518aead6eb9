"""``provider: azure_openai``: the openai SDK -> the gateway -> the fake Azure OpenAI (a real
server that checks path, api-version, api-key or bearer token, and answers in Azure's format,
filter chunks included), streamed and not, with a tool loop, a fallback after 503s, the
ledger's cost; Entra ID tokens from azure-identity's real DefaultAzureCredential (managed
identity, pointed at a fake token endpoint); the provider's errors and its 401 refresh."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.azure_openai import AzureOpenAI
from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream, usage
from tests.fakes.azure import FILTERED_WORD, FakeAzureOpenAI, FakeIdentity, UncachedCredential
from tests.fakes.policy import policy
from tests.integration.providers.client import TOOLS, stream_chunks

KEY = "azure-openai-key-0123456789"
DEPLOYMENT = "gpt-4o-deployment"


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[FakeAzureOpenAI, FakeIdentity]]:
    identity = FakeIdentity().start()
    azure = FakeAzureOpenAI("azure", KEY, identity).start()
    yield azure, identity
    azure.stop()
    identity.stop()


@pytest.fixture
def azure(_servers: tuple[FakeAzureOpenAI, FakeIdentity]) -> FakeAzureOpenAI:
    fake, identity = _servers
    fake.requests.clear()
    fake.revoked.clear()
    fake.replay.clear()
    fake._faults.clear()
    fake.identity = identity
    return fake


@pytest.fixture
def identity(
    _servers: tuple[FakeAzureOpenAI, FakeIdentity], monkeypatch: pytest.MonkeyPatch
) -> FakeIdentity:
    """The fake token endpoint, where azure-identity's managed identity credential looks."""
    return _servers[1].use(monkeypatch)


PRICE = "{input_per_mtok: 2.50, cached_input_per_mtok: 1.25, output_per_mtok: 10}"


def deployment_model(azure: FakeAzureOpenAI) -> str:
    return textwrap.dedent(f"""\
        provider: azure_openai
        base_url: {azure.url}/
        model: gpt-4o
        api_key: {KEY}
        azure: {{deployment: {DEPLOYMENT}, api_version: "2024-10-21"}}""")


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], azure: FakeAzureOpenAI, backup: FakeUpstream
) -> Gateway:
    return start_gateway(policy(backup, "gpt", deployment_model(azure), PRICE))


def _ask(client: openai.OpenAI, messages: Any, stream: bool, **extra: Any) -> dict[str, Any]:
    """The answer as one dict (a stream's chunks folded), checking each chunk's shape."""
    if not stream:
        return client.chat.completions.create(model="auto", messages=messages, **extra).to_dict()
    chunks = stream_chunks(client, messages, **extra)
    assert all(c.choices for c in chunks[:-1]) and chunks[-1].choices == []  # no filter chunk
    assert all(choice.delta is not None for c in chunks for choice in c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    calls = [t for c in chunks[:-1] for t in c.choices[0].delta.tool_calls or []]
    message: dict[str, Any] = {"content": text or None}
    if calls:
        arguments = "".join(t.function.arguments or "" for t in calls if t.function)
        message["tool_calls"] = [
            {"id": calls[0].id, "function": {"name": "lookup", "arguments": arguments}}
        ]
    finish = [c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason]
    usage = chunks[-1].usage.to_dict() if chunks[-1].usage else None
    return {"choices": [{"message": message, "finish_reason": finish[-1]}], "usage": usage}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_loop_through_a_deployment(
    gateway: Gateway, azure: FakeAzureOpenAI, stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "find kiwi"}]
    answer = _ask(gateway.client(), messages, stream, tools=TOOLS)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"echo": "find kiwi"}
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [{**call, "type": "function"}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "a green fruit"},
    ]
    final = _ask(gateway.client(), messages, stream, tools=TOOLS)
    assert final["choices"][0]["message"]["content"] == "azure got the tool's result: a green fruit"
    for request in azure.requests:
        assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
        assert request.query == {"api-version": "2024-10-21"}
        assert request.headers["api-key"] == KEY and "authorization" not in request.headers
        assert request.body["model"] == "gpt-4o" and request.body["tools"] == TOOLS
        assert request.body.get("stream", False) is stream
    assert azure.requests[1].body["messages"][2]["tool_call_id"] == call["id"]


@pytest.mark.parametrize("stream", [False, True])
def test_503s_fall_back_to_the_next_provider(
    gateway: Gateway, azure: FakeAzureOpenAI, backup: FakeUpstream, stream: bool
) -> None:
    azure.script(503, 503)
    answer = _ask(gateway.client(), [{"role": "user", "content": "hello"}], stream)
    assert answer["choices"][0]["message"]["content"] == "backup says: hello"
    assert len(azure.requests) == 2 and len(backup.requests) == 1
    assert gateway.records(1)[0].model == "backup"


@pytest.mark.parametrize("stream", [False, True])
def test_a_filtered_prompt_is_the_clients_400_without_a_fallback(
    gateway: Gateway, azure: FakeAzureOpenAI, backup: FakeUpstream, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(gateway.client(), [{"role": "user", "content": FILTERED_WORD}], stream)
    assert caught.value.code == "content_filter" and caught.value.param == "prompt"
    assert caught.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"  # type: ignore[index]
    assert len(azure.requests) == 1 and backup.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_ledger_cost_is_usage_times_price(
    gateway: Gateway, azure: FakeAzureOpenAI, stream: bool
) -> None:
    messages = [{"role": "user", "content": f"price these words {stream}"}]
    answer = _ask(gateway.client(), messages, stream)
    text = answer["choices"][0]["message"]["content"]
    sent = usage({"messages": messages}, text)
    assert answer["usage"]["prompt_tokens"] == sent["prompt_tokens"]
    assert answer["usage"]["completion_tokens"] == sent["completion_tokens"]
    (record,) = gateway.records(1)
    assert (record.model, record.estimated, record.stream) == ("gpt", False, stream)
    assert (record.input_tokens, record.output_tokens) == (
        sent["prompt_tokens"],
        sent["completion_tokens"],
    )
    expected = (
        sent["prompt_tokens"] * Decimal("2.50") + sent["completion_tokens"] * 10
    ) / 1_000_000
    assert record.cost_usd == expected
    assert round(record.cost_usd, 2) == round(expected, 2)


def test_the_v1_api_with_entra_id_tokens(
    start_gateway: Callable[..., Gateway],
    azure: FakeAzureOpenAI,
    backup: FakeUpstream,
    identity: FakeIdentity,
) -> None:
    """azure-identity's own DefaultAzureCredential finds the (fake) managed identity; one token
    serves every request until it nears its expiry."""
    model = textwrap.dedent(f"""\
        provider: azure_openai
        base_url: {azure.url}/openai/v1
        model: {DEPLOYMENT}
        azure: {{auth: entra_id}}""")
    gateway = start_gateway(policy(backup, "gpt", model, PRICE))
    for i, stream in enumerate((False, True, False)):  # new texts: not the gateway's cache
        answer = _ask(gateway.client(), [{"role": "user", "content": f"hi {i}"}], stream)
        assert answer["choices"][0]["message"]["content"] == f"azure says: hi {i}"
    assert list(identity.issued.values()) == ["https://cognitiveservices.azure.com"]
    (token,) = identity.issued
    for request in azure.requests:
        assert request.path == "/openai/v1/chat/completions" and request.query == {}
        assert request.headers["authorization"] == f"Bearer {token}"
        assert "api-key" not in request.headers and request.body["model"] == DEPLOYMENT
    assert len(azure.requests) == 3 and backup.requests == []


def _config(fake: FakeAzureOpenAI, **fields: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "provider": "azure_openai",
            "base_url": fake.url,
            "model": "gpt-4o",
            "api_key": KEY,
            "azure": {"deployment": DEPLOYMENT, "api_version": "2024-10-21"},
            "retries": {"max_attempts": 1},
            **fields,
        }
    )


BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("status", "retry_after", "retryable"),
    [(429, "7", True), (503, None, True), (500, None, True), (404, None, False)],
)
async def test_errors_are_mapped_at_the_provider(
    azure: FakeAzureOpenAI, status: int, retry_after: str | None, retryable: bool
) -> None:
    azure.script(status, retry_after=retry_after)
    provider = AzureOpenAI(_config(azure))
    try:
        with pytest.raises(AttemptFailed) as caught:
            await provider.complete(dict(BODY))
    finally:
        await provider.aclose()
    failure = caught.value
    assert (failure.kind, failure.status, failure.retryable) == ("status", status, retryable)
    assert failure.retry_after == (7.0 if retry_after else None)
    assert failure.body == {"error": {"code": str(status), "message": f"azure injected {status}"}}
    assert f"azure injected {status}" in failure.message


@pytest.mark.parametrize(
    ("fields", "status", "clients_fault"),
    [
        ({"api_key": "wrong-key"}, 401, False),
        ({"azure": {"deployment": DEPLOYMENT, "api_version": "1999-01-01"}}, 400, True),
        ({"azure": {"deployment": "nope", "api_version": "2024-10-21"}}, 404, False),
    ],
)
async def test_the_fake_checks_key_version_and_deployment(
    azure: FakeAzureOpenAI, fields: dict[str, Any], status: int, clients_fault: bool
) -> None:
    provider = AzureOpenAI(_config(azure, **fields))
    try:
        with pytest.raises(AttemptFailed) as caught:
            await provider.complete(dict(BODY))
    finally:
        await provider.aclose()
    assert (caught.value.status, caught.value.clients_fault) == (status, clients_fault)
    assert len(azure.requests) == 1  # the provider does not retry; the call stage decides


async def test_embeddings_at_the_deployment(azure: FakeAzureOpenAI) -> None:
    provider = AzureOpenAI(_config(azure, kind="embeddings", model="text-embedding-3-small"))
    try:
        embedded = await provider.embed({"input": ["a b", "c"], "model": "x"})
    finally:
        await provider.aclose()
    assert embedded.vectors.shape == (2, 8) and embedded.prompt_tokens == 3
    (request,) = azure.requests
    assert request.path == f"/openai/deployments/{DEPLOYMENT}/embeddings"
    assert request.query == {"api-version": "2024-10-21"}


async def test_a_recorded_stream_replays_cleaned(azure: FakeAzureOpenAI) -> None:
    azure.replay.append("content_filter.sse")
    provider = AzureOpenAI(_config(azure))
    try:
        batches = [b async for b in provider.stream({**BODY, "stream": True})]
    finally:
        await provider.aclose()
    chunks = [json.loads(c) for batch in batches for c in batch]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [
        None,
        None,
        "content_filter",
    ]
    assert all("delta" in c["choices"][0] for c in chunks if c["choices"])
    assert chunks[-1]["usage"]["total_tokens"] == 34


def _entra(
    azure: FakeAzureOpenAI, identity: FakeIdentity
) -> tuple[AzureOpenAI, UncachedCredential]:
    credential = UncachedCredential(identity)
    config = _config(azure, api_key=None, azure={"deployment": DEPLOYMENT,
                     "api_version": "2024-10-21", "auth": "entra_id"})  # fmt: skip
    return AzureOpenAI(config, lambda: credential), credential


@pytest.mark.parametrize("stream", [False, True])
async def test_a_401_refreshes_the_token_once_and_retries_once(
    azure: FakeAzureOpenAI, identity: FakeIdentity, stream: bool
) -> None:
    provider, credential = _entra(azure, identity)

    async def ask() -> str:
        if stream:
            batches = [b async for b in provider.stream({**BODY, "stream": True})]
            return "".join(
                json.loads(c)["choices"][0]["delta"].get("content") or ""
                for batch in batches
                for c in batch
                if json.loads(c)["choices"]
            )
        reply = await provider.complete(dict(BODY))
        return str(json.loads(reply.body)["choices"][0]["message"]["content"])

    try:
        assert await ask() == "azure says: hi"
        azure.revoked.update(identity.issued)  # the token held is revoked: one 401
        assert await ask() == "azure says: hi"
        assert credential.calls == 2 and len(azure.requests) == 3
        tokens = [r.headers["authorization"] for r in azure.requests]
        assert tokens[0] == tokens[1] != tokens[2]
        azure.identity = None  # every token refused now: one refresh, one retry, then a 401
        with pytest.raises(AttemptFailed) as caught:
            await ask()
        assert caught.value.status == 401
        assert credential.calls == 3 and len(azure.requests) == 5
    finally:
        await provider.aclose()
