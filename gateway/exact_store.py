"""Where the exact cache's entries live: Redis when configured (shared by replicas, each entry
with its TTL), else an in-process LRU.

A Redis that fails or is slow is bypassed, never waited on: a lookup raises `StoreDown`, the
request goes upstream with ``x-gateway-cache: bypass``, and the store is tried again a second
later.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Protocol

import redis.asyncio as redis
from cachetools import TTLCache

log = logging.getLogger(__name__)


def tenant_part(tenant: str) -> str:
    """The prefix of a tenant's keys, so that one tenant's entries can be flushed."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:16]


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None: ...
    async def flush(self, tenant: str | None) -> int: ...
    async def aclose(self) -> None: ...
    def health(self) -> dict[str, str]: ...


_ENTRY_OVERHEAD = 256
"""Bytes charged to a memory entry besides its answer: the key (a 16 + 1 + 64 character
string), the bytes object's header and the cache's links and expiry record."""


class MemoryStore:
    """An in-process LRU with a TTL, for a single gateway without Redis, bounded by entries and by
    bytes (each entry is charged its answer's length plus ``_ENTRY_OVERHEAD``); the least
    recently used go first past either, and an answer over ``max_bytes`` is not stored."""

    def __init__(self, max_entries: int, ttl_s: float, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self._entries: TTLCache[str, bytes] = TTLCache(
            maxsize=max_bytes, ttl=ttl_s, getsizeof=_charged
        )
        self.too_large = 0
        """Answers not stored for being over ``max_bytes`` on their own."""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes charged to the entries held now."""
        return int(self._entries.currsize)

    async def get(self, key: str) -> bytes | None:
        return self._entries.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if _charged(value) > self._entries.maxsize:
            self.too_large += 1
            return
        self._entries[key] = value  # evicts the least recently used past max_bytes
        while len(self._entries) > self.max_entries:
            self._entries.popitem()

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._entries.get(key) for key in keys]

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        for key, value in items:
            await self.set(key, value, ttl_s)

    async def flush(self, tenant: str | None) -> int:
        keys = [k for k in self._entries if tenant is None or k.startswith(tenant_part(tenant))]
        for k in keys:
            self._entries.pop(k, None)
        return len(keys)

    async def aclose(self) -> None:
        self._entries.clear()

    def health(self) -> dict[str, str]:
        return {"exact_cache": "memory"}


def _charged(value: bytes) -> int:
    return len(value) + _ENTRY_OVERHEAD


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

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One MGET: an embeddings batch looks up every input in one round trip."""
        self._check_up()
        try:
            values = await self._redis.mget([self._prefix + key for key in keys])
        except (redis.RedisError, OSError) as exc:
            raise self._went_down(exc) from exc
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        """One pipelined round trip, each entry with its TTL."""
        self._check_up()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self._prefix + key, value, px=int(ttl_s * 1000))
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise self._went_down(exc) from exc

    async def flush(self, tenant: str | None) -> int:
        pattern = self._prefix + (f"{tenant_part(tenant)}:*" if tenant else "*")
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
