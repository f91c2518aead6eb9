"""The exact cache through the running gateway: hits, streams, Cache-Control, tenants, Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault

MESSAGES = [{"role": "user", "content": "what is a cache"}]


def ask(
    gw: Gateway, key: str | None = None, headers: dict[str, str] | None = None, **body: object
) -> openai._legacy_response.LegacyAPIResponse:  # type: ignore[name-defined]
    client = gw.client(key) if key else gw.client()
    return client.chat.completions.with_raw_response.create(
        model="auto", messages=MESSAGES, extra_headers=headers, **body
    )  # type: ignore[arg-type]


def streamed(gw: Gateway, **body: object) -> tuple[dict[str, str], str, list[object]]:
    with gw.client().chat.completions.with_streaming_response.create(
        model="auto", messages=MESSAGES, stream=True, **body
    ) as response:  # type: ignore[arg-type]
        chunks = list(response.parse())
        headers = dict(response.headers)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return headers, text, chunks


def test_a_repeated_request_is_answered_from_the_cache(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    first = ask(gateway)
    assert first.headers["x-gateway-cache"] == "miss"
    second = ask(gateway)
    assert second.headers["x-gateway-cache"] == "exact"
    assert second.headers["x-gateway-route"] == "cache"
    assert second.headers["x-gateway-model"] == "main"
    assert second.headers["x-gateway-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().usage == first.parse().usage
    assert second.parse().id != first.parse().id
    assert len(primary.requests) == 1


def test_an_answer_stored_once_serves_both_streams_and_completions(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    headers, text, _ = streamed(gateway)
    assert headers["x-gateway-cache"] == "miss"
    # the client did not ask for usage; the gateway asks upstream all the same, to cost the stream
    assert primary.requests[-1].body["stream_options"] == {"include_usage": True}
    hit = ask(gateway)
    assert hit.headers["x-gateway-cache"] == "exact"
    assert hit.parse().choices[0].message.content == text
    headers, replayed, chunks = streamed(gateway, stream_options={"include_usage": True})
    assert headers["x-gateway-cache"] == "exact" and replayed == text
    assert chunks[-1].usage is not None  # type: ignore[attr-defined]
    headers, _, chunks = streamed(gateway)
    assert all(getattr(c, "usage", None) is None for c in chunks)  # not asked, not sent
    assert len(primary.requests) == 1


def test_broken_and_failed_answers_are_never_stored(
    gateway: Gateway, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    primary.script(Fault(drop_after_chunks=2))
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {TENANT_KEY}"},
        json={"model": "auto", "messages": MESSAGES, "stream": True},
    ) as response:
        assert "upstream_stream_broken" in response.read().decode()
    primary.script(Fault(status=400))
    with pytest.raises(openai.BadRequestError):
        ask(gateway)
    assert ask(gateway).headers["x-gateway-cache"] == "miss"
    assert ask(gateway).headers["x-gateway-cache"] == "exact"


def test_cache_control_headers(gateway: Gateway, primary: FakeUpstream) -> None:
    assert ask(gateway, headers={"cache-control": "no-store"}).headers["x-gateway-cache"] == "miss"
    assert ask(gateway).headers["x-gateway-cache"] == "miss"  # the first was not stored
    assert (
        ask(gateway, headers={"cache-control": "no-cache"}).headers["x-gateway-cache"] == "bypass"
    )
    assert (
        ask(gateway, headers={"cache-control": "max-age=3600"}).headers["x-gateway-cache"]
        == "exact"
    )
    assert ask(gateway, temperature=1.5).headers["x-gateway-cache"] == "bypass"
    assert len(primary.requests) == 4


def test_tenants_never_share_answers(gateway: Gateway) -> None:
    ask(gateway)
    assert ask(gateway).headers["x-gateway-cache"] == "exact"
    assert ask(gateway, OTHER_KEY).headers["x-gateway-cache"] == "miss"


def test_admin_flush(gateway: Gateway) -> None:
    ask(gateway)
    ask(gateway, OTHER_KEY)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    flushed = httpx.delete(f"{gateway.url}/admin/cache", params={"tenant": "team-a"}, headers=admin)
    assert flushed.status_code == 200 and flushed.json()["flushed"]["exact"] == 1
    assert ask(gateway).headers["x-gateway-cache"] == "miss"
    assert ask(gateway, OTHER_KEY).headers["x-gateway-cache"] == "exact"
    assert httpx.delete(f"{gateway.url}/admin/cache").status_code == 401


def test_two_gateways_share_the_redis_cache(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    tmp_path: Path,
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    text = policy_text(primary, backup) + f"cache: {{namespace: {namespace}}}\n"
    one = start_gateway(text, redis_url="redis://127.0.0.1:6379/0")
    two = start_gateway(text, redis_url="redis://127.0.0.1:6379/0")
    assert ask(one).headers["x-gateway-cache"] == "miss"
    assert ask(two).headers["x-gateway-cache"] == "exact"
    assert httpx.get(f"{two.url}/readyz").json()["stores"]["exact_cache"] == "redis"
    httpx.delete(f"{one.url}/admin/cache", headers={"authorization": f"Bearer {ADMIN_KEY}"})


def test_unreachable_redis_degrades_but_serves(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), redis_url="redis://127.0.0.1:9/0")
    first = ask(gw)
    assert first.headers["x-gateway-cache"] == "bypass"
    assert first.parse().choices[0].message.content == "primary says: what is a cache"
    ready = httpx.get(f"{gw.url}/readyz").json()
    assert ready["status"] == "degraded"
    assert ready["stores"]["exact_cache"] == "degraded"
