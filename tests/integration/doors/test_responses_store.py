"""Stored responses through a running gateway: retrieve, delete, continue; per tenant; in the
embedded SQLite file (across a restart) and in Redis (across replicas); TTL and bounds."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
import redis

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import OTHER_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream
from tests.servers import RedisProcess, ServerThread


@pytest.fixture(params=["embedded", "redis"])
def stored_gateway(
    request: pytest.FixtureRequest,
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
) -> Gateway:
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("own_redis").url
    return start_gateway(policy_text(primary, backup), redis_url=redis_url)


def test_a_response_is_retrieved_then_deleted(stored_gateway: Gateway) -> None:
    client = stored_gateway.client()
    created = client.responses.create(model="auto", input="keep me", metadata={"k": "v"})
    got = client.responses.retrieve(created.id)
    assert got == created
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="auto", previous_response_id=created.id, input="more")
    assert refused.value.code == "previous_response_not_found"


def test_another_tenant_can_neither_read_continue_nor_delete_it(
    stored_gateway: Gateway, primary: FakeUpstream
) -> None:
    owner, other = stored_gateway.client(), stored_gateway.client(OTHER_KEY)
    created = owner.responses.create(model="auto", input="my secret plan")
    with pytest.raises(openai.NotFoundError) as read:
        other.responses.retrieve(created.id)
    assert "secret" not in str(read.value.body)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(created.id)
    calls = len(primary.requests)
    with pytest.raises(openai.BadRequestError) as continued:
        other.responses.create(model="auto", previous_response_id=created.id, input="go on")
    assert continued.value.code == "previous_response_not_found"
    assert len(primary.requests) == calls  # nothing of the owner's reached a model
    assert owner.responses.retrieve(created.id).output_text == "primary says: my secret plan"


def test_store_false_keeps_nothing(stored_gateway: Gateway) -> None:
    client = stored_gateway.client()
    created = client.responses.create(model="auto", input="forget me", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="auto", previous_response_id=created.id, input="more")


def test_a_chain_of_turns_carries_the_whole_conversation(
    stored_gateway: Gateway, primary: FakeUpstream
) -> None:
    client = stored_gateway.client()
    previous = None
    for word in ("one", "two", "three"):
        turn = client.responses.create(
            model="auto", input=word, instructions=f"say {word}", previous_response_id=previous
        )
        previous = turn.id
    assert primary.requests[-1].body["messages"] == [
        {"role": "system", "content": "say three"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "primary says: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "primary says: two"},
        {"role": "user", "content": "three"},
    ]


def test_the_embedded_store_survives_a_restart(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    before = start_gateway(policy_text(primary, backup))
    created = before.client().responses.create(model="auto", input="remember me")
    before.stop()
    settings = Settings(
        policy_path=before.policy_path, data_dir=before.data_dir, watch_policy=False
    )
    server = ServerThread(create_app(settings)).start()
    try:
        client = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key=before.client().api_key, max_retries=0
        )
        assert client.responses.retrieve(created.id).output_text == "primary says: remember me"
        follow = client.responses.create(
            model="auto", previous_response_id=created.id, input="and?"
        )
        assert follow.output_text == "primary says: and?"
        assert [m["role"] for m in primary.requests[-1].body["messages"]] == [
            "user",
            "assistant",
            "user",
        ]
        client.close()
    finally:
        server.stop()
    assert (before.data_dir / "responses.sqlite3").exists()


def test_redis_shares_stored_responses_between_replicas_with_the_policy_ttl(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    own_redis: RedisProcess,
) -> None:
    text = policy_text(primary, backup) + "responses: {ttl: 1h}\n"
    one = start_gateway(text, redis_url=own_redis.url)
    two = start_gateway(text, redis_url=own_redis.url)
    created = one.client().responses.create(model="auto", input="shared")
    assert two.client().responses.retrieve(created.id).output_text == "primary says: shared"
    follow = two.client().responses.create(model="auto", previous_response_id=created.id, input="x")
    assert follow.previous_response_id == created.id
    store = redis.Redis.from_url(own_redis.url)
    try:
        [key] = list(store.scan_iter(match=f"gw:responses:*:{created.id}"))
        assert 3590_000 < store.pttl(key) <= 3600_000
    finally:
        store.close()


def test_an_unreachable_redis_is_an_explicit_error_never_lost_context(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup), redis_url="redis://127.0.0.1:9/0")
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as stored:
        client.responses.create(model="auto", input="keep me")
    assert stored.value.status_code == 503
    assert stored.value.code == "responses_store_unavailable"
    with pytest.raises(openai.APIStatusError) as continued:
        client.responses.create(model="auto", previous_response_id="resp_x", input="more")
    assert continued.value.status_code == 503
    assert client.responses.create(model="auto", input="no store", store=False).output_text


def test_responses_expire_and_the_embedded_store_is_bounded(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = start_gateway(policy_text(primary, backup) + "responses: {ttl: 1s, max_entries: 2}\n")
    client = gw.client()
    first, second, third = (
        client.responses.create(model="auto", input=word) for word in ("a", "b", "c")
    )
    time.sleep(0.3)  # the file is bounded as it is written, a batch every 50 ms at most
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)  # the oldest, past max_entries
    assert client.responses.retrieve(third.id).id == third.id
    time.sleep(1.1)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="auto", previous_response_id=third.id, input="late")
