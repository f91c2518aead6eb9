"""The semantic cache: the async facade the pipeline calls.

A lookup is served from this process's :class:`~gateway.semantic.index.LocalIndex` only (no
network round trip): the nearest entries of the same tenant and context fingerprint that score
at least the threshold are offered, best first, to the meaning guard (its rules, then its learned
verifier on the two texts and their vectors), and the first it accepts is the hit. All index
work runs in one worker thread; concurrent lookups that arrive while it is busy are taken
together as one batch (one FAISS search per partition), so the event loop only ever waits on a
future.

With Redis (``redis_url``) every store is written to Redis first and then indexed locally; a
follower task tails the Redis log and indexes other processes' entries as they arrive, and on
start (or after an outage) it resynchronises: entries missing locally are loaded, local entries
gone from Redis are dropped, and undecodable blobs are deleted. While Redis is unreachable or
slow the cache is *degraded*: lookups keep working from the local index, stores are skipped,
and the follower retries with backoff until a resync succeeds. Without Redis it is in-process
only.

Eviction is per process (``max_entries``, least recently used); Redis keeps the newest
``max_entries`` and nothing older than the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from redis.exceptions import RedisError

from gateway.ml import guard
from gateway.semantic import codec
from gateway.semantic.index import Candidate, IndexConfig, LocalIndex, StoredEntry
from gateway.semantic.store import Event, RedisStore, id_hex

__all__ = ["Hit", "SemanticCache"]

log = logging.getLogger(__name__)

_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

GuardCheck = Callable[[str, str, npt.NDArray[np.float32], npt.NDArray[np.float32]], guard.Verdict]
"""``check(query_text, entry_text, query_vector, entry_vector)``, as :meth:`guard.Guard.check`."""


def _single_threaded_faiss() -> None:
    """FAISS's OpenMP threads spin while they wait; for one query at a time on a busy machine
    that costs far more than it saves (a 10k flat search went from ~0.1 ms to 60 ms p50 with
    two threads on the loaded 2-core dev box). The setting is per thread: this is the worker's."""
    faiss.omp_set_num_threads(1)


@dataclass(frozen=True, slots=True)
class Hit:
    """A cached answer the pipeline may serve."""

    entry_id: str
    score: float
    """Cosine similarity of the request's vector and the entry's."""
    text: str
    """The cache text of the request that stored the entry."""
    payload: bytes
    created: float
    """Unix time the entry was stored."""


@dataclass(slots=True)
class _Lookup:
    tenant: str
    fingerprint: str
    vector: npt.NDArray[np.float32]
    text: str
    threshold: float
    max_age_s: float | None
    future: asyncio.Future[Hit | None]


class SemanticCache:
    """Build with :meth:`open`, close with :meth:`aclose`. See the module docstring."""

    def __init__(
        self,
        config: IndexConfig,
        store: RedisStore | None,
        *,
        guard_check: GuardCheck = guard.check,
        clock: Callable[[], float] = time.time,
        sweep_interval_s: float = 5.0,
    ) -> None:
        self.config = config
        self._store = store
        self._guard = guard_check
        self._clock = clock
        self._index = LocalIndex(config, clock)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="semantic-cache", initializer=_single_threaded_faiss
        )
        self._pending: list[_Lookup] = []
        self._drainer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sweep_interval_s = sweep_interval_s
        self._degraded_reason: str | None = None
        self._resync_needed = store is not None
        self._cursor = "0-0"
        self._closed = False
        self.counters: Counter[str] = Counter()
        self.last_sync: float | None = None

    @classmethod
    async def open(
        cls,
        redis_url: str | None,
        namespace: str = "gateway",
        dim: int = 384,
        max_entries: int = 100_000,
        ttl_s: float = 86_400.0,
        approximate_after: int = 20_000,
        *,
        redis_timeout_s: float = 0.5,
        follow_block_ms: int = 1000,
        sweep_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        guard_check: GuardCheck | None = None,
    ) -> SemanticCache:
        """Open a cache; with ``redis_url`` its entries are rebuilt from Redis first (when Redis
        is unreachable it starts empty and degraded, and catches up once Redis answers).

        ``guard_check``: the meaning guard (default: the rules and the committed learned
        verifier, loaded here in a thread so that the first lookup does not pay for it)."""
        if guard_check is None:
            guard_check = (await asyncio.to_thread(guard.default_guard)).check
        config = IndexConfig(
            dim=dim, max_entries=max_entries, ttl_s=ttl_s, approximate_after=approximate_after
        )
        store = (
            RedisStore(redis_url, namespace, timeout_s=redis_timeout_s, block_ms=follow_block_ms)
            if redis_url
            else None
        )
        cache = cls(
            config,
            store,
            guard_check=guard_check,
            clock=clock,
            sweep_interval_s=sweep_interval_s,
        )
        if store is not None:
            try:
                await cache._resync()
            except _REDIS_ERRORS as exc:
                cache._degrade(exc)
            cache._tasks.append(asyncio.create_task(cache._follow(), name="semantic-follow"))
        cache._tasks.append(asyncio.create_task(cache._sweep(), name="semantic-sweep"))
        return cache

    # ---- the API the pipeline uses -------------------------------------------------------

    async def lookup(
        self,
        tenant: str,
        fingerprint: str,
        vector: npt.ArrayLike,
        text: str,
        threshold: float,
        *,
        max_age_s: float | None = None,
    ) -> Hit | None:
        """The best entry of this tenant and fingerprint scoring ≥ ``threshold`` that the meaning
        guard accepts for ``text``, no older than ``max_age_s``; None on a miss."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Hit | None] = loop.create_future()
        self._pending.append(
            _Lookup(tenant, fingerprint, self._vector(vector), text, threshold, max_age_s, future)
        )
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def store(
        self, tenant: str, fingerprint: str, vector: npt.ArrayLike, text: str, payload: bytes
    ) -> str | None:
        """Cache ``payload`` (opaque bytes) as the answer to ``text`` in this tenant and context;
        returns the entry id, or None when the write was skipped (Redis degraded)."""
        row = self._vector(vector)
        entry = StoredEntry(
            secrets.randbits(63), tenant, fingerprint, text, bytes(payload), self._clock()
        )
        if self._store is not None:
            if self._degraded_reason is not None:
                self.counters["stores_skipped"] += 1
                return None
            record = codec.Record(
                row.astype("<f4").tobytes(), tenant, fingerprint, text, entry.payload, entry.created
            )
            try:
                await self._store.put(
                    entry.entry_id,
                    tenant,
                    codec.encode(record),
                    entry.created,
                    self.config.ttl_s,
                    self.config.max_entries,
                )
            except _REDIS_ERRORS as exc:
                self._degrade(exc)
                self.counters["stores_skipped"] += 1
                return None
        await self._run(self._index.add, [(entry, row)])
        self.counters["stores"] += 1
        return id_hex(entry.entry_id)

    async def flush(self, tenant: str | None = None) -> int:
        """Delete the entries of ``tenant`` (every tenant when None), here and in Redis; returns
        how many were deleted (Redis's count when Redis is used)."""
        local = int(await self._run(self._index.remove_tenant, tenant))
        if self._store is None:
            return local
        try:
            return await self._store.flush(tenant)
        except _REDIS_ERRORS as exc:
            self._degrade(exc)
            raise

    def __len__(self) -> int:
        return len(self._index)

    @property
    def degraded(self) -> bool:
        """Redis is unreachable or slow: lookups use the local index, stores are skipped."""
        return self._degraded_reason is not None

    async def discard(self, entry_id: str, tenant: str) -> None:
        """Delete one entry (here and in Redis): its payload turned out unusable. Other
        processes keep their copy until it expires; each of them discards it on its own hit."""
        number = int(entry_id, 16)
        await self._run(self._index.remove, [number])
        if self._store is not None and self._degraded_reason is None:
            try:
                await self._store.delete([(number, tenant)])
            except _REDIS_ERRORS as exc:
                self._degrade(exc)

    def health(self) -> dict[str, Any]:
        """State for /readyz and metrics: ``status`` is "ok" or "degraded"."""
        return {
            "status": "degraded" if self._degraded_reason else "ok",
            "backend": "redis" if self._store is not None else "memory",
            "detail": self._degraded_reason,
            "entries": len(self._index),
            "partitions": self._index.partition_count(),
            "approximate_partitions": self._index.approximate_partitions(),
            "evicted": self._index.evicted,
            "expired": self._index.expired,
            "last_sync": self.last_sync,
            **dict(self.counters),
        }

    async def aclose(self) -> None:
        """Stop the background tasks, the worker thread and the Redis clients this cache
        opened."""
        if self._closed:
            return
        self._closed = True
        for task in [*self._tasks, self._drainer]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_result(None)
        self._executor.shutdown(wait=True)
        if self._store is not None:
            await self._store.aclose()

    # ---- lookups -------------------------------------------------------------------------

    def _vector(self, vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
        row = np.asarray(vector, dtype=np.float32).reshape(-1)
        if row.shape[0] != self.config.dim:
            raise ValueError(f"expected a {self.config.dim}-d vector, got {row.shape[0]}")
        norm = float(np.linalg.norm(row))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("vector is zero or not finite")
        return row if abs(norm - 1.0) < 1e-4 else row / norm

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._run(self._lookup_batch, batch)
            except Exception:  # a failed lookup is a miss, never an error
                log.exception("semantic lookup failed")
                results = [None] * len(batch)
                self.counters["lookup_errors"] += 1
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _lookup_batch(self, batch: list[_Lookup]) -> list[Hit | None]:
        """In the worker thread: one FAISS search per partition for the whole batch."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault((item.tenant, item.fingerprint), []).append(i)
        results: list[Hit | None] = [None] * len(batch)
        for (tenant, fingerprint), members in groups.items():
            vectors = np.vstack([batch[i].vector for i in members])
            floor = min(batch[i].threshold for i in members)
            ages = [batch[i].max_age_s for i in members]
            max_age = None if any(a is None for a in ages) else max(a for a in ages if a)
            found = self._index.search(tenant, fingerprint, vectors, floor, max_age)
            for i, candidates in zip(members, found, strict=True):
                results[i] = self._decide(batch[i], candidates)
        return results

    def _decide(self, item: _Lookup, candidates: list[Candidate]) -> Hit | None:
        self.counters["lookups"] += 1
        now = self._clock()
        for candidate in candidates:
            entry = candidate.entry
            if candidate.score < item.threshold:
                continue
            if item.max_age_s is not None and now - entry.created > item.max_age_s:
                continue
            stored = self._index.vector(item.tenant, item.fingerprint, entry.entry_id)
            verdict = self._guard(item.text, entry.text, item.vector, stored)
            if not verdict.ok:
                self.counters[f"guard_veto_{verdict.reason}"] += 1
                continue
            self._index.touch(entry.entry_id)
            self.counters["hits"] += 1
            return Hit(
                id_hex(entry.entry_id), candidate.score, entry.text, entry.payload, entry.created
            )
        return None

    # ---- Redis: sync, follow, degrade ----------------------------------------------------

    def _degrade(self, exc: BaseException) -> None:
        reason = f"redis: {type(exc).__name__}: {exc}"[:300]
        if self._degraded_reason is None:
            log.warning("semantic cache degraded (%s); serving from the local index", reason)
        self._degraded_reason = reason
        self._resync_needed = True

    async def _resync(self) -> None:
        """Make the local index equal to Redis's newest ``max_entries`` entries."""
        assert self._store is not None
        cursor = await self._store.last_log_id()
        remote = await self._store.members(self.config.max_entries)
        local = await self._run(self._index.ids)
        gone = local - remote.keys()
        if gone:
            await self._run(self._index.remove, gone)
        await self._load([i for i in remote if i not in local], remote)
        self._cursor = cursor
        self._resync_needed = False
        self.last_sync = self._clock()
        if self._degraded_reason is not None:
            log.warning("semantic cache recovered: Redis answers again")
        self._degraded_reason = None

    async def _load(self, entry_ids: list[int], tenants: dict[int, str] | None = None) -> None:
        """Fetch, validate and index entries; undecodable ones are deleted from Redis."""
        assert self._store is not None
        if not entry_ids:
            return
        blobs = await self._store.fetch(entry_ids)
        good: list[tuple[StoredEntry, npt.NDArray[np.float32]]] = []
        bad: list[tuple[int, str | None]] = []
        for entry_id, blob in blobs.items():
            tenant = tenants.get(entry_id) if tenants else None
            if blob is None:
                bad.append((entry_id, tenant))  # expired key: drop its index member
                continue
            try:
                record, vector = codec.decode(blob, self.config.dim)
            except codec.CorruptEntry as exc:
                log.warning("deleting corrupt semantic-cache entry %s: %s", id_hex(entry_id), exc)
                self.counters["corrupt_deleted"] += 1
                bad.append((entry_id, tenant))
                continue
            if tenant is not None and record.tenant != tenant:
                self.counters["corrupt_deleted"] += 1
                bad.append((entry_id, tenant))
                continue
            entry = StoredEntry(
                entry_id,
                record.tenant,
                record.fingerprint,
                record.text,
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

    async def _follow(self) -> None:
        assert self._store is not None
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

    async def _sweep(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._sweep_interval_s)
            await self._run(self._index.expire)
