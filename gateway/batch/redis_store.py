"""The Batch API's state in Redis, shared by every replica (see `gateway.batch.store`).

Keys, under the prefix (``gw:batch:``), with ``{t}`` the tenant's hash:

- ``{kind}:{t}:{id}``: a File or Batch object (JSON); ``{kind}s:{t}``: a sorted set of the
  tenant's ids by creation time;
- ``created``: a sorted set of ``[kind, tenant, id]`` of every object by creation time (for
  `purge`); ``unfinished``: a set of ``[tenant, id]`` of the batches not in a final status;
- ``claims:{batch}``: hash line index → claiming replica (``HSETNX``: at most once);
  ``done:{batch}``: hash line index → ``1`` or ``0`` (a 2xx or not) and the result line,
  written once (the first result wins), counted in ``counts:{batch}`` (``ok``, ``failed``)
  by the same script;
- ``jobs:{batch}``: hash job id → the upstream batch job (JSON) its lines were sent in;
- ``owner:{replica}``: present while the replica's heartbeat is fresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as redis

from gateway.batch.store import Kind, LineState, StateUnavailable
from gateway.batch.wire import UNFINISHED
from gateway.exact_store import tenant_part

_FINISH = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
    return 1
end
return 0
"""
_RECLAIM = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
end
return 0
"""


class RedisBatchStore:
    def __init__(self, url: str, prefix: str = "gw:batch:", timeout_s: float = 5.0) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._p = prefix
        self._finish = self._redis.register_script(_FINISH)
        self._reclaim = self._redis.register_script(_RECLAIM)

    def _key(self, kind: Kind, tenant: str, obj_id: str) -> str:
        return f"{self._p}{kind}:{tenant_part(tenant)}:{obj_id}"

    def _index(self, kind: Kind, tenant: str) -> str:
        return f"{self._p}{kind}s:{tenant_part(tenant)}"

    async def put(self, kind: Kind, tenant: str, obj: dict[str, Any]) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(kind, tenant, obj["id"]), msgspec.json.encode(obj))
                pipe.zadd(self._index(kind, tenant), {obj["id"]: obj["created_at"]})
                pipe.zadd(
                    f"{self._p}created", {_member(kind, tenant, obj["id"]): obj["created_at"]}
                )
                if kind == "batch":
                    self._mark(pipe, tenant, obj)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def get(self, kind: Kind, tenant: str, obj_id: str) -> dict[str, Any] | None:
        value = await self._call(self._redis.get(self._key(kind, tenant, obj_id)))
        return None if value is None else _decode(value)

    async def listing(self, kind: Kind, tenant: str) -> list[dict[str, Any]]:
        ids = await self._call(self._redis.zrevrange(self._index(kind, tenant), 0, -1))
        if not ids:
            return []
        keys = [self._key(kind, tenant, i.decode()) for i in ids]
        values = await self._call(self._redis.mget(keys))
        return [_decode(v) for v in values if v is not None]

    async def delete(self, kind: Kind, tenant: str, obj_id: str) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(kind, tenant, obj_id))
                pipe.zrem(self._index(kind, tenant), obj_id)
                pipe.zrem(f"{self._p}created", _member(kind, tenant, obj_id))
                deleted, *_ = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return bool(deleted)

    async def update(
        self, tenant: str, batch_id: str, expect: Iterable[str], changes: dict[str, Any]
    ) -> dict[str, Any] | None:
        key, allowed = self._key("batch", tenant, batch_id), frozenset(expect)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        value = await pipe.get(key)
                        batch = None if value is None else _decode(value)
                        if batch is None or batch["status"] not in allowed:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                            return None
                        batch.update(changes)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(key, msgspec.json.encode(batch))
                        self._mark(pipe, tenant, batch)
                        await pipe.execute()
                        return batch
                    except redis.WatchError:
                        continue  # another replica moved it meanwhile: read it again
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

    def _mark(self, pipe: Any, tenant: str, batch: dict[str, Any]) -> None:
        member = msgspec.json.encode([tenant, batch["id"]])
        if batch["status"] in UNFINISHED:
            pipe.sadd(f"{self._p}unfinished", member)
        else:
            pipe.srem(f"{self._p}unfinished", member)

    async def unfinished(self) -> list[tuple[str, str]]:
        members = await self._call(self._redis.smembers(f"{self._p}unfinished"))
        pairs = [msgspec.json.decode(m) for m in members]
        return sorted((tenant, batch_id) for tenant, batch_id in pairs)

    async def purge(self, before: float) -> list[str]:
        old = await self._call(self._redis.zrangebyscore(f"{self._p}created", "-inf", f"({before}"))
        files: list[str] = []
        for member in old:
            kind, tenant, obj_id = msgspec.json.decode(member)
            if kind == "batch":
                batch = await self.get(kind, tenant, obj_id)
                if batch is not None and batch["status"] in UNFINISHED:
                    continue
            await self.delete(kind, tenant, obj_id)
            if kind == "file":
                files.append(obj_id)
        return files

    async def claim(self, batch_id: str, index: int, owner: str) -> bool:
        return bool(
            await self._call(self._redis.hsetnx(f"{self._p}claims:{batch_id}", index, owner))
        )

    async def finish(self, batch_id: str, index: int, ok: bool, result: bytes) -> bool:
        value = (b"1" if ok else b"0") + result
        keys = [f"{self._p}done:{batch_id}", f"{self._p}counts:{batch_id}"]
        args: list[bytes | int | str] = [index, value, "ok" if ok else "failed"]
        return bool(await self._call(self._finish(keys=keys, args=args)))

    async def lines(self, batch_id: str) -> dict[int, LineState]:
        claims = await self._call(self._redis.hgetall(f"{self._p}claims:{batch_id}"))
        done = await self._call(self._redis.hgetall(f"{self._p}done:{batch_id}"))
        out: dict[int, LineState] = {}
        for index, owner in claims.items():
            result = done.get(index)
            out[int(index)] = LineState(
                owner.decode(),
                None if result is None else result[:1] == b"1",
                None if result is None else bytes(result[1:]),
            )
        return out

    async def counts(self, batch_id: str) -> tuple[int, int]:
        found = await self._call(self._redis.hgetall(f"{self._p}counts:{batch_id}"))
        return int(found.get(b"ok", 0)), int(found.get(b"failed", 0))

    async def reclaim(self, batch_id: str, index: int, owner: str, new_owner: str) -> bool:
        keys = [f"{self._p}claims:{batch_id}", f"{self._p}done:{batch_id}"]
        return bool(await self._call(self._reclaim(keys=keys, args=[index, owner, new_owner])))

    async def put_job(self, batch_id: str, job: dict[str, Any]) -> None:
        value = msgspec.json.encode(job)
        await self._call(self._redis.hset(f"{self._p}jobs:{batch_id}", job["id"], value))

    async def jobs(self, batch_id: str) -> list[dict[str, Any]]:
        found = await self._call(self._redis.hgetall(f"{self._p}jobs:{batch_id}"))
        return [_decode(found[key]) for key in sorted(found)]

    async def forget_lines(self, batch_id: str) -> None:
        parts = ("claims", "done", "counts", "jobs")
        keys = (f"{self._p}{part}:{batch_id}" for part in parts)
        await self._call(self._redis.delete(*keys))

    async def beat(self, owner: str, ttl_s: float) -> None:
        await self._call(self._redis.set(f"{self._p}owner:{owner}", b"1", px=int(ttl_s * 1000)))

    async def alive(self, owners: set[str]) -> set[str]:
        ordered = sorted(owners)
        if not ordered:
            return set()
        found = await self._call(self._redis.mget([f"{self._p}owner:{o}" for o in ordered]))
        return {owner for owner, value in zip(ordered, found, strict=True) if value is not None}

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except (redis.RedisError, OSError) as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> StateUnavailable:
    return StateUnavailable(f"the batch store (redis) failed: {exc}")


def _member(kind: Kind, tenant: str, obj_id: str) -> bytes:
    return msgspec.json.encode([kind, tenant, obj_id])


def _decode(value: bytes | str) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(value)
    return decoded
