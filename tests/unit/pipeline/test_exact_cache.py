"""The exact cache: its key, what may be cached, Cache-Control, and both stores."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from openai.types.chat import completion_create_params

from gateway.errors import BadRequest
from gateway.exact_store import MemoryStore, RedisStore, Store
from gateway.pipeline import cached_answer, exact_cache
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.exact_cache import KEY_FIELDS, NON_KEY_FIELDS, cacheable, key
from gateway.pipeline.normalize import ChatRequest, chat_request, parse_cache_control
from gateway.pipeline.reply import Answer
from gateway.pipeline.turn import CacheOutcome, Turn
from gateway.policy.load import LoadedPolicy
from gateway.policy.schema import Policy
from gateway.providers import Usage
from gateway.runtime.keys import KeyRing
from gateway.runtime.sessions import Sessions
from gateway.runtime.store import Runtime
from gateway.telemetry import Telemetry, TelemetryConfig

TRACE = Telemetry(TelemetryConfig()).start_request(None, "r")  # tracing off


class ExactCache:
    """The exact-cache stage over one store, driven as the pipeline drives it."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _turn(self, request: ChatRequest, runtime: Runtime) -> Turn:
        return Turn(request, runtime, SimpleNamespace(exact=self.store), TRACE)  # type: ignore[arg-type]

    async def lookup(
        self, request: ChatRequest, runtime: Runtime
    ) -> tuple[CacheOutcome, CachedAnswer | None]:
        turn = self._turn(request, runtime)
        answer = await exact_cache.lookup(turn)
        return turn.cache, answer

    async def save(self, request: ChatRequest, runtime: Runtime, answer: CachedAnswer) -> None:
        await exact_cache.save(self._turn(request, runtime), answer)


def kept(body: bytes) -> CachedAnswer | None:
    """What the caches keep of a completion ``body``."""
    return cached_answer.cached(
        Answer.of_body(body),
        model="main",
        usage=Usage(3, 1, 4),
        cost_usd=None,
        baseline_cost_usd=None,
    )


def test_every_openai_request_field_is_classified() -> None:
    fields: set[str] = set()
    for params in (
        completion_create_params.CompletionCreateParamsStreaming,
        completion_create_params.CompletionCreateParamsNonStreaming,
    ):
        fields |= set(params.__annotations__) | set(
            completion_create_params.CompletionCreateParamsBase.__annotations__
        )
    unclassified = fields - KEY_FIELDS - NON_KEY_FIELDS
    assert not unclassified, f"classify these as key or non-key fields: {sorted(unclassified)}"
    assert not KEY_FIELDS & NON_KEY_FIELDS


def req(tenant: str = "t", cache_control: str | None = None, **body: Any) -> ChatRequest:
    full = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body}
    return chat_request(
        msgspec.json.encode(full),
        request_id="r",
        tenant=tenant,
        tags_header=None,
        cache_control=cache_control,
    )


def test_key_depends_on_what_changes_the_answer() -> None:
    base = key(req(), "v1", "p1")
    assert key(req(stream=True), "v1", "p1") == base  # delivery is not the answer
    assert key(req(user="u-42", metadata={"a": "b"}), "v1", "p1") == base
    for different in (
        key(req(tenant="other"), "v1", "p1"),
        key(req(), "v2", "p1"),
        key(req(), "v1", "p2"),
        key(req(model="main"), "v1", "p1"),
        key(req(temperature=0.5), "v1", "p1"),
        key(req(seed=1), "v1", "p1"),
        key(req(vendor_knob=1), "v1", "p1"),
    ):  # unknown fields are keyed
        assert different != base
    # a named model's entries survive a policy change; auto's do not
    assert key(req(model="main"), "v1", "p1") == key(req(model="main"), "v1", "p2")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, True),
        ({"temperature": 0.2}, True),
        ({"temperature": 1.5}, False),
        ({"n": 2}, False),
        ({"n": 1}, True),
        ({"logprobs": True}, False),
    ],
)
def test_cacheable(body: dict[str, Any], expected: bool) -> None:
    assert cacheable(body, max_temperature=1.0) is expected


def test_cache_control() -> None:
    assert parse_cache_control("no-cache").read is False
    assert parse_cache_control("No-Store, max-age=60").write is False
    assert parse_cache_control("max-age=60").max_age == 60
    with pytest.raises(BadRequest):
        parse_cache_control("max-age=soon")


def runtime(cache: dict[str, Any] | None = None, version: str = "p") -> Runtime:
    policy = Policy.model_validate(
        {
            "version": 1,
            "routes": [{"name": "r", "to": "m"}],
            "cache": cache or {},
            "models": {
                "m": {"provider": "openai_compatible", "base_url": "http://x/v1", "model": "m"}
            },
        }
    )
    return Runtime(
        loaded=LoadedPolicy(policy, Path("p.yaml"), version, ()),
        providers={},
        tenants=KeyRing({}),
        admins=KeyRing({}),
        sessions=Sessions(1, 1),
        routing_tags=frozenset(),
        token_counters={},
    )


def answer(created: float | None = None, **kw: Any) -> CachedAnswer:
    return CachedAnswer(
        model="main",
        upstream_model="gpt-x",
        content="cached words",
        finish_reason="stop",
        usage=Usage(3, 2, 5),
        cost_usd=Decimal("0.1"),
        baseline_cost_usd=Decimal("0.2"),
        created=time.time() if created is None else created,
        **kw,
    )


async def test_lookup_save_and_freshness() -> None:
    config = runtime({"exact": {"ttl": "1m"}})
    assert config.policy.cache.exact.ttl == 60
    cache = ExactCache(MemoryStore(100, 60))
    assert await cache.lookup(req(), config) == ("miss", None)
    await cache.save(req(), config, answer())
    assert await cache.lookup(req(), config) == ("exact", answer(created=ANY_TIME))
    assert (await cache.lookup(req(cache_control="no-cache"), config))[0] == "bypass"
    assert (await cache.lookup(req(temperature=1.7), config))[0] == "bypass"
    await cache.save(req(seed=9), config, answer(created=time.time() - 120))
    assert (await cache.lookup(req(seed=9), config))[0] == "miss"  # older than the ttl
    await cache.save(req(seed=8), config, answer(created=time.time() - 30))
    assert (await cache.lookup(req(seed=8), config))[0] == "exact"
    assert (await cache.lookup(req(seed=8, cache_control="max-age=10"), config))[0] == "miss"
    await cache.save(req(seed=7, cache_control="no-store"), config, answer())
    assert (await cache.lookup(req(seed=7), config))[0] == "miss"


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float)


ANY_TIME: Any = _AnyTime()


async def test_memory_store_flush_by_tenant() -> None:
    cache, config = ExactCache(MemoryStore(100, 60)), runtime()
    for tenant in ("a", "b"):
        await cache.save(req(tenant), config, answer())
    assert await cache.store.flush("a") == 1
    assert (await cache.lookup(req("a"), config))[0] == "miss"
    assert (await cache.lookup(req("b"), config))[0] == "exact"


async def test_redis_store_shares_entries_and_flushes_by_tenant() -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    one = ExactCache(RedisStore("redis://127.0.0.1:6379/0", prefix=prefix))
    two = ExactCache(RedisStore("redis://127.0.0.1:6379/0", prefix=prefix))
    config = runtime()
    try:
        await one.save(req("a"), config, answer())
        await one.save(req("b"), config, answer())
        assert (await two.lookup(req("a"), config))[0] == "exact"
        assert await two.store.flush("a") == 1
        assert (await one.lookup(req("a"), config))[0] == "miss"
        assert (await one.lookup(req("b"), config))[0] == "exact"
        await one.store.flush(None)
    finally:
        await one.store.aclose()
        await two.store.aclose()


async def test_a_corrupt_entry_is_a_miss_and_is_deleted() -> None:
    store = MemoryStore(100, 60)
    cache, config = ExactCache(store), runtime()
    await store.set(key(req(), "v1", "p"), b"{garbage", 60)
    assert (await cache.lookup(req(), config))[0] == "miss"
    assert await store.get(key(req(), "v1", "p")) is None


class OwnRedis:
    """A redis-server of the test's own, on a free port, to stop and start at will."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


async def test_redis_down_is_a_bypass_then_recovers(own_redis: OwnRedis) -> None:
    cache = ExactCache(RedisStore(f"redis://127.0.0.1:{own_redis.port}/0"))
    config = runtime()
    try:
        await _wait_for_redis(cache, config)
        await cache.save(req(), config, answer())
        assert (await cache.lookup(req(), config))[0] == "exact"
        own_redis.stop()
        assert (await cache.lookup(req(), config))[0] == "bypass"
        assert cache.store.health() == {"exact_cache": "degraded"}
        own_redis.start()
        await asyncio.sleep(RedisStore.RETRY_AFTER_S)
        await _wait_for_redis(cache, config)
        assert cache.store.health() == {"exact_cache": "redis"}
    finally:
        await cache.store.aclose()


async def _wait_for_redis(cache: ExactCache, config: Runtime) -> None:
    deadline = time.monotonic() + 10
    while (await cache.lookup(req(seed=123), config))[0] != "miss":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


def test_answers_round_trip_to_both_wire_shapes() -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body = msgspec.json.encode(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-x",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )
    stored = kept(body)
    assert stored is not None and stored.content == "hello"
    replayed = ChatCompletion.model_validate_json(cached_answer.completion(stored))
    assert replayed.choices[0].message.content == "hello" and replayed.model == "gpt-x"
    chunks = [
        ChatCompletionChunk.model_validate_json(c)
        for c in cached_answer.chunks(stored, wants_usage=True)
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4
    assert len(cached_answer.chunks(stored, wants_usage=False)) == len(chunks) - 1


@pytest.mark.parametrize(
    "choices",
    [
        [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function"}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        [
            {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"},
            {"index": 1, "message": {"content": "b"}, "finish_reason": "stop"},
        ],
        [{"index": 0, "message": {"content": "cut"}, "finish_reason": "content_filter"}],
    ],
)
def test_tool_calls_several_choices_and_filtered_answers_are_not_cached(
    choices: list[dict[str, Any]],
) -> None:
    body = msgspec.json.encode({"model": "m", "choices": choices})
    assert kept(body) is None
