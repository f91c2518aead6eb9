"""The semantic cache as the gateway holds it: opened at start when the policy enables it, else
on the first request that needs it (after a reload turned it on), once.

Its size settings (``max_entries``, ``max_bytes``, ``max_entry_bytes``, ``ttl``,
``approximate_after``) are read when it opens;
the threshold, the strictness, the scope, the temperature limit and ``enabled`` are read per
request by the pipeline's semantic-cache stage.

``cache.semantic.index`` is read when it opens too: ``pgvector`` keeps the entries in the
ledger's PostgreSQL (``index_url``, from ``GATEWAY_LEDGER_URL``) instead of this process and Redis.

A flush reaches Redis (and the shared table, when there is a ledger database) even when this
process never opened the cache (the policy disables it now, but it was enabled before, here or
on another replica): offboarding a tenant must remove its entries, not only this process's copy
of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.policy.schema import SemanticCacheConfig
from gateway.semantic.cache import SemanticCache
from gateway.semantic.pgvector import IndexUnavailable, flush_table
from gateway.semantic.store import RedisStore

log = logging.getLogger(__name__)

NAMESPACE = "gw:semantic"
"""The Redis key prefix of the gateway's semantic entries."""


class LazySemanticCache:
    def __init__(self, redis_url: str | None, index_url: str | None = None) -> None:
        self._redis_url = redis_url
        self._index_url = index_url
        self._cache: SemanticCache | None = None
        self._lock = asyncio.Lock()

    async def get(self, config: SemanticCacheConfig) -> SemanticCache:
        """The cache, opened with ``config``'s sizes when it is not open yet."""
        return self._cache or await self._open(config)

    async def flush(self, tenant: str | None) -> int:
        """Delete ``tenant``'s entries (all when None), in Redis too when the cache is closed
        here; returns how many."""
        if self._cache is not None:
            return await self._cache.flush(tenant)
        count = 0
        if self._index_url is not None:
            count += await asyncio.to_thread(flush_table, self._index_url, tenant)
        if self._redis_url is None:
            return count  # entries without Redis or the shared table live in an open cache
        store = RedisStore(self._redis_url, NAMESPACE)
        try:
            return count + await store.flush(tenant)
        finally:
            await store.aclose()

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
                shared = config.index == "pgvector"
                if shared and self._index_url is None:
                    raise IndexUnavailable(
                        "cache.semantic.index: pgvector needs the ledger's PostgreSQL: "
                        "set GATEWAY_LEDGER_URL (postgresql://...) and run `gateway db upgrade`"
                    )
                self._cache = await SemanticCache.open(
                    None if shared else self._redis_url,
                    pgvector_url=self._index_url if shared else None,
                    namespace=NAMESPACE,
                    max_entries=config.max_entries,
                    ttl_s=config.ttl,
                    approximate_after=config.approximate_after,
                    max_bytes=config.max_bytes,
                    max_entry_bytes=config.max_entry_bytes,
                )
                log.info(
                    "semantic cache open (%s, %d entries) in %.2f s",
                    self._cache.health()["backend"],
                    self.size(),
                    time.perf_counter() - started,
                )
            return self._cache
