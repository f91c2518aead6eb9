"""Limits against real servers: tenants' rate limits (in-process and across two replicas through
a real Redis), the server's concurrency gate, max_tokens defaults and ceilings, bounds on
client-controlled values, denied fields, and a client that leaves a slow request."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import OTHER_KEY, TENANT_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream, Fault
from tests.servers import RedisProcess

MESSAGES: Any = [{"role": "user", "content": "hello there"}]
_numbers = itertools.count()


def with_tenant_a(text: str, extra: str) -> str:
    """The test policy with ``extra`` (YAML flow items) added to tenant team-a."""
    plain = f'team-a: {{api_keys: ["{TENANT_KEY}"]}}'
    assert plain in text
    return text.replace(plain, f'team-a: {{api_keys: ["{TENANT_KEY}"], {extra}}}')


def with_limits(text: str, limits: str) -> str:
    return text + f"limits: {{{limits}}}\n"


def ask(gw: Gateway, key: str = TENANT_KEY, **extra: Any) -> Any:
    """The raw response (headers included) of a new chat completion (never a cache hit): two
    words in, four out, as the fake upstream counts."""
    question = f"hello {next(_numbers)}"
    return gw.client(key).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": question}], **extra
    )


def refused(gw: Gateway, error: type[openai.APIStatusError], **extra: Any) -> Any:
    with pytest.raises(error) as caught:
        ask(gw, **extra)
    return caught.value


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def answered(gw: Gateway) -> Callable[[], bool]:
    """A check that a request of team-a is answered (not refused by its limits)."""

    def check() -> bool:
        try:
            return bool(ask(gw).status_code == 200)
        except openai.RateLimitError:
            return False

    return check


@pytest.fixture
def in_background() -> Iterator[Callable[[Callable[[], Any]], None]]:
    """Run calls in threads; joined at the end of the test."""
    threads: list[threading.Thread] = []

    def start(call: Callable[[], Any]) -> None:
        def quiet() -> None:
            with contextlib.suppress(openai.OpenAIError):
                call()

        thread = threading.Thread(target=quiet, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    for thread in threads:
        thread.join(timeout=30)


# Tenants' rate limits


def test_requests_per_minute_in_process(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(
        with_tenant_a(policy_text(primary, backup), "limits: {requests_per_minute: 2}")
    )
    first = ask(gw)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"]
    assert ask(gw).headers["x-ratelimit-remaining-requests"] == "0"
    error = refused(gw, openai.RateLimitError)
    assert error.status_code == 429
    assert error.body["type"] == "requests"
    assert error.body["code"] == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # another tenant has no limit, and no rate-limit headers
    other = ask(gw, OTHER_KEY)
    assert "x-ratelimit-limit-requests" not in other.headers
    records = gw.records(4)
    assert sorted(r.status for r in records) == [200, 200, 200, 429]
    assert len(primary.requests) == 3


def test_requests_per_minute_are_shared_by_replicas_through_redis(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    text = with_tenant_a(policy_text(primary, backup), "limits: {requests_per_minute: 3}")
    one = start_gateway(text, redis_url=own_redis.url)
    two = start_gateway(text, redis_url=own_redis.url)
    ask(one)
    ask(two)
    assert ask(one).headers["x-ratelimit-remaining-requests"] == "0"
    assert refused(two, openai.RateLimitError).body["code"] == "rate_limit_exceeded"


def test_tokens_per_minute_count_what_the_ledger_counts_across_replicas(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    # the fake upstream counts words: "hello 1" is 2 in, "primary says: hello 1" 4 out
    text = with_tenant_a(policy_text(primary, backup), "limits: {tokens_per_minute: 10}")
    one = start_gateway(text, redis_url=own_redis.url)
    two = start_gateway(text, redis_url=own_redis.url)
    first = ask(one)
    assert first.headers["x-ratelimit-limit-tokens"] == "10"
    assert first.headers["x-ratelimit-remaining-tokens"] == "10"
    # 4 tokens left: the second runs, and its 6 are counted in full, past the limit
    assert ask(two).headers["x-ratelimit-remaining-tokens"] == "4"
    error = refused(one, openai.RateLimitError)
    assert error.body["type"] == "tokens"
    assert error.body["code"] == "rate_limit_exceeded"
    assert error.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(error.response.headers["retry-after"]) >= 1
    assert refused(two, openai.RateLimitError).body["type"] == "tokens"
    assert len(primary.requests) == 2


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_concurrent_requests_of_a_tenant(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    request: pytest.FixtureRequest,
    in_background: Callable[[Callable[[], Any]], None],
    shared: bool,
) -> None:
    redis_url = request.getfixturevalue("own_redis").url if shared else None
    text = with_tenant_a(policy_text(primary, backup), "limits: {max_concurrent_requests: 1}")
    one = start_gateway(text, redis_url=redis_url)
    two = start_gateway(text, redis_url=redis_url) if shared else one
    primary.script(Fault(delay_s=3))
    in_background(lambda: ask(one))
    until(lambda: len(primary.requests) == 1)
    error = refused(two, openai.RateLimitError)
    assert error.body["code"] == "concurrency_limit_exceeded"
    assert error.response.headers["retry-after"] == "1"
    assert ask(two, OTHER_KEY).status_code == 200  # another tenant is not held up
    until(answered(two))  # the slot comes back with the answer


def test_a_stream_holds_its_slot_until_it_ends(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(
        with_tenant_a(policy_text(primary, backup), "limits: {max_concurrent_requests: 1}")
    )
    primary.script(Fault(chunk_delay_s=5))
    stream = gw.client().chat.completions.create(model="auto", messages=MESSAGES, stream=True)
    next(iter(stream))  # the stream has begun and holds the slot
    assert refused(gw, openai.RateLimitError).body["code"] == "concurrency_limit_exceeded"
    stream.close()  # the client leaves: the stream ends, and gives its slot back
    until(answered(gw))
    until(lambda: primary.disconnects == 1)


# The server's gate


def test_overload_is_a_fast_503_not_a_wait(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    in_background: Callable[[Callable[[], Any]], None],
) -> None:
    gw = start_gateway(
        with_limits(policy_text(primary, backup), "max_concurrent_requests: 1, max_queued: 1")
    )
    primary.script(Fault(delay_s=3), Fault(delay_s=0))
    in_background(lambda: ask(gw))
    until(lambda: len(primary.requests) == 1)
    in_background(lambda: ask(gw, OTHER_KEY))  # waits in the queue
    until(lambda: gw.app.state.services.gate.queued == 1)
    error = refused(gw, openai.InternalServerError)
    assert error.status_code == 503
    assert error.body["code"] == "overloaded"
    assert error.response.headers["retry-after"] == "1"
    until(lambda: len([r for r in gw.records(3) if r.status == 200]) == 2)


# max_tokens defaults and ceilings


def with_max_tokens(text: str, model: str, rule: str) -> str:
    anchor = f"    model: upstream-{model}\n"
    assert anchor in text
    return text.replace(anchor, anchor + f"    max_tokens: {rule}\n")


def test_the_model_default_is_sent_when_the_client_sends_none(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = with_max_tokens(policy_text(primary, backup), "main", "{default: 256, ceiling: 1024}")
    gw = start_gateway(text)
    client = gw.client()
    client.chat.completions.create(model="auto", messages=MESSAGES)  # routed to main
    client.chat.completions.create(model="main", messages=MESSAGES, max_completion_tokens=100)
    client.chat.completions.create(model="backup", messages=MESSAGES)  # no rule
    sent = [r.body for r in primary.requests] + [r.body for r in backup.requests]
    assert sent[0]["max_tokens"] == 256
    assert sent[1]["max_completion_tokens"] == 100 and "max_tokens" not in sent[1]
    assert "max_tokens" not in sent[2]


def test_above_the_ceiling_is_refused_or_clamped(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = with_max_tokens(policy_text(primary, backup), "main", "{ceiling: 1024}")
    text = with_max_tokens(text, "backup", "{ceiling: 512, above_ceiling: clamp}")
    gw = start_gateway(text)
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="main", messages=MESSAGES, max_tokens=2000)
    assert caught.value.body["param"] == "max_tokens"
    assert caught.value.body["code"] == "max_tokens_above_ceiling"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="auto", messages=MESSAGES, max_completion_tokens=2000)
    assert caught.value.body["param"] == "max_completion_tokens"
    assert primary.requests == []
    client.chat.completions.create(model="backup", messages=MESSAGES, max_tokens=2000)
    assert backup.requests[0].body["max_tokens"] == 512


# Bounds on client-controlled values, denied fields


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"x-gateway-tags": ",".join(f"k{i}=v" for i in range(17))}, "x-gateway-tags"),
        ({"x-gateway-tags": "k" * 65 + "=v"}, "x-gateway-tags"),
        ({"x-gateway-tags": "k=" + "v" * 257}, "x-gateway-tags"),
        ({"x-session-id": "s" * 257}, "x-session-id"),
    ],
    ids=["too-many-tags", "long-tag-key", "long-tag-value", "long-session-id"],
)
def test_client_values_that_grow_server_state_are_bounded(
    gateway: Gateway, primary: FakeUpstream, headers: dict[str, str], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().chat.completions.create(
            model="auto", messages=MESSAGES, extra_headers=headers
        )
    assert caught.value.body["param"] == param
    assert primary.requests == []


def test_a_tenant_may_be_denied_fields(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(
        with_tenant_a(policy_text(primary, backup), "deny_fields: [service_tier, store]")
    )
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="auto", messages=MESSAGES, service_tier="flex")
    assert caught.value.body["param"] == "service_tier"
    assert caught.value.body["code"] == "field_not_allowed"
    assert ask(gw, OTHER_KEY, service_tier="flex").status_code == 200
    assert ask(gw).status_code == 200


# A client that leaves


def test_a_client_that_leaves_cancels_the_upstream_call(
    gateway: Gateway, primary: FakeUpstream
) -> None:
    primary.script(Fault(delay_s=5))
    impatient = openai.OpenAI(
        base_url=f"{gateway.url}/v1", api_key=TENANT_KEY, max_retries=0, timeout=0.5
    )
    with impatient, pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="auto", messages=MESSAGES)
    until(lambda: primary.disconnects == 1)
    [record] = gateway.records(1)
    assert record.status == 499
    assert record.cost_usd is None  # a model was reached: what it spent is unknown
    assert len(primary.requests) == 1  # cancelled, not retried nor sent to the fallback


def test_rate_limit_errors_are_in_openai_shape(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(
        with_tenant_a(policy_text(primary, backup), "limits: {requests_per_minute: 1}")
    )
    ask(gw)
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES},
        headers={"authorization": f"Bearer {TENANT_KEY}"},
    )
    assert response.status_code == 429
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-gateway-request-id"]
