"""``provider: azure_ml``: the openai SDK -> the gateway -> a fake Azure ML online endpoint (a
real server that checks the scoring path, the key or an Entra ID token for ml.azure.com, the
``azureml-model-deployment`` header and the body's shape), with a TGI container (generate API)
and an OpenAI-speaking one, streamed and not; tools refused with a 400, a fallback after 503s,
the ledger's cost."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream
from tests.fakes.azure import FakeAzureML, FakeIdentity
from tests.fakes.policy import policy
from tests.integration.providers.client import TOOLS as LOOKUP
from tests.integration.providers.client import stream_chunks

KEY = "azure-ml-endpoint-key-0123456789"


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[FakeAzureML, FakeAzureML, FakeIdentity]]:
    identity = FakeIdentity().start()
    tgi = FakeAzureML("aml", KEY, identity, container="tgi", deployment="blue").start()
    chat = FakeAzureML("chat", KEY, identity).start()
    yield tgi, chat, identity
    for server in (tgi, chat, identity):
        server.stop()


@pytest.fixture
def tgi(_servers: tuple[FakeAzureML, FakeAzureML, FakeIdentity]) -> FakeAzureML:
    _servers[0].requests.clear()
    _servers[0]._faults.clear()
    return _servers[0]


@pytest.fixture
def chat(
    _servers: tuple[FakeAzureML, FakeAzureML, FakeIdentity], monkeypatch: pytest.MonkeyPatch
) -> FakeAzureML:
    """The OpenAI-speaking endpoint, its tokens from the fake managed identity."""
    _servers[2].use(monkeypatch)
    _servers[1].requests.clear()
    return _servers[1]


PRICE = "{input_per_mtok: 0.50, output_per_mtok: 1.50}"


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], tgi: FakeAzureML, backup: FakeUpstream
) -> Gateway:
    model = textwrap.dedent(f"""\
        provider: azure_ml
        base_url: {tgi.url}/score
        model: falcon-7b-instruct
        api_key: {KEY}
        azure: {{deployment: blue}}
        container: {{format: tgi}}""")
    return start_gateway(policy(backup, "aml", model, PRICE))


def _ask(client: openai.OpenAI, text: str, stream: bool, **extra: Any) -> tuple[str, str, Any]:
    """The answer's text, finish reason and usage (a stream's chunks folded)."""
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    if not stream:
        answer = client.chat.completions.create(model="auto", messages=messages, **extra)
        choice = answer.choices[0]
        return choice.message.content or "", choice.finish_reason, answer.usage
    chunks = stream_chunks(client, messages, **extra)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in with_choices)
    return content, with_choices[-1].choices[0].finish_reason, chunks[-1].usage


@pytest.mark.parametrize("stream", [False, True])
def test_a_tgi_container(
    gateway: Gateway, tgi: FakeAzureML, backup: FakeUpstream, stream: bool
) -> None:
    text, finish, usage = _ask(gateway.client(), f"hello {stream}", stream, max_tokens=40)
    assert (text, finish) == (f"aml says: hello {stream}", "stop")
    (request,) = tgi.requests
    assert request.path == "/score" and request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["azureml-model-deployment"] == "blue"
    assert request.body["inputs"] == f"System: Be brief.\n\nUser: hello {stream}\n\nAssistant:"
    assert request.body["stream"] is stream and request.body["parameters"]["max_new_tokens"] == 40
    assert backup.requests == []
    (record,) = gateway.records(1)
    assert record.model == "aml"
    if stream:  # TGI does not count a streamed prompt: no usage, the ledger estimates
        assert usage is None and record.estimated
        return
    prompt_tokens = len(request.body["inputs"].split())  # the fake's prefill: a token a word
    completion_tokens = len(text.split()) + 1  # and the end-of-sequence token
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert (record.input_tokens, record.output_tokens, record.estimated) == (
        prompt_tokens,
        completion_tokens,
        False,
    )
    expected = (prompt_tokens * Decimal("0.50") + completion_tokens * Decimal("1.50")) / 1_000_000
    assert record.cost_usd == expected


TOOLS: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tools_are_refused_by_name_without_a_fallback(
    gateway: Gateway, tgi: FakeAzureML, backup: FakeUpstream, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(gateway.client(), "call f", stream, tools=TOOLS)
    assert caught.value.status_code == 400 and caught.value.param == "tools"
    assert tgi.requests == [] and backup.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_503s_fall_back_to_the_next_provider(
    gateway: Gateway, tgi: FakeAzureML, backup: FakeUpstream, stream: bool
) -> None:
    tgi.script(503, 503)
    text, _, _ = _ask(gateway.client(), "hello", stream)
    assert text == "backup says: hello"
    assert len(tgi.requests) == 2 and len(backup.requests) == 1
    assert gateway.records(1)[0].model == "backup"


def test_an_openai_container_with_entra_id_tokens(
    start_gateway: Callable[..., Gateway], chat: FakeAzureML, backup: FakeUpstream
) -> None:
    """azure-identity's DefaultAzureCredential (the fake managed identity) for ml.azure.com;
    the body passes through, the stream cleared of Azure's filter chunks."""
    model = textwrap.dedent(f"""\
        provider: azure_ml
        base_url: {chat.url}/score
        model: llama-3-8b
        azure: {{auth: entra_id}}""")
    gateway = start_gateway(policy(backup, "aml", model, PRICE))
    for stream in (False, True):
        text, finish, usage = _ask(gateway.client(), f"hi {stream}", stream)
        assert (text, finish) == (f"chat says: hi {stream}", "stop")
        assert usage is not None and usage.completion_tokens == len(text.split())
    (token,) = chat.identity.issued  # type: ignore[union-attr]
    assert chat.identity.issued[token] == "https://ml.azure.com"  # type: ignore[union-attr]
    for request in chat.requests:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert "azureml-model-deployment" not in request.headers
        assert (
            request.body["model"] == "llama-3-8b" and request.body["messages"][1]["role"] == "user"
        )
    assert len(chat.requests) == 2 and backup.requests == []
    assert [r.estimated for r in gateway.records(2)] == [False, False]


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_container_runs_a_tool_call(
    start_gateway: Callable[..., Gateway], chat: FakeAzureML, backup: FakeUpstream, stream: bool
) -> None:
    """The tools and the tool's result pass through to the container and back, streamed too;
    the ledger prices the call."""
    model = textwrap.dedent(f"""\
        provider: azure_ml
        base_url: {chat.url}/score
        model: llama-3-8b
        api_key: {KEY}""")
    gateway = start_gateway(policy(backup, "aml", model, PRICE))
    client = gateway.client()
    messages: Any = [{"role": "user", "content": "kiwi"}]
    if stream:
        chunks = stream_chunks(client, messages, tools=LOOKUP)
        calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
        first = next(call[0] for call in calls if call)
        call_id, name = first.id, first.function.name  # type: ignore[union-attr]
        arguments = "".join(call[0].function.arguments or "" for call in calls if call)  # type: ignore[union-attr]
    else:
        answer = client.chat.completions.create(model="auto", messages=messages, tools=LOOKUP)
        (tool_call,) = answer.choices[0].message.tool_calls or []
        assert answer.choices[0].finish_reason == "tool_calls"
        call_id, name = tool_call.id, tool_call.function.name  # type: ignore[union-attr]
        arguments = tool_call.function.arguments  # type: ignore[union-attr]
    assert (name, json.loads(arguments)) == ("lookup", {"echo": "kiwi"})
    function = {"name": name, "arguments": arguments}
    messages += [
        {
            "role": "assistant",
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "a green fruit"},
    ]
    final = client.chat.completions.create(model="auto", messages=messages, tools=LOOKUP)
    assert final.choices[0].message.content == "chat got the tool's result: a green fruit"
    assert [r.body["tools"] for r in chat.requests] == [LOOKUP, LOOKUP]
    assert chat.requests[1].body["messages"][2]["tool_call_id"] == call_id
    first_record = gateway.records(2)[0]
    assert first_record.cost_usd == (
        Decimal(first_record.input_tokens) * Decimal("0.50")
        + Decimal(first_record.output_tokens) * Decimal("1.50")
    ) / Decimal(1_000_000)
    assert backup.requests == []
