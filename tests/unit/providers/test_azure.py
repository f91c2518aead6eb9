"""Azure's URLs, its stream quirks as the gateway reads them, and the Entra ID token cache."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import msgspec
import pytest
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

from gateway.pipeline.reply import StreamMeter
from gateway.policy.models import AzureOptions
from gateway.providers import AttemptFailed, Usage
from gateway.providers.azure import without_filter_quirks
from gateway.providers.azure_auth import REFRESH_MARGIN_S, EntraToken
from gateway.providers.azure_openai import urls
from gateway.providers.sse import DataLines

FIXTURES = Path(__file__).parents[2] / "fakes" / "azure_fixtures"
R = "https://res.openai.azure.com"
DEPLOYMENT = f"{R}/openai/deployments/dep"


@pytest.mark.parametrize("base_url", [R, f"{R}/", f"{R}/openai", f"{R}/openai/", f"{R}/openai/v1"])
@pytest.mark.parametrize(
    ("azure", "chat", "embeddings"),
    [
        (
            AzureOptions(deployment="dep", api_version="2024-10-21"),
            f"{DEPLOYMENT}/chat/completions?api-version=2024-10-21",
            f"{DEPLOYMENT}/embeddings?api-version=2024-10-21",
        ),
        (  # no deployment: the policy's model names it
            AzureOptions(api_version="2025-04-01-preview"),
            f"{R}/openai/deployments/the-model/chat/completions?api-version=2025-04-01-preview",
            f"{R}/openai/deployments/the-model/embeddings?api-version=2025-04-01-preview",
        ),
        (  # no api-version: the v1 API, the deployment goes in the body's model
            AzureOptions(deployment="dep"),
            f"{R}/openai/v1/chat/completions",
            f"{R}/openai/v1/embeddings",
        ),
        (AzureOptions(), f"{R}/openai/v1/chat/completions", f"{R}/openai/v1/embeddings"),
    ],
)
def test_url_matrix(base_url: str, azure: AzureOptions, chat: str, embeddings: str) -> None:
    assert urls(base_url, azure, "the-model") == (chat, embeddings)


def _payloads(name: str) -> list[bytes]:
    lines = DataLines()
    payloads = lines.feed((FIXTURES / name).read_bytes())
    assert lines.done
    return payloads


def test_the_prompt_filter_chunk_goes_and_filter_only_chunks_get_a_delta() -> None:
    raw = _payloads("chat_stream.sse")
    cleaned = without_filter_quirks(raw)
    assert len(cleaned) == len(raw) - 1  # only the prompt_filter_results chunk went
    chunks = [msgspec.json.decode(c) for c in cleaned]
    assert "prompt_filter_results" not in chunks[0] and chunks[0]["choices"]
    for chunk in chunks:
        assert all("delta" in choice for choice in chunk["choices"]), chunk
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 1209
    untouched = [c for c in raw if b'"delta"' in c]  # chunks with a delta are not re-encoded
    assert [c for c in cleaned if c in untouched] == untouched


@pytest.mark.parametrize("wants_usage", [True, False])
def test_the_gateway_reads_an_azure_stream_whole(wants_usage: bool) -> None:
    meter = StreamMeter(wants_usage)
    forwarded = meter.passed(without_filter_quirks(_payloads("chat_stream.sse")))
    answer = meter.answer
    assert answer.text == "Hello! How can I help?" and answer.finish_reason == "stop"
    assert answer.upstream_model == "gpt-4o-2024-08-06"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1200, 9)
    assert answer.usage.cached_tokens == 1024
    assert any(b'"usage":{' in c for c in forwarded) is wants_usage
    assert all(msgspec.json.decode(c)["choices"] or wants_usage for c in forwarded)


def test_a_content_filter_finish_passes_through() -> None:
    cleaned = without_filter_quirks(_payloads("content_filter.sse"))
    chunks = [msgspec.json.decode(c) for c in cleaned]
    (finish,) = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish["choices"][0]["finish_reason"] == "content_filter"
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    meter = StreamMeter(True)
    meter.passed(cleaned)
    assert meter.answer.finish_reason == "content_filter" and not meter.answer.cacheable
    assert meter.answer.usage == Usage(30, 4, 34, meter.answer.usage.prompt_tokens_details)


@pytest.mark.parametrize("payload", [b"not json", b'{"error": {"message": "x"}}', b"[1]"])
def test_what_is_not_a_chunk_passes_as_it_is(payload: bytes) -> None:
    assert without_filter_quirks([payload]) == [payload]


class Credential:
    """Issues ``token-N`` tokens valid for ``lifetime_s`` by ``clock``; a fetch takes
    ``delay_s`` (the thread it runs in sleeps), so concurrent requests overlap."""

    def __init__(self, clock: list[float], lifetime_s: float = 3600, delay_s: float = 0) -> None:
        self.clock, self.lifetime_s, self.delay_s = clock, lifetime_s, delay_s
        self.scopes: list[str] = []
        self.threads: set[int] = set()
        self.fail = False

    def get_token_info(self, *scopes: str) -> AccessTokenInfo:
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        if self.fail:
            raise ClientAuthenticationError("no identity here")
        self.scopes.append(scopes[0])
        return AccessTokenInfo(f"token-{len(self.scopes)}", int(self.clock[0] + self.lifetime_s))

    def close(self) -> None:
        pass


def _token(credential: Credential) -> EntraToken:
    return EntraToken("scope/.default", lambda: credential, clock=lambda: credential.clock[0])


async def test_a_token_is_kept_until_near_its_expiry() -> None:
    credential = Credential([1_000_000.0])
    token = _token(credential)
    assert (await token.current()).token == "token-1"
    credential.clock[0] += 3600 - REFRESH_MARGIN_S - 1
    assert (await token.current()).token == "token-1"
    credential.clock[0] += 2  # inside the margin: replaced before use
    assert (await token.current()).token == "token-2"
    credential.clock[0] += 61 * 60  # an hour later, expired: replaced
    assert (await token.current()).token == "token-3"
    assert credential.scopes == ["scope/.default"] * 3 and token.fetches == 3


async def test_refresh_on_is_honoured() -> None:
    credential = Credential([1_000_000.0])
    token = _token(credential)
    first = await token.current()
    token._token = AccessTokenInfo(first.token, first.expires_on, refresh_on=1_000_010)
    credential.clock[0] += 11
    assert (await token.current()).token == "token-2"


async def test_concurrent_refreshes_coalesce_off_the_loop() -> None:
    credential = Credential([1_000_000.0], delay_s=0.2)
    token = _token(credential)
    got = await asyncio.gather(*(token.current() for _ in range(20)))
    assert {t.token for t in got} == {"token-1"} and token.fetches == 1
    assert threading.get_ident() not in credential.threads  # fetched in a worker thread
    stale = got[0]
    again = await asyncio.gather(*(token.refresh(stale) for _ in range(20)))
    assert {t.token for t in again} == {"token-2"} and token.fetches == 2


async def test_the_loop_runs_while_a_token_is_fetched() -> None:
    credential = Credential([1_000_000.0], delay_s=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await _token(credential).current()
    ticker.cancel()
    assert ticks >= 10


async def test_no_credential_is_a_401_for_the_call_stage() -> None:
    credential = Credential([0.0])
    credential.fail = True
    with pytest.raises(AttemptFailed) as caught:
        await _token(credential).current()
    assert (caught.value.kind, caught.value.status) == ("status", 401)
    assert not caught.value.retryable and not caught.value.clients_fault  # a fallback helps
