"""The exact cache: a request identical in every field that changes its answer gets the
stored answer.

The key hashes an explicit list of request fields (`KEY_FIELDS`) with the tenant, the model
choice (a named model, or ``auto`` with the policy's version, since a new policy may route
differently) and the policy's cache namespace. Every field of the OpenAI API is classified as
key or non-key; a field the gateway does not know is part of the key, so an unknown parameter
can only cause a miss, never a wrong hit.

Entries live in Redis when configured (shared by replicas, with a TTL), else in an in-process
LRU. A store that fails or is slow is bypassed, never waited on: the request goes upstream with
``x-gateway-cache: bypass`` and the store is tried again a second later.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec
import redis.asyncio as redis
from cachetools import TTLCache

from gateway.pipeline import answer as cached_answer
from gateway.pipeline.answer import CachedAnswer
from gateway.pipeline.normalize import CacheControl, ChatRequest
from gateway.runtime.store import Runtime

log = logging.getLogger(__name__)

KEY_FIELDS = frozenset(
    {
        "messages",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "response_format",
        "seed",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "verbosity",
        "web_search_options",
    }
)
"""Fields that change the answer. ``model`` is keyed separately, as the model choice."""
NON_KEY_FIELDS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
    }
)
"""Fields that change delivery, billing or provider-side bookkeeping, not the answer."""

Outcome = Literal["miss", "bypass", "exact", "semantic"]


def cacheable(body: Mapping[str, Any], max_temperature: float) -> bool:
    """Whether the request may be answered from, or stored in, a cache at all.

    Several choices and log-probabilities are not kept by the canonical form; a temperature
    above the policy's maximum asks for variety, which a cache would take away. A missing
    temperature is the provider's default, 1.
    """
    temperature = body.get("temperature")
    return (
        body.get("n") in (None, 1)
        and not body.get("logprobs")
        and (1.0 if temperature is None else float(temperature)) <= max_temperature
    )


def key(
    request: ChatRequest,
    namespace: str,
    policy_version: str,
    routing_tags: frozenset[str] = frozenset(),
) -> str:
    """The entry's key. Tags that routing rules test are part of it, since they pick the model."""
    model = f"auto@{policy_version}" if request.model == "auto" else request.model
    fields = {k: v for k, v in request.body.items() if k not in NON_KEY_FIELDS}
    tags = {k: v for k, v in request.tags.items() if k in routing_tags}
    digest = hashlib.sha256(msgspec.json.encode([namespace, model, tags, fields], order="sorted"))
    return f"{_tenant_part(request.tenant)}:{digest.hexdigest()}"


def _tenant_part(tenant: str) -> str:
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def flush(self, tenant: str | None) -> int: ...
    async def aclose(self) -> None: ...
    def health(self) -> dict[str, str]: ...


class MemoryStore:
    """An in-process LRU with a TTL, for a single gateway without Redis."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=ttl_s)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        return self._entries.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = value

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def flush(self, tenant: str | None) -> int:
        keys = [k for k in self._entries if tenant is None or k.startswith(_tenant_part(tenant))]
        for k in keys:
            self._entries.pop(k, None)
        return len(keys)

    async def aclose(self) -> None:
        self._entries.clear()

    def health(self) -> dict[str, str]:
        return {"exact_cache": "memory"}


class RedisStore:
    """Entries in Redis under ``<prefix><tenant>:<hash>``, each with its own TTL."""

    RETRY_AFTER_S = 1.0

    def __init__(self, url: str, prefix: str = "gw:exact:", timeout_s: float = 0.05) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix
        self._down_until = 0.0

    async def get(self, key: str) -> bytes | None:
        self._check_up()
        try:
            value = await self._redis.get(self._prefix + key)
        except (redis.RedisError, OSError) as exc:
            raise self._went_down(exc) from exc
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._check_up()
        try:
            await self._redis.set(self._prefix + key, value, px=int(ttl_s * 1000))
        except (redis.RedisError, OSError) as exc:
            raise self._went_down(exc) from exc

    async def delete(self, key: str) -> None:
        self._check_up()
        try:
            await self._redis.delete(self._prefix + key)
        except (redis.RedisError, OSError) as exc:
            raise self._went_down(exc) from exc

    async def flush(self, tenant: str | None) -> int:
        pattern = self._prefix + (f"{_tenant_part(tenant)}:*" if tenant else "*")
        deleted = 0
        async for batch in _batches(self._redis.scan_iter(match=pattern, count=1000)):
            deleted += await self._redis.delete(*batch)
        return deleted

    async def aclose(self) -> None:
        await self._redis.aclose()

    def health(self) -> dict[str, str]:
        return {"exact_cache": "redis" if time.monotonic() >= self._down_until else "degraded"}

    def _check_up(self) -> None:
        if time.monotonic() < self._down_until:
            raise StoreDown("redis was unreachable less than a second ago")

    def _went_down(self, exc: Exception) -> StoreDown:
        self._down_until = time.monotonic() + self.RETRY_AFTER_S
        log.warning(
            "exact cache: redis unreachable, bypassing for %.0f s: %s", self.RETRY_AFTER_S, exc
        )
        return StoreDown(str(exc))


class StoreDown(Exception):
    """The store could not answer; the cache is bypassed, the request goes on."""


async def _batches(keys: Any, size: int = 500) -> Any:
    batch = []
    async for k in keys:
        batch.append(k)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class ExactCache:
    store: Store

    async def lookup(
        self, request: ChatRequest, runtime: Runtime
    ) -> tuple[Outcome, CachedAnswer | None]:
        config, control = runtime.policy.cache, request.cache_control
        if (
            not config.exact.enabled
            or not control.read
            or not cacheable(request.body, config.exact.max_temperature)
        ):
            return "bypass", None
        entry_key = _key(request, runtime)
        try:
            raw = await self.store.get(entry_key)
        except StoreDown:
            return "bypass", None
        if raw is None:
            return "miss", None
        try:
            answer = cached_answer.decode(raw)
        except msgspec.MsgspecError:
            log.warning("exact cache: deleting an undecodable entry")
            with contextlib.suppress(StoreDown):
                await self.store.delete(entry_key)
            return "miss", None
        if not _fresh(answer, control, config.exact.ttl):
            return "miss", None
        return "exact", answer

    async def save(self, request: ChatRequest, runtime: Runtime, answer: CachedAnswer) -> None:
        config = runtime.policy.cache
        if (
            not config.exact.enabled
            or not request.cache_control.write
            or not cacheable(request.body, config.exact.max_temperature)
        ):
            return
        with contextlib.suppress(StoreDown):
            await self.store.set(
                _key(request, runtime),
                cached_answer.encode(answer),
                config.exact.ttl,
            )


def _key(request: ChatRequest, runtime: Runtime) -> str:
    return key(request, runtime.policy.cache.namespace, runtime.loaded.digest, runtime.routing_tags)


def _fresh(answer: CachedAnswer, control: CacheControl, ttl_s: float) -> bool:
    age = time.time() - answer.created
    return age <= ttl_s and (control.max_age is None or age <= control.max_age)
