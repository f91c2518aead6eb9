"""Tenants' rate limits: requests and tokens per minute, and concurrent requests.

The windows are the `limits` library's (PyPI ``limits``), in Redis when the gateway has one,
so every replica counts against the same numbers, else in this process:

- requests per minute: a sliding window counter (the weighted sum of this minute's and the
  previous minute's counts), one script call per request;
- tokens per minute: a fixed 60 s window opened by its first answer. A request is let in while
  the window has room, and its tokens are added when its ledger record is written, whatever
  they come to: a fixed window's counter counts past the limit, where a sliding one would
  refuse the late addition and lose it;
- concurrent requests: not a window, so not the library's. In Redis, a sorted set per tenant
  whose members are the running requests scored by when their lease runs out (server time),
  taken and given back by two short scripts: a replica that dies holding slots cannot keep
  them past `SLOT_LEASE_S`.

A store that fails lets requests through (logged): rate limits protect the service, and a
Redis outage must not become a full one.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aredis
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from gateway.errors import RateLimited, TokensRateLimited
from gateway.policy.limits import TenantLimits

log = logging.getLogger(__name__)

PREFIX = "gateway:limits"
SLOT_LEASE_S = 900
"""The longest a running request holds a concurrency slot in Redis; a request still running
after that stops counting, and a dead replica's slots are free again after it."""

_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(slots=True)
class Pass:
    """What the limiter let in: the ``x-ratelimit-*`` headers, and the slot to give back."""

    headers: dict[str, str] = field(default_factory=dict)
    slot: str | None = None
    """The concurrency slot held, given back by `Limiter.release`."""


class Limiter:
    """Counts tenants' requests, tokens and running requests, in Redis or in this process."""

    def __init__(self, redis_url: str | None) -> None:
        self._pool: aredis.ConnectionPool | None = None
        storage: Storage
        if redis_url:
            self._pool = aredis.ConnectionPool.from_url(redis_url)
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                key_prefix=PREFIX,
                # documented, though typed as the client's scalar options: the pool is ours
                connection_pool=self._pool,  # type: ignore[arg-type]
                wrap_exceptions=True,
            )
            self._redis: aredis.Redis | None = aredis.Redis(connection_pool=self._pool)
            self._take = self._redis.register_script(_TAKE)
        else:
            storage = MemoryStorage()
            self._redis = None
        self._requests = SlidingWindowCounterRateLimiter(storage)
        self._tokens = FixedWindowRateLimiter(storage)
        self._running: Counter[str] = Counter()
        self._items: dict[int, RateLimitItemPerMinute] = {}
        self._errors: tuple[type[Exception], ...] = (RedisError, StorageError)

    async def admit(self, tenant: str, limits: TenantLimits) -> Pass:
        """Let one request of ``tenant`` in, or raise `RateLimited` with its headers."""
        granted = Pass()
        try:
            if limits.tokens_per_minute is not None:
                await self._check_tokens(tenant, limits.tokens_per_minute, granted.headers)
            if limits.requests_per_minute is not None:
                await self._hit_request(tenant, limits.requests_per_minute, granted.headers)
            if limits.max_concurrent_requests is not None:
                granted.slot = await self._take_slot(tenant, limits.max_concurrent_requests)
        except self._errors as exc:
            log.warning("rate limits: the store failed, letting the request in: %s", exc)
        return granted

    async def spend(self, tenant: str, limits: TenantLimits, tokens: int) -> None:
        """Add an answer's tokens to the tenant's window (after its ledger record)."""
        if limits.tokens_per_minute is None or tokens <= 0:
            return
        try:
            await self._tokens.hit(self._item(limits.tokens_per_minute), tenant, cost=tokens)
        except self._errors as exc:
            log.warning("rate limits: could not count %d tokens: %s", tokens, exc)

    async def release(self, tenant: str, slot: str) -> None:
        """Give back a concurrency slot taken by `admit`."""
        if self._redis is None:
            self._running[tenant] -= 1
            if self._running[tenant] <= 0:
                del self._running[tenant]
            return
        try:
            await self._redis.zrem(_slots_key(tenant), slot)
        except RedisError as exc:  # the lease frees it in the end
            log.warning("rate limits: could not give a slot back: %s", exc)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def _check_tokens(self, tenant: str, limit: int, headers: dict[str, str]) -> None:
        item = self._item(limit)
        stats = await self._tokens.get_window_stats(item, tenant)
        reset_s = max(0.0, stats.reset_time - time.time())
        headers.update(_headers("tokens", limit, stats.remaining, reset_s))
        if stats.remaining <= 0:
            raise TokensRateLimited(
                f"Rate limit reached for tenant {tenant!r} on tokens per min (TPM): "
                f"Limit {limit}. Please try again in {_duration(reset_s)}.",
                headers=_retry(headers, reset_s),
            )

    async def _hit_request(self, tenant: str, limit: int, headers: dict[str, str]) -> None:
        item = self._item(limit)
        allowed = await self._requests.hit(item, tenant)
        stats = await self._requests.get_window_stats(item, tenant)
        reset_s = max(0.0, stats.reset_time - time.time())
        headers.update(_headers("requests", limit, stats.remaining, reset_s))
        if not allowed:
            raise RateLimited(
                f"Rate limit reached for tenant {tenant!r} on requests per min (RPM): "
                f"Limit {limit}. Please try again in {_duration(reset_s)}.",
                headers=_retry(headers, reset_s),
            )

    async def _take_slot(self, tenant: str, limit: int) -> str:
        if self._redis is None:
            taken = self._running[tenant] < limit
            if taken:
                self._running[tenant] += 1
            slot = "local"
        else:
            slot = uuid.uuid4().hex
            taken = bool(
                await self._take(keys=[_slots_key(tenant)], args=[limit, SLOT_LEASE_S, slot])
            )
        if not taken:
            raise RateLimited(
                f"Tenant {tenant!r} has {limit} requests running, its limit of concurrent "
                "requests; try again when one ends.",
                code="concurrency_limit_exceeded",
                headers={"retry-after": "1"},
            )
        return slot

    def _item(self, per_minute: int) -> RateLimitItemPerMinute:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute, namespace="t")
        return item


def _slots_key(tenant: str) -> str:
    return f"{PREFIX}:running:{tenant}"


def _headers(kind: str, limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for ``requests`` or ``tokens``."""
    return {
        f"x-ratelimit-limit-{kind}": str(limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, remaining)),
        f"x-ratelimit-reset-{kind}": _duration(reset_s),
    }


def _retry(headers: dict[str, str], reset_s: float) -> dict[str, str]:
    return {**headers, "retry-after": str(max(1, math.ceil(reset_s)))}


def _duration(seconds: float) -> str:
    """OpenAI's form: ``20s``, ``1m30s``, ``250ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
