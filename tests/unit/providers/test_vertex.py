"""The vertex provider against the fake Vertex and token service (real HTTP, google-auth's own
JWT signing and exchange): which API a model goes to, and the token's refreshes (PITFALLS 3.8:
a clock past the token's hour and a forced 401 each cost one refresh, concurrent ones
coalesce)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from gateway.policy.models import ModelConfig
from gateway.providers import AttemptFailed
from gateway.providers.vertex import Vertex, claude_url, gemini_base_url, utc_now
from tests.fakes.vertex import LOCATION, PROJECT, FakeVertex
from tests.servers import module_fixtures

ASK = {"messages": [{"role": "user", "content": "hi"}]}


_vertex, vertex = module_fixtures("vertex", FakeVertex)


def _config(fake: FakeVertex, tmp_path: Path, model: str, **gcp: str) -> ModelConfig:
    credentials = str(fake.service_account(tmp_path))
    return ModelConfig.model_validate(
        {
            "provider": "vertex",
            "base_url": fake.base_url,
            "model": model,
            "gcp": {"project": PROJECT, "location": LOCATION, "credentials_file": credentials}
            | gcp,
        }
    )


@pytest.mark.parametrize(
    ("location", "model", "url"),
    [
        (
            "us-east5",
            "claude-sonnet-4-5@20250929",
            "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/"
            "publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict",
        ),
        (
            "global",
            "anthropic/claude-opus-4-1",
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/"
            "publishers/anthropic/models/claude-opus-4-1:rawPredict",
        ),
        (
            "europe-west4",
            "google/gemini-2.5-flash",
            "https://europe-west4-aiplatform.googleapis.com/v1beta1/projects/p/locations/"
            "europe-west4/endpoints/openapi",
        ),
    ],
)
def test_urls(location: str, model: str, url: str) -> None:
    config = ModelConfig.model_validate(
        {"provider": "vertex", "model": model, "gcp": {"project": "p", "location": location}}
    )
    built = gemini_base_url(config) if model.startswith("google/") else claude_url(config, False)
    assert built == url


@pytest.mark.parametrize("model", ["google/gemini-2.5-flash", "claude-sonnet-4-5"])
async def test_a_clock_past_the_hour_refreshes_once_before_sending(
    vertex: FakeVertex, tmp_path: Path, model: str
) -> None:
    now = utc_now()
    provider = Vertex(_config(vertex, tmp_path, model), clock=lambda: now)
    try:
        await provider.complete(ASK)
        await provider.complete(ASK)
        assert vertex.tokens_issued == 1  # kept while it is fresh
        vertex.expires_in = 3 * 3600  # the next token outlives the jump
        now += dt.timedelta(minutes=61)
        answer = json.loads((await provider.complete(ASK)).body)
        assert answer["choices"][0]["message"]["content"]
        assert vertex.tokens_issued == 2 and vertex.refused == 0
        await provider.complete(ASK)
        assert vertex.tokens_issued == 2
    finally:
        await provider.aclose()


@pytest.mark.parametrize("model", ["google/gemini-2.5-flash", "claude-sonnet-4-5"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_401_refreshes_once_and_tries_again_once(
    vertex: FakeVertex, tmp_path: Path, model: str, stream: bool
) -> None:
    provider = Vertex(_config(vertex, tmp_path, model))
    try:
        await provider.complete(ASK)
        vertex.revoke()
        if stream:
            usage = {"stream": True, "stream_options": {"include_usage": True}}
            batches = [b async for b in provider.stream(ASK | usage)]
            assert json.loads(batches[-1][-1])["usage"]["completion_tokens"] > 0
        else:
            await provider.complete(ASK)
        assert (vertex.tokens_issued, vertex.refused) == (2, 1)
    finally:
        await provider.aclose()


async def test_concurrent_refreshes_coalesce(vertex: FakeVertex, tmp_path: Path) -> None:
    provider = Vertex(_config(vertex, tmp_path, "google/gemini-2.5-flash"))
    try:
        await asyncio.gather(*(provider.complete(ASK) for _ in range(8)))
        assert vertex.tokens_issued == 1
        vertex.revoke()
        await asyncio.gather(*(provider.complete(ASK) for _ in range(8)))
        assert (vertex.tokens_issued, vertex.refused) == (2, 8)
    finally:
        await provider.aclose()


async def test_a_401_that_persists_is_not_retried_again(vertex: FakeVertex, tmp_path: Path) -> None:
    config = _config(vertex, tmp_path, "claude-sonnet-4-5")
    provider = Vertex(config)
    try:
        await provider.complete(ASK)
        (tmp_path / "new").mkdir()
        vertex.service_account(tmp_path / "new")  # a new key: the old one's JWTs are refused
        vertex.revoke()
        with pytest.raises(AttemptFailed) as caught:
            await provider.complete(ASK)
        assert caught.value.status == 401 and "no Google token" in caught.value.message
        assert not caught.value.retryable and not caught.value.clients_fault
    finally:
        await provider.aclose()


async def test_the_claude_body_is_vertex_shaped(vertex: FakeVertex, tmp_path: Path) -> None:
    provider = Vertex(_config(vertex, tmp_path, "anthropic/claude-sonnet-4-5@20250929"))
    try:
        answer = json.loads((await provider.complete(ASK)).body)
    finally:
        await provider.aclose()
    assert answer["choices"][0]["message"]["content"] == "claude says: hi"
    assert vertex.claude.problems == [] and vertex.claude_models == ["claude-sonnet-4-5@20250929"]
    sent = vertex.claude.requests[0]
    assert "model" not in sent.body and sent.body["anthropic_version"] == "vertex-2023-10-16"
    assert "x-api-key" not in sent.headers and "anthropic-version" not in sent.headers
