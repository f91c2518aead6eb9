"""Tenant isolation: every way one tenant could read another's data, tried, and none works.

Two tenants (``team-a`` with `TENANT_KEY`, ``team-b`` with `OTHER_KEY`) of one gateway: the
exact cache (in memory and in Redis), the semantic cache, sticky sessions, the admin API (cost
reports, the dashboard, the policy, cache flushes), ``/metrics``, ``/readyz``, ``/v1/models``,
the errors and the request ids. Client calls go through the official openai SDK.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream
from tests.servers import RedisProcess

QUESTION = "What is the capital city of France?"
SECRET = "the launch code of team a is 0000"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_PATHS = [
    ("GET", "/admin/reports/cost"),
    ("GET", "/admin/reports/cost?format=csv"),
    ("GET", "/admin/policy"),
    ("POST", "/admin/policy/reload"),
    ("DELETE", "/admin/cache"),
    ("DELETE", "/admin/cache?tenant=team-b"),
    ("GET", "/metrics"),
]


def ask(
    gw: Gateway,
    key: str,
    text: str = QUESTION,
    *,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    """One completion through the SDK; the raw response, so that headers can be read."""
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model=body.pop("model", "auto"),
        messages=[{"role": "user", "content": text}],
        extra_headers=headers,
        **body,
    )
    return raw.http_response


def answer(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture(params=["memory", "redis"])
def cached(
    request: pytest.FixtureRequest,
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
) -> Gateway:
    """A gateway whose exact cache is in memory, or in a Redis of the test's own (a flush of
    everyone's entries touches no other test's Redis)."""
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("own_redis").url
    return start_gateway(policy_text(primary, backup), redis_url=redis_url)


def streamed(gw: Gateway, key: str, text: str) -> dict[str, str]:
    """A streamed completion read to its end; the response's headers."""
    with gw.client(key).chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": text}], stream=True
    ) as response:
        list(response.parse())
        return dict(response.headers)


def test_the_exact_cache_never_answers_another_tenant(
    cached: Gateway, primary: FakeUpstream
) -> None:
    assert ask(cached, TENANT_KEY, SECRET).headers["x-gateway-cache"] == "miss"
    assert ask(cached, TENANT_KEY, SECRET).headers["x-gateway-cache"] == "exact"
    other = ask(cached, OTHER_KEY, SECRET)
    assert other.headers["x-gateway-cache"] == "miss"
    assert ask(cached, OTHER_KEY, SECRET, model="main").headers["x-gateway-cache"] == "miss"
    assert len(primary.requests) == 3  # every one of team-b's was asked of the model

    assert streamed(cached, OTHER_KEY, "streamed")["x-gateway-cache"] == "miss"
    _wait(
        lambda: ask(cached, OTHER_KEY, "streamed").headers["x-gateway-cache"] == "exact",
        "the stream was never stored",
    )
    assert ask(cached, TENANT_KEY, "streamed").headers["x-gateway-cache"] == "miss"
    assert streamed(cached, TENANT_KEY, SECRET)["x-gateway-cache"] == "exact"


def test_a_tenant_key_cannot_flush_and_the_admin_flushes_one_tenant_only(
    cached: Gateway,
) -> None:
    for key in (TENANT_KEY, OTHER_KEY):
        ask(cached, key)
    for key in (TENANT_KEY, OTHER_KEY, "sk-made-up-key-0123456789"):
        for query in ({}, {"tenant": "team-a"}, {"tenant": "team-b"}):
            refused = httpx.delete(
                f"{cached.url}/admin/cache", params=query, headers={"authorization": key}
            )
            assert refused.status_code == 401
            refused = httpx.delete(
                f"{cached.url}/admin/cache",
                params=query,
                headers={"authorization": f"Bearer {key}"},
            )
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
    assert ask(cached, TENANT_KEY).headers["x-gateway-cache"] == "exact"
    assert ask(cached, OTHER_KEY).headers["x-gateway-cache"] == "exact"

    flushed = httpx.delete(f"{cached.url}/admin/cache", params={"tenant": "team-a"}, headers=ADMIN)
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["flushed"]["exact"] == 1
    assert ask(cached, OTHER_KEY).headers["x-gateway-cache"] == "exact"
    assert ask(cached, TENANT_KEY).headers["x-gateway-cache"] == "miss"


def test_sticky_sessions_are_per_tenant(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """team-a pins conversation ``shared-id`` to ``backup``; team-b's conversation of the same
    id is its own: routed by the rules (to ``main``), not by team-a's pin."""
    routes = "- {name: pin, when: {tenant: [team-a], tags: {pin: 'yes'}}, to: backup}\n"
    gw = start_gateway(
        policy_text(primary, backup, extra_routes=routes) + "routing: {sticky_sessions: true}\n"
    )
    session = {"x-session-id": "shared-id"}
    first = ask(gw, TENANT_KEY, "one", headers={**session, "x-gateway-tags": "pin=yes"})
    assert (first.headers["x-gateway-route"], first.headers["x-gateway-model"]) == (
        "pin",
        "backup",
    )
    again = ask(gw, TENANT_KEY, "two", headers=session)
    assert (again.headers["x-gateway-route"], again.headers["x-gateway-model"]) == (
        "sticky",
        "backup",
    )
    other = ask(gw, OTHER_KEY, "two", headers=session)
    assert (other.headers["x-gateway-route"], other.headers["x-gateway-model"]) == (
        "default",
        "main",
    )
    # Without an id, a conversation is named by its opening messages: the same, per tenant.
    ask(gw, TENANT_KEY, "same opening", headers={"x-gateway-tags": "pin=yes"})
    assert ask(gw, OTHER_KEY, "same opening").headers["x-gateway-route"] == "default"


def test_rate_limits_count_each_tenant_alone(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    """team-a spending its requests neither refuses team-b nor shows in team-b's headers (the
    counters are in Redis, where every tenant's would be if they were shared)."""
    text = policy_text(primary, backup)
    for key in (TENANT_KEY, OTHER_KEY):
        text = text.replace(f'["{key}"]}}', f'["{key}"], limits: {{requests_per_minute: 2}}}}')
    gw = start_gateway(text, redis_url=own_redis.url)
    for n in range(2):
        assert ask(gw, TENANT_KEY, f"a{n}").headers["x-ratelimit-remaining-requests"] == str(1 - n)
    with pytest.raises(openai.RateLimitError):
        ask(gw, TENANT_KEY, "a2")
    other = ask(gw, OTHER_KEY, "b0")
    assert other.headers["x-ratelimit-remaining-requests"] == "1"


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
def test_a_tenant_key_gets_401_on_the_admin_api_and_metrics(
    gateway: Gateway, method: str, path: str
) -> None:
    ask(gateway, OTHER_KEY, SECRET)  # something to report
    for key in (TENANT_KEY, OTHER_KEY):
        response = httpx.request(
            method, f"{gateway.url}{path}", headers={"authorization": f"Bearer {key}"}
        )
        assert response.status_code == 401, response.text
        body = response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        for leak in ("team-b", "team-a", SECRET, "upstream", OTHER_KEY, ADMIN_KEY):
            assert leak not in response.text
    assert httpx.request(method, f"{gateway.url}{path}", headers=ADMIN).status_code == 200


def test_the_dashboard_page_holds_no_data(gateway: Gateway) -> None:
    """The page is served to anyone (a browser cannot send a header when it opens it); all it
    shows comes from the report, which needs the admin key."""
    ask(gateway, OTHER_KEY, SECRET)
    _wait(lambda: len(gateway.records(1)) >= 1, "the request was never recorded")
    page = httpx.get(
        f"{gateway.url}/admin/dashboard", headers={"authorization": f"Bearer {TENANT_KEY}"}
    )
    assert page.status_code == 200
    for leak in ("team-b", "team-a", SECRET, "upstream-main", OTHER_KEY, ADMIN_KEY):
        assert leak not in page.text
    report = httpx.get(f"{gateway.url}/admin/reports/cost?by=tenant", headers=ADMIN)
    assert report.status_code == 200 and "team-b" in report.text  # the admin sees it


def test_readyz_and_models_say_the_same_to_every_tenant(gateway: Gateway) -> None:
    ask(gateway, TENANT_KEY, SECRET)
    seen = []
    for key in (TENANT_KEY, OTHER_KEY):
        ready = httpx.get(f"{gateway.url}/readyz", headers={"authorization": f"Bearer {key}"})
        assert ready.status_code == 200 and "policy" not in ready.json()
        models = gateway.client(key).models.list()
        seen.append(([m.id for m in models.data], ready.json()))
        raw = gateway.client(key).models.with_raw_response.list().http_response.text
        for leak in ("team-", "upstream-", "sk-", "127.0.0.1"):
            assert leak not in raw
    assert seen[0] == seen[1]
    assert sorted(seen[0][0]) == ["auto", "backup", "main"]
    assert "policy" in httpx.get(f"{gateway.url}/readyz", headers=ADMIN).json()


def test_errors_echo_nothing_of_another_tenant(gateway: Gateway, primary: FakeUpstream) -> None:
    ask(gateway, TENANT_KEY, SECRET, headers={"x-session-id": "a-private-session"})
    cases: list[dict[str, Any]] = [
        {"model": "gpt-unknown", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "auto", "messages": [{"role": "boss", "content": "hi"}]},
        {"model": "auto", "messages": [{"role": "user", "content": 5}]},
        {"model": "auto", "messages": []},
    ]
    client = gateway.client(OTHER_KEY)
    for body in cases:
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(**body)
        text = info.value.response.text
        assert info.value.status_code in (400, 404)
        for leak in (SECRET, TENANT_KEY, "a-private-session", "team-b", "sk-upstream"):
            assert leak not in text
    for key in (TENANT_KEY[:-1], TENANT_KEY + "x", TENANT_KEY.upper()):
        with pytest.raises(openai.AuthenticationError) as refused:
            gateway.client(key).chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}]
            )
        text = refused.value.response.text
        assert TENANT_KEY[:12] not in text and "team-a" not in text
    assert len(primary.requests) == 1


def test_request_ids_are_the_gateways_own_and_records_keep_their_tenant(
    gateway: Gateway,
) -> None:
    first = ask(gateway, TENANT_KEY, SECRET)
    theirs = first.headers["x-gateway-request-id"]
    forged = {"x-gateway-request-id": theirs, "x-request-id": theirs}
    replay = ask(gateway, OTHER_KEY, SECRET, headers=forged)
    hit = ask(gateway, TENANT_KEY, SECRET, headers=forged)
    ids = [r.headers["x-gateway-request-id"] for r in (first, replay, hit)]
    assert len(set(ids)) == 3 and all(i.startswith("req_") for i in ids)
    assert replay.headers["x-gateway-cache"] == "miss" and hit.headers["x-gateway-cache"] == "exact"
    records = {r.request_id: r for r in gateway.records(3)}
    assert [records[i].tenant for i in ids] == ["team-a", "team-b", "team-a"]


@pytest.mark.model
def test_the_semantic_cache_never_answers_another_tenant(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    namespace = f"iso-{uuid.uuid4().hex[:8]}"
    gw = start_gateway(
        policy_text(primary, backup)
        + f"cache:\n  namespace: {namespace}\n  semantic: {{enabled: true, max_temperature: 0.5}}\n"
    )
    semantic = gw.app.state.services.semantic
    first = ask(gw, TENANT_KEY, QUESTION, temperature=0)
    assert first.headers["x-gateway-cache"] == "miss"
    _wait(lambda: semantic.size() >= 1, "the answer was never stored")
    own = ask(gw, TENANT_KEY, "Which city is the capital of France?", temperature=0)
    assert own.headers["x-gateway-cache"] == "semantic"  # the paraphrase does hit, for team-a
    # team-b stores nothing (no-store), so that each of its questions can only meet team-a's.
    for text in (
        "Which city is the capital of France?",
        "What is the capital city of France ?",
        QUESTION,
    ):
        other = ask(gw, OTHER_KEY, text, temperature=0, headers={"cache-control": "no-store"})
        assert other.headers["x-gateway-cache"] == "miss"
        assert answer(other) == f"primary says: {text}"
    assert len(primary.requests) == 4
