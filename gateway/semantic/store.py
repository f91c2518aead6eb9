"""Entries in Redis: what a restarted process rebuilds from, and the log every process follows.

Keys, under ``{namespace}:sem``:

- ``:e:{id}``: one entry blob (:mod:`gateway.semantic.codec`), expiring with the TTL;
- ``:all``: a sorted set of ``{id}:{tenant}`` scored by creation time, so a rebuild loads the
  newest ``max_entries`` and a tenant flush finds its ids; trimmed to ``max_entries`` (oldest
  first) and to the TTL on every store;
- ``:log``: a stream of ``add {id}`` / ``flush {tenant}`` events, capped near 100k; every
  process follows it with a blocking XREAD, so a new entry reaches the others in milliseconds.

Two clients: ``client`` with short timeouts for everything a request may wait on, ``blocking``
with a socket timeout longer than the XREAD block for the follower. Redis errors propagate as
``redis.exceptions.RedisError``/``OSError``; :class:`~gateway.semantic.mirror.RedisMirror`
turns them into a degraded state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

__all__ = ["Event", "RedisStore"]

_LOG_MAXLEN = 100_000
_MGET_CHUNK = 500
_MEMBERS_PAGE = 20_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def id_hex(entry_id: int) -> str:
    return f"{entry_id:016x}"


@dataclass(frozen=True, slots=True)
class Event:
    """One record of the log: ``op`` is "add" (``arg`` = entry id) or "flush" (``arg`` =
    tenant, "" for all)."""

    op: str
    arg: str


class RedisStore:
    """The Redis side of the semantic cache. See the module docstring."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        timeout_s: float = 0.5,
        block_ms: int = 1000,
    ) -> None:
        self.prefix = f"{namespace}:sem"
        self.block_ms = block_ms
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "health_check_interval": 0,
            "retry_on_timeout": False,
        }
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, max_connections=32, **common
        )
        self.blocking = aioredis.Redis.from_url(
            url, socket_timeout=block_ms / 1000 + 2 * timeout_s + 1, max_connections=2, **common
        )
        self._all = f"{self.prefix}:all"
        self._log = f"{self.prefix}:log"

    def key(self, entry_id: int) -> str:
        return f"{self.prefix}:e:{id_hex(entry_id)}"

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.blocking.aclose()

    async def ping(self) -> None:
        await self.client.ping()

    async def put(
        self, entry_id: int, tenant: str, blob: bytes, created: float, ttl_s: float, cap: int
    ) -> None:
        """Write an entry, index it, announce it, and trim the index to ``cap`` and the TTL."""
        member = f"{id_hex(entry_id)}:{tenant}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key(entry_id), blob, px=max(1, int(ttl_s * 1000)))
            pipe.zadd(self._all, {member: created})
            pipe.zremrangebyscore(self._all, "-inf", f"({time.time() - ttl_s}")
            pipe.xadd(
                self._log,
                {"op": "add", "arg": id_hex(entry_id)},
                maxlen=_LOG_MAXLEN,
                approximate=True,
            )
            pipe.zcard(self._all)
            results = await pipe.execute()
        excess = int(results[-1]) - cap
        if excess > 0:
            popped: Any = await self.client.zpopmin(self._all, excess)
            ids = [_text(m).split(":", 1)[0] for m, _ in popped]
            if ids:
                await self.client.delete(*(f"{self.prefix}:e:{i}" for i in ids))

    async def last_log_id(self) -> str:
        """The id of the newest log event ("0-0" when the log is empty)."""
        newest: Any = await self.client.xrevrange(self._log, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def members(self, limit: int | None = None) -> dict[int, str]:
        """Entry id -> tenant for the newest ``limit`` entries (all when None), a page of
        ``_MEMBERS_PAGE`` at a time: a million in one reply took longer than the request
        timeout, so a new replica never finished its first resync."""
        out: dict[int, str] = {}
        start = 0
        while limit is None or start < limit:
            size = _MEMBERS_PAGE if limit is None else min(_MEMBERS_PAGE, limit - start)
            raw: Any = await self.client.zrevrange(self._all, start, start + size - 1)
            for member in raw:
                text = _text(member)
                hex_id, _, tenant = text.partition(":")
                try:
                    out[int(hex_id, 16)] = tenant
                except ValueError:
                    await self.client.zrem(self._all, member)
            if len(raw) < size:
                break
            start += size
        return out

    async def fetch(self, entry_ids: Iterable[int]) -> dict[int, bytes | None]:
        """Blobs by id (None where the key is gone), in MGET chunks."""
        ids = list(entry_ids)
        out: dict[int, bytes | None] = {}
        for start in range(0, len(ids), _MGET_CHUNK):
            chunk = ids[start : start + _MGET_CHUNK]
            blobs: Any = await self.client.mget([self.key(i) for i in chunk])
            out.update(zip(chunk, blobs, strict=True))
        return out

    async def delete(self, entries: Iterable[tuple[int, str | None]]) -> None:
        """Remove entries (id, tenant or None when unknown) from the keys and the index."""
        pairs = list(entries)
        if not pairs:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for entry_id, tenant in pairs:
                pipe.delete(self.key(entry_id))
                if tenant is not None:
                    pipe.zrem(self._all, f"{id_hex(entry_id)}:{tenant}")
            await pipe.execute()

    async def flush(self, tenant: str | None) -> int:
        """Delete every entry of ``tenant`` (all when None) and announce it; returns the count."""
        everything = await self.members()
        doomed = [(i, t) for i, t in everything.items() if tenant is None or t == tenant]
        for start in range(0, len(doomed), _MGET_CHUNK):
            await self.delete(doomed[start : start + _MGET_CHUNK])
        await self.client.xadd(
            self._log, {"op": "flush", "arg": tenant or ""}, maxlen=_LOG_MAXLEN, approximate=True
        )
        return len(doomed)

    async def follow(self, after: str) -> tuple[str, list[Event]]:
        """Block up to ``block_ms`` for events after ``after``; returns the new cursor."""
        reply: Any = await self.blocking.xread({self._log: after}, count=1000, block=self.block_ms)
        events: list[Event] = []
        cursor = after
        for _stream, records in reply or []:
            for raw_id, fields in records:
                cursor = _text(raw_id)
                decoded = {_text(k): _text(v) for k, v in fields.items()}
                events.append(Event(decoded.get("op", ""), decoded.get("arg", "")))
        return cursor, events
