"""The semantic-cache stage: which requests may use it, in which scope, and the answers' codec.

:mod:`gateway.semantic` does the search, the meaning guard and the Redis sharing; this stage
decides what the pipeline asks of it. A request takes part when the policy enables the cache,
its text is not empty, and it is cacheable under the semantic cache's own (lower) temperature
limit. ``Cache-Control`` applies as for the exact cache.

Scope: entries are searched per tenant and per *scope*, a hash of the policy's cache namespace,
the model choice (a named model, or ``auto`` with the policy version, since a new policy may
route differently), the routing tags and the request's context fingerprint (system prompt,
earlier turns, tools, output-shaping parameters). An answer is therefore only ever offered to
the same tenant, asking in the same context, under the same routing.

The cache opens at start when the policy enables it, else on the first request that needs it.
Its size settings (``max_entries``, ``ttl``, ``approximate_after``) are read when it opens;
the threshold, the temperature limit and ``enabled`` are read per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import msgspec

from gateway.ml.loader import Understanding
from gateway.pipeline import answer as cached_answer
from gateway.pipeline.answer import CachedAnswer
from gateway.pipeline.exact_cache import cacheable
from gateway.pipeline.normalize import ChatRequest
from gateway.policy.schema import SemanticCacheConfig
from gateway.runtime.store import Runtime
from gateway.semantic import DEFAULT_THRESHOLD, SemanticCache, context_fingerprint

__all__ = ["SemanticHit", "SemanticStage"]

log = logging.getLogger(__name__)


class SemanticHit(msgspec.Struct, frozen=True):
    answer: CachedAnswer
    score: float


class SemanticStage:
    def __init__(self, redis_url: str | None) -> None:
        self._redis_url = redis_url
        self._cache: SemanticCache | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def wanted(request: ChatRequest, runtime: Runtime) -> bool:
        """Whether the request reads or writes the semantic cache at all."""
        config = runtime.policy.cache.semantic
        control = request.cache_control
        return (
            config.enabled
            and (control.read or control.write)
            and cacheable(request.body, config.max_temperature)
        )

    async def prepare(self, runtime: Runtime) -> None:
        if runtime.policy.cache.semantic.enabled:
            await self._open(runtime.policy.cache.semantic)

    async def lookup(
        self, request: ChatRequest, runtime: Runtime, understanding: Understanding
    ) -> SemanticHit | None:
        config = runtime.policy.cache.semantic
        if not understanding.text or not request.cache_control.read:
            return None
        cache = self._cache or await self._open(config)
        max_age = request.cache_control.max_age
        hit = await cache.lookup(
            request.tenant,
            _scope(request, runtime),
            understanding.vector,
            understanding.text,
            DEFAULT_THRESHOLD if config.threshold is None else config.threshold,
            max_age_s=config.ttl if max_age is None else min(max_age, config.ttl),
        )
        if hit is None:
            return None
        try:
            answer = cached_answer.decode(hit.payload)
        except msgspec.MsgspecError:
            log.warning("semantic cache: deleting an undecodable entry %s", hit.entry_id)
            await cache.discard(hit.entry_id, request.tenant)
            return None
        return SemanticHit(answer, hit.score)

    async def save(
        self,
        request: ChatRequest,
        runtime: Runtime,
        understanding: Understanding,
        answer: CachedAnswer,
    ) -> None:
        config = runtime.policy.cache.semantic
        if not (config.enabled and understanding.text and request.cache_control.write):
            return
        cache = self._cache or await self._open(config)
        await cache.store(
            request.tenant,
            _scope(request, runtime),
            understanding.vector,
            understanding.text,
            cached_answer.encode(answer),
        )

    async def flush(self, tenant: str | None) -> int:
        return 0 if self._cache is None else await self._cache.flush(tenant)

    def health(self) -> dict[str, Any] | None:
        return None if self._cache is None else self._cache.health()

    def degraded(self) -> bool:
        """Redis is unreachable: lookups use this process's entries only, stores are skipped."""
        return self._cache is not None and self._cache.degraded

    def size(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()

    async def _open(self, config: SemanticCacheConfig) -> SemanticCache:
        async with self._lock:
            if self._cache is None:
                started = time.perf_counter()
                self._cache = await SemanticCache.open(
                    self._redis_url,
                    namespace="gw:semantic",
                    max_entries=config.max_entries,
                    ttl_s=config.ttl,
                    approximate_after=config.approximate_after,
                )
                log.info(
                    "semantic cache open (%s, %d entries) in %.2f s",
                    "redis" if self._redis_url else "memory",
                    self.size(),
                    time.perf_counter() - started,
                )
            return self._cache


def _scope(request: ChatRequest, runtime: Runtime) -> str:
    model = f"auto@{runtime.loaded.digest}" if request.model == "auto" else request.model
    tags = sorted((k, v) for k, v in request.tags.items() if k in runtime.routing_tags)
    scope = msgspec.json.encode(
        [runtime.policy.cache.namespace, model, tags, context_fingerprint(request.body)]
    )
    return hashlib.sha256(scope).hexdigest()[:32]
