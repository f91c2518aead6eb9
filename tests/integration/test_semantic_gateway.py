"""The semantic cache through the running gateway, with the real embedding model.

The fake upstream answers "primary says: <last user message>", so a semantic hit is visible in the
answer: a paraphrase gets the echo of the question that was asked first.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import anthropic
import httpx
import pytest
import redis

from tests.conftest import ADMIN_KEY, OTHER_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.servers import RedisProcess

pytestmark = pytest.mark.model

REDIS_URL = "redis://127.0.0.1:6379/0"
QUESTION = "What is the capital city of France?"
PARAPHRASE = "Which city is the capital of France?"


def semantic_policy(primary: FakeUpstream, backup: FakeUpstream, extra: str = "") -> str:
    return policy_text(primary, backup) + (
        f"cache:\n  namespace: t-{uuid.uuid4().hex[:8]}\n"
        f"  semantic: {{enabled: true, max_temperature: 0.5{extra}}}\n"
    )


def ask(
    gw: Gateway,
    text: str,
    *,
    key: str | None = None,
    system: str | None = None,
    headers: dict[str, str] | None = None,
    **body: object,
) -> httpx.Response:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    client = gw.client(key) if key else gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=messages, extra_headers=headers, **{"temperature": 0, **body}
    )  # type: ignore[call-overload]
    return raw.http_response  # type: ignore[no-any-return]


def content(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


@pytest.fixture
def gateway(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> Gateway:
    return start_gateway(semantic_policy(primary, backup))


def test_a_paraphrase_is_answered_from_the_semantic_cache(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    first = ask(gateway, QUESTION)
    assert first.headers["x-gateway-cache"] == "miss"
    hit = _eventually_hit(gateway, PARAPHRASE)
    assert hit.headers["x-gateway-route"] == "cache"
    assert hit.headers["x-gateway-model"] == "main"
    assert hit.headers["x-gateway-cost-usd"] == "0"
    assert 0.5 < float(hit.headers["x-gateway-cache-score"]) <= 1.0
    assert content(hit) == content(first) == f"primary says: {QUESTION}"
    assert len(primary.requests) == 1
    records = gateway.records(2)
    assert [r.cache for r in records] == ["miss", "semantic"]
    assert records[1].cost_usd == 0 and records[1].baseline_cost_usd == records[0].cost_usd


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What is 12 times 4?", "What is 12 times 5?"),  # numbers
        ("Is Python a compiled language?", "Is Python not a compiled language?"),  # negation
        ("What is the capital city of France?", "What is the capital city of Germany?"),  # entity
        (
            "How long is the flight from Paris to London?",
            "How long is the flight from London to Paris?",
        ),  # direction
    ],
)
def test_near_duplicates_that_mean_something_else_miss(
    gateway: Gateway, primary: FakeUpstream, stored: str, asked: str
) -> None:
    ask(gateway, stored)
    _wait_stored(gateway, 1)
    response = ask(gateway, asked)
    assert response.headers["x-gateway-cache"] == "miss"
    assert content(response) == f"primary says: {asked}"
    assert len(primary.requests) == 2


def test_tenants_and_contexts_never_share_entries(gateway: Gateway, primary: FakeUpstream) -> None:
    ask(gateway, QUESTION)
    _wait_stored(gateway, 1)
    assert ask(gateway, PARAPHRASE, key=OTHER_KEY).headers["x-gateway-cache"] == "miss"
    other_system = ask(gateway, PARAPHRASE, system="Answer in French.")
    assert other_system.headers["x-gateway-cache"] == "miss"
    longer = ask(gateway, PARAPHRASE, max_tokens=5)  # output-shaping parameters are context
    assert longer.headers["x-gateway-cache"] == "miss"
    assert len(primary.requests) == 4


def test_a_follow_up_only_matches_its_own_conversation(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    def follow_up(topic: str) -> httpx.Response:
        messages = [
            {"role": "user", "content": f"Write a function that {topic} in Python."},
            {"role": "assistant", "content": "def f(): ..."},
            {"role": "user", "content": "Now do it in Rust."},
        ]
        raw = gateway.client().chat.completions.with_raw_response.create(
            model="auto", messages=messages, temperature=0
        )  # type: ignore[arg-type]
        return raw.http_response  # type: ignore[no-any-return]

    follow_up("reverses a string")
    _wait_stored(gateway, 1)
    assert follow_up("sorts a list").headers["x-gateway-cache"] == "miss"
    assert follow_up("reverses a string").headers["x-gateway-cache"] == "exact"


def test_a_streamed_answer_is_replayed_as_a_stream(gateway: Gateway, primary: FakeUpstream) -> None:
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": QUESTION}], stream=True, temperature=0
    ) as response:  # type: ignore[call-overload]
        first = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    _wait_stored(gateway, 1)
    with gateway.client().chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": PARAPHRASE}],
        stream=True,
        temperature=0,
        stream_options={"include_usage": True},
    ) as response:  # type: ignore[call-overload]
        assert response.headers["x-gateway-cache"] == "semantic"
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first
    assert chunks[-1].usage is not None
    assert len(primary.requests) == 1


def test_what_must_not_be_stored_is_not(gateway: Gateway, primary: FakeUpstream) -> None:
    ask(gateway, QUESTION, headers={"cache-control": "no-store"})
    ask(gateway, QUESTION, temperature=0.9)  # above the semantic cache's max_temperature
    primary.script(Fault(drop_after_chunks=1))
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway.client().api_key}"},
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": True,
            "temperature": 0,
        },
        timeout=30,
    ) as broken:
        broken.read()
    gateway.records(3)
    assert _semantic_entries(gateway) == 0
    response = ask(gateway, PARAPHRASE, headers={"cache-control": "no-cache"})
    assert response.headers["x-gateway-cache"] == "bypass"  # no-cache: not read
    _wait_stored(gateway, 1)  # ... but stored
    assert ask(gateway, QUESTION).headers["x-gateway-cache"] == "semantic"


def test_admin_flush_empties_the_semantic_cache(gateway: Gateway) -> None:
    ask(gateway, QUESTION)
    _wait_stored(gateway, 1)
    flushed = httpx.delete(
        f"{gateway.url}/admin/cache", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert flushed.json()["flushed"]["semantic"] == 1
    assert ask(gateway, PARAPHRASE).headers["x-gateway-cache"] == "miss"


def _semantic_entries(gw: Gateway) -> int:
    return int(gw.app.state.services.semantic.size())


def _wait_stored(gw: Gateway, count: int, timeout_s: float = 10.0) -> None:
    """Answers are stored after the response, in the background."""
    deadline = time.monotonic() + timeout_s
    while _semantic_entries(gw) < count:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.02)


def _eventually_hit(gw: Gateway, text: str) -> httpx.Response:
    _wait_stored(gw, 1)
    response = ask(gw, text)
    assert response.headers["x-gateway-cache"] == "semantic", response.headers
    return response


def test_redis_down_bypasses_then_caching_resumes(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup), redis_url=own_redis.url)
    ask(gateway, QUESTION)
    _wait_stored(gateway, 1)
    own_redis.kill()
    down = ask(gateway, "What is the capital city of Spain?")
    assert down.status_code == 200 and down.headers["x-gateway-cache"] == "bypass"
    assert httpx.get(f"{gateway.url}/readyz").json()["status"] == "degraded"
    # this process's own entries still answer while Redis is away
    assert ask(gateway, PARAPHRASE).headers["x-gateway-cache"] == "semantic"
    own_redis.start()  # the same port, the same append-only file
    deadline = time.monotonic() + 15
    while httpx.get(f"{gateway.url}/readyz").json()["status"] != "ready":
        assert time.monotonic() < deadline, "the gateway never left degraded"
        time.sleep(0.1)
    ask(gateway, "What is the capital city of Italy?")
    _wait_stored(gateway, 2)
    hit = ask(gateway, "Which city is the capital of Italy?")
    assert hit.headers["x-gateway-cache"] == "semantic"


# ---- round two: opposite meanings, strictness, per-user scope, flush -------------------------

OPPOSITES = [
    # (stored, asked, the kind of opposite); none of them from bench/cache/data (held out)
    ("How do I turn on dark mode in Slack?", "How do I turn off dark mode in Slack?", "particle"),
    ("How do I lock the screen on a Mac?", "How do I unlock the screen on a Mac?", "prefix verb"),
    ("How do I allow pop-ups in Firefox?", "How do I disallow pop-ups in Firefox?", "prefix verb"),
    ("How do I buy shares on Robinhood?", "How do I sell shares on Robinhood?", "verb"),
    ("Why is my phone charger so cheap?", "Why is my phone charger so expensive?", "adjective"),
    ("Is it safe to swim after eating?", "Is it dangerous to swim after eating?", "adjective"),
    ("What are the pros of electric cars?", "What are the cons of electric cars?", "noun"),
    ("Is it legal to fly a drone in a park?", "Is it illegal to fly a drone in a park?", "prefix"),
]


@pytest.mark.parametrize("strictness", ["strict", "balanced"])
@pytest.mark.parametrize(("stored", "asked", "kind"), OPPOSITES, ids=[o[2] for o in OPPOSITES])
def test_an_opposite_question_is_never_answered_from_the_cache(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    strictness: str,
    stored: str,
    asked: str,
    kind: str,
) -> None:
    gateway = start_gateway(
        semantic_policy(primary, backup, f", strictness: {strictness}, threshold: 0.6")
    )
    ask(gateway, stored)
    _wait_stored(gateway, 1)
    response = ask(gateway, asked)
    assert response.headers["x-gateway-cache"] == "miss", kind
    assert content(response) == f"primary says: {asked}"
    # it was the opposite check that refused the candidate (not the cosine or the verifier)
    assert gateway.app.state.services.semantic.health()["guard_veto_opposite"] == 1


@pytest.mark.parametrize("strictness", ["strict", "balanced"])
def test_both_strictness_settings_still_answer_a_paraphrase(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    strictness: str,
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup, f", strictness: {strictness}"))
    ask(gateway, QUESTION)
    hit = _eventually_hit(gateway, PARAPHRASE)
    assert content(hit) == f"primary says: {QUESTION}"


def test_strict_refuses_a_look_alike_that_balanced_serves(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    """The two settings differ in the verifier's cutoff: a pair it rates in between is a hit
    only under balanced."""
    stored, asked = "How do I learn Java?", "How do I learn Java quickly?"
    served = {}
    for strictness in ("strict", "balanced"):
        gateway = start_gateway(
            semantic_policy(primary, backup, f", strictness: {strictness}, threshold: 0.6")
        )
        ask(gateway, stored)
        _wait_stored(gateway, 1)
        served[strictness] = ask(gateway, asked).headers["x-gateway-cache"]
    assert served == {"strict": "miss", "balanced": "semantic"}


def _as_user(gw: Gateway, text: str, user: str | None, **body: object) -> httpx.Response:
    return ask(gw, text, **({"user": user} if user else {}), **body)


def test_per_user_scope_never_shares_answers_between_users(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup, ", scope: user"))
    first = _as_user(gateway, QUESTION, "alice")
    assert first.headers["x-gateway-cache"] == "miss"
    _wait_stored(gateway, 1)
    # bob, same tenant: neither the very same request nor a paraphrase is served alice's
    assert _as_user(gateway, QUESTION, "bob").headers["x-gateway-cache"] == "miss"
    assert _as_user(gateway, PARAPHRASE, "carol").headers["x-gateway-cache"] == "miss"
    assert len(primary.requests) == 3
    # alice gets her own answers back, from both caches
    assert _as_user(gateway, PARAPHRASE, "alice").headers["x-gateway-cache"] == "semantic"
    assert _as_user(gateway, QUESTION, "alice").headers["x-gateway-cache"] == "exact"
    # safety_identifier names the end user too, and wins over user
    by_id = ask(gateway, PARAPHRASE, safety_identifier="alice", user="mallory")
    assert by_id.headers["x-gateway-cache"] == "semantic"
    assert len(primary.requests) == 3


def test_per_user_scope_keeps_requests_without_a_user_out_of_both_caches(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup, ", scope: user"))
    anonymous = _as_user(gateway, QUESTION, None)
    assert anonymous.headers["x-gateway-cache"] == "bypass"
    gateway.records(1)
    assert _semantic_entries(gateway) == 0  # nothing planted for anyone
    _as_user(gateway, QUESTION, "alice")
    _wait_stored(gateway, 1)
    again = _as_user(gateway, QUESTION, None)  # alice's entries are not read either
    assert again.headers["x-gateway-cache"] == "bypass"
    assert content(again) == f"primary says: {QUESTION}" and len(primary.requests) == 3


def test_tenant_scope_shares_answers_between_users(gateway: Gateway) -> None:
    _as_user(gateway, QUESTION, "alice")
    _wait_stored(gateway, 1)
    assert _as_user(gateway, PARAPHRASE, "bob").headers["x-gateway-cache"] == "semantic"


def test_per_user_scope_reads_the_user_of_the_anthropic_door(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup, ", scope: user"))
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=gateway.client().api_key, max_retries=0
    ) as sdk:

        def asked_by(user: str, text: str) -> str:
            raw = sdk.messages.with_raw_response.create(
                model="auto",
                max_tokens=64,
                messages=[{"role": "user", "content": text}],
                metadata={"user_id": user},
                extra_body={"temperature": 0},
            )
            return raw.headers["x-gateway-cache"]

        assert asked_by("alice", QUESTION) == "miss"
        _wait_stored(gateway, 1)
        assert asked_by("bob", PARAPHRASE) == "miss"
        assert asked_by("alice", PARAPHRASE) == "semantic"


def test_per_user_scope_reads_the_user_of_the_responses_door(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(semantic_policy(primary, backup, ", scope: user"))

    def asked_by(user: str, text: str) -> str:
        raw = gateway.client().responses.with_raw_response.create(
            model="auto", input=text, temperature=0, store=False, safety_identifier=user
        )
        return raw.headers["x-gateway-cache"]

    assert asked_by("alice", QUESTION) == "miss"
    _wait_stored(gateway, 1)
    assert asked_by("bob", PARAPHRASE) == "miss"
    assert asked_by("alice", PARAPHRASE) == "semantic"


def test_flush_reaches_redis_after_the_semantic_cache_was_disabled(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    """Offboarding: entries stored while the cache was on are removed by a process that never
    opened it (the policy turned it off before this process started)."""
    before = start_gateway(semantic_policy(primary, backup), redis_url=own_redis.url)
    ask(before, QUESTION)
    ask(before, "What is the capital city of Spain?", key=OTHER_KEY)
    _wait_stored(before, 2)
    before.stop()
    after = start_gateway(policy_text(primary, backup), redis_url=own_redis.url)  # cache off
    flushed = httpx.delete(
        f"{after.url}/admin/cache",
        params={"tenant": "team-a"},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert flushed.status_code == 200 and flushed.json()["flushed"]["semantic"] == 1
    assert after.app.state.services.semantic.size() == 0  # it still has not opened it
    client = redis.Redis.from_url(own_redis.url)
    try:
        left = [k for k in client.scan_iter("gw:semantic:sem:e:*")]
        assert len(left) == 1  # the other tenant's entry
        members = [m.decode() for m in client.zrange("gw:semantic:sem:all", 0, -1)]
        assert len(members) == 1 and not members[0].endswith(":team-a")
    finally:
        client.close()
    everyone = httpx.delete(
        f"{after.url}/admin/cache", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert everyone.json()["flushed"]["semantic"] == 1
