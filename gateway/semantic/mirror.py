"""Keeping this process's local index in step with Redis, for :class:`SemanticCache`.

Every store is written to Redis first and then indexed locally; a follower task tails the Redis
log and indexes other processes' entries as they arrive, and on start (or after an outage) it
resynchronises: entries missing locally are loaded, local entries gone from Redis are dropped,
and undecodable blobs are deleted. While Redis is unreachable or slow the cache is *degraded*:
lookups keep working from the local index, stores are skipped, and the follower retries with
backoff until a resync succeeds.

Apart from the lookup path (:mod:`~gateway.semantic.cache`) because it changes for other
reasons: the Redis layout and log (:mod:`~gateway.semantic.store`), the blob format
(:mod:`~gateway.semantic.codec`) and the outage policy, none of which a lookup sees. It changes
the index only through the cache's worker thread (``run``), like the cache itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from redis.exceptions import RedisError

from gateway.ml.guard import MAX_CHARS
from gateway.semantic import codec
from gateway.semantic.index import LocalIndex, StoredEntry
from gateway.semantic.store import Event, RedisStore, id_hex

__all__ = ["RedisMirror"]

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)
_LOAD_CHUNK = 500
"""Entries fetched and indexed at a time: what a resync holds besides the index is bounded by
this many blobs (each at most ``max_entry_bytes`` plus a vector)."""

RunInWorker = Callable[..., Awaitable[Any]]
"""``run(fn, *args)``: call ``fn`` in the cache's worker thread, the only one that touches the
index."""


class RedisMirror:
    """The Redis side of one cache: the store, the log cursor and the degraded state.

    :meth:`start` once, then :meth:`follow` as a background task; :meth:`stop` before cancelling
    that task, :meth:`aclose` after it to close the store's clients."""

    def __init__(
        self,
        store: RedisStore,
        index: LocalIndex,
        run: RunInWorker,
        counters: Counter[str],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._index = index
        self._run = run
        self._counters = counters
        self._clock = clock
        self._cursor = "0-0"
        self._resync_needed = True
        self._closed = False
        self.degraded_reason: str | None = None
        """Why Redis is considered unreachable or slow; None while it answers."""
        self.last_sync: float | None = None
        """Unix time of the last successful resync."""

    async def start(self) -> None:
        """The first resync; when Redis does not answer, start degraded (the follower retries)."""
        try:
            await self._resync()
        except _REDIS_ERRORS as exc:
            self._degrade(exc)

    # ---- writes --------------------------------------------------------------------------

    async def put(self, entry: StoredEntry, row: npt.NDArray[np.float32]) -> bool:
        """Write ``entry`` to Redis; False when skipped (degraded, or the write failed)."""
        if self.degraded_reason is not None:
            return False
        record = codec.Record(
            row.astype("<f4").tobytes(),
            entry.tenant,
            entry.fingerprint,
            entry.text,
            entry.payload,
            entry.created,
        )
        try:
            await self._store.put(
                entry.entry_id,
                entry.tenant,
                codec.encode(record),
                entry.created,
                self._index.config.ttl_s,
                self._index.config.max_entries,
            )
        except _REDIS_ERRORS as exc:
            self._degrade(exc)
            return False
        return True

    async def flush(self, tenant: str | None) -> int:
        """Delete ``tenant``'s entries (all when None) from Redis; Redis errors degrade and
        propagate."""
        try:
            return await self._store.flush(tenant)
        except _REDIS_ERRORS as exc:
            self._degrade(exc)
            raise

    async def delete(self, entry_id: int, tenant: str) -> None:
        """Delete one entry from Redis, unless degraded; an error degrades."""
        if self.degraded_reason is not None:
            return
        try:
            await self._store.delete([(entry_id, tenant)])
        except _REDIS_ERRORS as exc:
            self._degrade(exc)

    def stop(self) -> None:
        """Make :meth:`follow` return at its next turn: a cancellation that the Redis client
        turns into a connection error must not send it round its retry loop again."""
        self._closed = True

    async def aclose(self) -> None:
        self.stop()
        await self._store.aclose()

    # ---- sync, follow, degrade -----------------------------------------------------------

    def _degrade(self, exc: BaseException) -> None:
        reason = f"redis: {type(exc).__name__}: {exc}"[:300]
        if self.degraded_reason is None:
            log.warning("semantic cache degraded (%s); serving from the local index", reason)
        self.degraded_reason = reason
        self._resync_needed = True

    async def _resync(self) -> None:
        """Make the local index equal to Redis's newest ``max_entries`` entries (those that
        fit in ``max_bytes``: they are indexed oldest first, so the byte bound evicts the
        oldest)."""
        cursor = await self._store.last_log_id()
        remote = await self._store.members(self._index.config.max_entries)  # newest first
        local = await self._run(self._index.ids)
        gone = local - remote.keys()
        if gone:
            await self._run(self._index.remove, gone)
        await self._load([i for i in reversed(remote) if i not in local], remote)
        self._cursor = cursor
        self._resync_needed = False
        self.last_sync = self._clock()
        if self.degraded_reason is not None:
            log.warning("semantic cache recovered: Redis answers again")
        self.degraded_reason = None

    async def _load(self, entry_ids: list[int], tenants: dict[int, str] | None = None) -> None:
        """Fetch, validate and index entries, in this order and a chunk at a time; undecodable
        ones are deleted from Redis."""
        for start in range(0, len(entry_ids), _LOAD_CHUNK):
            await self._load_chunk(entry_ids[start : start + _LOAD_CHUNK], tenants)

    async def _load_chunk(self, entry_ids: list[int], tenants: dict[int, str] | None) -> None:
        blobs = await self._store.fetch(entry_ids)
        good: list[tuple[StoredEntry, npt.NDArray[np.float32]]] = []
        bad: list[tuple[int, str | None]] = []
        for entry_id, blob in blobs.items():
            tenant = tenants.get(entry_id) if tenants else None
            if blob is None:
                bad.append((entry_id, tenant))  # expired key: drop its index member
                continue
            try:
                record, vector = codec.decode(blob, self._index.config.dim)
            except codec.CorruptEntry as exc:
                log.warning("deleting corrupt semantic-cache entry %s: %s", id_hex(entry_id), exc)
                self._counters["corrupt_deleted"] += 1
                bad.append((entry_id, tenant))
                continue
            if tenant is not None and record.tenant != tenant:
                self._counters["corrupt_deleted"] += 1
                bad.append((entry_id, tenant))
                continue
            entry = StoredEntry(
                entry_id,
                record.tenant,
                record.fingerprint,
                record.text[:MAX_CHARS],  # a writer before the guard's bound kept it whole
                record.payload,
                record.created,
            )
            good.append((entry, vector))
        if good:
            await self._run(self._index.add, good)
        if bad:
            await self._store.delete(bad)

    async def _apply(self, events: list[Event]) -> None:
        adds: list[int] = []
        for event in events:
            if event.op == "add":
                with contextlib.suppress(ValueError):
                    entry_id = int(event.arg, 16)
                    if entry_id not in self._index:
                        adds.append(entry_id)
            elif event.op == "flush":
                await self._load(adds)
                adds = []
                await self._run(self._index.remove_tenant, event.arg or None)
        await self._load(adds)

    async def follow(self) -> None:
        """Tail the log until closed (run as a task); resync first whenever one is needed."""
        backoff = 0.1
        while not self._closed:
            try:
                if self._resync_needed:
                    await self._resync()
                cursor, events = await self._store.follow(self._cursor)
                if events:
                    await self._apply(events)
                self._cursor = cursor
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except _REDIS_ERRORS as exc:
                self._degrade(exc)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
