"""The semantic cache: the async facade the pipeline calls.

A lookup is served from this process's :class:`~gateway.semantic.index.LocalIndex` only (no
network round trip): the nearest entries of the same tenant and context fingerprint that score
at least the threshold are offered, best first, to the meaning guard (its rules, then its learned
verifier on the two texts and their vectors), and the first it accepts is the hit. All index
work runs in one worker thread; concurrent lookups that arrive while it is busy are taken
together as one batch (one FAISS search per partition), so the event loop only ever waits on a
future. A shared index (:mod:`~gateway.semantic.pgvector`) is searched over the network
instead, from as many worker threads as it has connections (``VectorIndex.threads``): the
lookups waiting are split between them, so one slow statement does not hold up the rest.

With Redis (``redis_url``) the entries are shared with the other processes, and the cache is
*degraded* while Redis is unreachable or slow (lookups keep working, stores are skipped); how
the local index is kept in step is :mod:`~gateway.semantic.mirror`. Without Redis it is
in-process only.

Eviction is per process (least recently used past ``max_entries`` or ``max_bytes``); Redis
keeps the newest ``max_entries`` and nothing older than the TTL. An entry keeps only the
opening of its question that the meaning guard reads (``guard.MAX_CHARS`` characters), and one
over ``max_entry_bytes`` (its answer, mostly) is not stored at all (``stores_too_large``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from gateway.ml import guard
from gateway.semantic.index import Candidate, IndexConfig, LocalIndex, StoredEntry, VectorIndex
from gateway.semantic.mirror import RedisMirror
from gateway.semantic.pgvector import PgvectorIndex
from gateway.semantic.store import RedisStore, id_hex

__all__ = ["Hit", "SemanticCache"]

log = logging.getLogger(__name__)

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
    """The opening (``guard.MAX_CHARS`` characters) of the cache text of the request that
    stored the entry."""
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
    check: GuardCheck
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
        index: VectorIndex | None = None,
    ) -> None:
        """``index``: a shared index (then ``store`` must be None: the index is the sharing);
        default: this process's :class:`LocalIndex`, mirrored in Redis when ``store`` is given."""
        if index is not None and store is not None:
            raise ValueError("a shared index is not mirrored in Redis")
        self.config = config
        self._guard = guard_check
        self._clock = clock
        self._index: VectorIndex = LocalIndex(config, clock) if index is None else index
        self._executor = ThreadPoolExecutor(
            max_workers=self._index.threads,
            thread_name_prefix="semantic-cache",
            initializer=_single_threaded_faiss,
        )
        self._pending: list[_Lookup] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sweep_interval_s = sweep_interval_s
        self._closed = False
        self.counters: Counter[str] = Counter()
        self._counting = threading.Lock()
        """Worker threads count under it (a shared index has several)."""
        self._mirror = (
            RedisMirror(store, self._index, self._run, self.counters, clock)
            if store is not None and isinstance(self._index, LocalIndex)
            else None
        )

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
        max_bytes: int = 512 * 1024 * 1024,
        max_entry_bytes: int = 64 * 1024,
        redis_timeout_s: float = 0.5,
        follow_block_ms: int = 1000,
        sweep_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        guard_check: GuardCheck | None = None,
        pgvector_url: str | None = None,
    ) -> SemanticCache:
        """Open a cache; with ``redis_url`` its entries are rebuilt from Redis first (when Redis
        is unreachable it starts empty and degraded, and catches up once Redis answers).

        ``pgvector_url``: the entries are in that PostgreSQL's shared table instead
        (:mod:`~gateway.semantic.pgvector`; ``redis_url`` must be None): nothing to rebuild,
        and a database that cannot be used raises
        :class:`~gateway.semantic.pgvector.IndexUnavailable` here.

        ``guard_check``: the meaning guard (default: the rules and the committed learned
        verifier, loaded here in a thread so that the first lookup does not pay for it)."""
        if guard_check is None:
            guard_check = (await asyncio.to_thread(guard.default_guard)).check
        config = IndexConfig(
            dim=dim,
            max_entries=max_entries,
            ttl_s=ttl_s,
            approximate_after=approximate_after,
            max_bytes=max_bytes,
            max_entry_bytes=max_entry_bytes,
        )
        store = (
            RedisStore(redis_url, namespace, timeout_s=redis_timeout_s, block_ms=follow_block_ms)
            if redis_url
            else None
        )
        index = None if pgvector_url is None else PgvectorIndex(config, pgvector_url, clock)
        cache = cls(
            config,
            store,
            guard_check=guard_check,
            clock=clock,
            sweep_interval_s=sweep_interval_s,
            index=index,
        )
        if index is not None:
            try:
                await cache._run(index.connect)
            except BaseException:
                await cache.aclose()
                raise
        if cache._mirror is not None:
            await cache._mirror.start()
            cache._tasks.append(asyncio.create_task(cache._mirror.follow(), name="semantic-follow"))
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
        check: GuardCheck | None = None,
    ) -> Hit | None:
        """The best entry of this tenant and fingerprint scoring ≥ ``threshold`` that the meaning
        guard (``check``, default: the cache's) accepts for ``text``, no older than
        ``max_age_s``; None on a miss."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Hit | None] = loop.create_future()
        row = self._vector(vector)
        self._pending.append(
            _Lookup(
                tenant, fingerprint, row, text, threshold, max_age_s, check or self._guard, future
            )
        )
        self._drainers = {d for d in self._drainers if not d.done()}
        if len(self._drainers) < self._index.threads:
            self._drainers.add(asyncio.create_task(self._drain()))
        return await future

    async def store(
        self, tenant: str, fingerprint: str, vector: npt.ArrayLike, text: str, payload: bytes
    ) -> str | None:
        """Cache ``payload`` (opaque bytes) as the answer to ``text`` in this tenant and context;
        returns the entry id, or None when the write was skipped (too large, or Redis or the
        shared index degraded). Only the opening of ``text`` that the guard reads is kept."""
        row = self._vector(vector)
        entry = StoredEntry(
            secrets.randbits(63),
            tenant,
            fingerprint,
            text[: guard.MAX_CHARS],
            bytes(payload),
            self._clock(),
        )
        if not self._index.fits(entry):
            self.counters["stores_too_large"] += 1
            return None
        if self._mirror is not None and not await self._mirror.put(entry, row):
            self.counters["stores_skipped"] += 1
            return None
        if not await self._run(self._index.add, [(entry, row)]):  # a shared index is away
            self.counters["stores_skipped"] += 1
            return None
        self.counters["stores"] += 1
        return id_hex(entry.entry_id)

    async def flush(self, tenant: str | None = None) -> int:
        """Delete the entries of ``tenant`` (every tenant when None), here and in Redis; returns
        how many were deleted (Redis's count when Redis is used)."""
        local = int(await self._run(self._index.remove_tenant, tenant))
        return local if self._mirror is None else await self._mirror.flush(tenant)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def degraded(self) -> bool:
        """Redis is unreachable or slow (lookups use the local index), or the shared index's
        database is (lookups miss); stores are skipped either way."""
        return self._degraded_reason() is not None

    def _degraded_reason(self) -> str | None:
        if self._mirror is not None:
            return self._mirror.degraded_reason
        return self._index.degraded_reason

    @property
    def last_sync(self) -> float | None:
        """Unix time of the last successful resync with Redis; None without one."""
        return None if self._mirror is None else self._mirror.last_sync

    async def discard(self, entry_id: str, tenant: str) -> None:
        """Delete one entry (here and in Redis): its payload turned out unusable. Other
        processes keep their copy until it expires; each of them discards it on its own hit."""
        number = int(entry_id, 16)
        await self._run(self._index.remove, [number])
        if self._mirror is not None:
            await self._mirror.delete(number, tenant)

    def health(self) -> dict[str, Any]:
        """State for /readyz and metrics: ``status`` is "ok" or "degraded"."""
        reason = self._degraded_reason()
        return {
            "status": "degraded" if reason else "ok",
            "backend": "redis" if self._mirror is not None else self._index.kind,
            "detail": reason,
            **self._index.stats(),
            "last_sync": self.last_sync,
            **dict(self.counters),
        }

    async def aclose(self) -> None:
        """Stop the background tasks, the worker thread and the Redis clients this cache
        opened."""
        if self._closed:
            return
        self._closed = True
        if self._mirror is not None:
            self._mirror.stop()
        for task in [*self._tasks, *self._drainers]:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_result(None)
        await self._run(self._index.close)
        self._executor.shutdown(wait=True)
        if self._mirror is not None:
            await self._mirror.aclose()

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
        """Take the waiting lookups (a share of them when the index has several threads, so
        that the others' drainers take the rest) until none wait."""
        while self._pending:
            share = -(-len(self._pending) // self._index.threads)  # ceil
            batch, self._pending = self._pending[:share], self._pending[share:]
            try:
                results = await self._run(self._lookup_batch, batch)
            except Exception:  # a failed lookup is a miss, never an error
                log.exception("semantic lookup failed")
                results = [None] * len(batch)
                self._count("lookup_errors")
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _lookup_batch(self, batch: list[_Lookup]) -> list[Hit | None]:
        """In the worker thread: one FAISS search per partition for the whole batch.

        A lookup that fails is a miss for itself alone: a partition whose shared search fails
        is searched again one lookup at a time, and each lookup's decision is its own.
        """
        groups: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault((item.tenant, item.fingerprint), []).append(i)
        results: list[Hit | None] = [None] * len(batch)
        for members in groups.values():
            items = [batch[i] for i in members]
            try:
                found = self._search(items)
            except Exception:
                if len(items) == 1:
                    self._failed(items[0])
                    continue
                found = [self._search_alone(item) for item in items]
            for i, item, candidates in zip(members, items, found, strict=True):
                try:
                    results[i] = self._decide(item, candidates)
                except Exception:
                    self._failed(item)
        return results

    def _search(self, items: list[_Lookup]) -> list[list[Candidate]]:
        """The candidates of lookups of one tenant and fingerprint, in one search: down to the
        lowest threshold and up to the oldest age any of them accepts (each is filtered to its
        own in `_decide`)."""
        ages = [item.max_age_s for item in items]
        max_age = None if any(a is None for a in ages) else max(a for a in ages if a is not None)
        return self._index.search(
            items[0].tenant,
            items[0].fingerprint,
            np.vstack([item.vector for item in items]),
            min(item.threshold for item in items),
            max_age,
        )

    def _search_alone(self, item: _Lookup) -> list[Candidate]:
        try:
            return self._search([item])[0]
        except Exception:
            self._failed(item)
            return []

    def _failed(self, item: _Lookup) -> None:
        """A lookup that raised is a miss, never an error (logged, counted)."""
        log.exception("semantic lookup failed (tenant %s)", item.tenant)
        self._count("lookup_errors")

    def _count(self, name: str) -> None:
        with self._counting:
            self.counters[name] += 1

    def _decide(self, item: _Lookup, candidates: list[Candidate]) -> Hit | None:
        self._count("lookups")
        now = self._clock()
        for candidate in candidates:
            entry = candidate.entry
            if candidate.score < item.threshold:
                continue
            if item.max_age_s is not None and now - entry.created > item.max_age_s:
                continue
            verdict = item.check(item.text, entry.text, item.vector, candidate.vector)
            if not verdict.ok:
                self._count(f"guard_veto_{verdict.reason}")
                continue
            self._index.touch(entry.entry_id)
            self._count("hits")
            return Hit(
                id_hex(entry.entry_id), candidate.score, entry.text, entry.payload, entry.created
            )
        return None

    async def _sweep(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._sweep_interval_s)
            await self._run(self._index.expire)
