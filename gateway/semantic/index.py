"""The local vector index: FAISS inner-product search per (tenant, fingerprint) partition, bounded
by a global least-recently-used limit on entries and on bytes, and a TTL.

Everything here is synchronous and not thread-safe: :class:`LocalIndex` is owned by the single
worker thread of :class:`gateway.semantic.cache.SemanticCache`, which serialises all calls, so
no locks are needed and FAISS (which releases the GIL) never runs on the event loop.

NOTE on the index kinds. A partition starts as ``IndexIDMap2(IndexFlatIP)``: exact, supports
removal, and for a few thousand rows a brute-force scan takes microseconds. Past
``approximate_after`` rows it is rebuilt as ``IndexIDMap2(IndexHNSWFlat)`` (inner product): HNSW
cannot remove rows, so evicted or expired rows become tombstones that searches skip, and the
partition is rebuilt without them once they exceed a quarter of its rows. Scores are exact
inner products of the stored float32 rows either way (HNSWFlat keeps the full vectors); only the
candidate set is approximate, and a near-duplicate above a 0.8 threshold is the easiest case for
HNSW to find.

NOTE on bytes. Each entry is charged what it holds in this process: its strings and payload as
CPython objects (``sys.getsizeof``, so a non-ASCII text counts its 2 or 4 bytes per character),
its float32 vector, and a fixed overhead for the bookkeeping around it (the entry object, the
LRU and age records, FAISS's id maps; an HNSW graph's links are about 150 bytes more). An entry
over ``max_entry_bytes`` is refused; past ``max_bytes`` in all, the least recently used go, as
past ``max_entries``.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import faiss
import numpy as np
import numpy.typing as npt

__all__ = [
    "Candidate",
    "IndexConfig",
    "LocalIndex",
    "StoredEntry",
    "VectorIndex",
    "entry_bytes",
]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class IndexConfig:
    """Sizes of the local index."""

    dim: int = 384
    """Vector dimension (all-MiniLM-L6-v2: 384)."""
    max_entries: int = 100_000
    """Entries kept in this process across all tenants; the least recently used go first."""
    max_bytes: int = 512 * 1024 * 1024
    """Bytes those entries may hold in all (see the module docstring); the least recently used
    go first."""
    max_entry_bytes: int = 64 * 1024
    """An entry that would hold more (mostly its payload) is not indexed."""
    ttl_s: float = 86_400.0
    """Age after which an entry is never served and is dropped."""
    approximate_after: int = 20_000
    """A partition with more rows than this switches from a flat scan to HNSW."""
    hnsw_m: int = 16
    """HNSW graph degree."""
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64
    candidates: int = 8
    """Nearest rows examined per lookup (the guard may veto the best one)."""


@dataclass(slots=True)
class StoredEntry:
    """One cached answer as this process holds it."""

    entry_id: int
    tenant: str
    fingerprint: str
    text: str
    payload: bytes
    created: float
    """Unix time of the store, as written by the storing process."""


ENTRY_OVERHEAD = 512
"""Bytes charged to every entry besides its strings, payload and vector (see the module
docstring)."""


def entry_bytes(entry: StoredEntry) -> int:
    """What an entry's own objects hold (text, payload, tenant, fingerprint), in bytes."""
    return (
        sys.getsizeof(entry.text)
        + sys.getsizeof(entry.payload)
        + sys.getsizeof(entry.tenant)
        + sys.getsizeof(entry.fingerprint)
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    """A row that scored at least the threshold, best first."""

    entry: StoredEntry
    score: float
    vector: Vector
    """The entry's stored (unit) vector, which the meaning guard compares too."""


class VectorIndex(Protocol):
    """What :class:`~gateway.semantic.cache.SemanticCache` needs of an index: this process's
    :class:`LocalIndex`, or the shared :class:`~gateway.semantic.pgvector.PgvectorIndex`. Every
    call comes from the cache's one worker thread, never from the event loop."""

    config: IndexConfig
    kind: str
    """What /readyz calls the index: "memory" or "pgvector"."""
    threads: int
    """How many worker threads may call it at once (1: it is not thread-safe)."""

    @property
    def degraded_reason(self) -> str | None:
        """Why the index cannot be used now (its server is away); None while it can."""

    def __len__(self) -> int: ...

    def search(
        self,
        tenant: str,
        fingerprint: str,
        vectors: Vector,
        threshold: float,
        max_age_s: float | None = None,
    ) -> list[list[Candidate]]: ...

    def fits(self, entry: StoredEntry) -> bool: ...

    def touch(self, entry_id: int) -> None: ...

    def add(self, entries: Iterable[tuple[StoredEntry, Vector]]) -> int: ...

    def remove(self, entry_ids: Iterable[int]) -> int: ...

    def remove_tenant(self, tenant: str | None) -> int: ...

    def expire(self) -> int: ...

    def stats(self) -> dict[str, Any]:
        """Sizes and counters for /readyz and metrics."""

    def close(self) -> None: ...


@dataclass(slots=True)
class _Partition:
    index: Any  # faiss.IndexIDMap2 over IndexFlatIP or IndexHNSWFlat
    approximate: bool = False
    live: set[int] = field(default_factory=set)
    tombstones: int = 0

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)


class LocalIndex:
    """Entries of all tenants, searched per partition. See the module docstring."""

    kind = "memory"
    threads = 1

    def __init__(self, config: IndexConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._entries: OrderedDict[int, StoredEntry] = OrderedDict()  # LRU order, oldest first
        self._partitions: dict[tuple[str, str], _Partition] = {}
        self._by_age: deque[tuple[float, int]] = deque()  # (created, id), roughly in order
        self._sizes: dict[int, int] = {}  # id -> bytes charged
        self.size_bytes = 0
        """Bytes charged to the entries held now (see the module docstring)."""
        self.evicted = 0
        self.expired = 0
        self.too_large = 0
        """Entries refused for holding more than ``max_entry_bytes``."""

    # ---- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self._entries

    def ids(self) -> set[int]:
        return set(self._entries)

    def partition_count(self) -> int:
        return len(self._partitions)

    def approximate_partitions(self) -> int:
        return sum(p.approximate for p in self._partitions.values())

    @property
    def degraded_reason(self) -> str | None:
        """Always None: an outage of Redis degrades the mirror, never this index."""
        return None

    def close(self) -> None:
        """Nothing to release: the entries are this object's memory."""

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._entries),
            "bytes": self.size_bytes,
            "partitions": self.partition_count(),
            "approximate_partitions": self.approximate_partitions(),
            "evicted": self.evicted,
            "expired": self.expired,
            "too_large": self.too_large,
        }

    def search(
        self,
        tenant: str,
        fingerprint: str,
        vectors: Vector,
        threshold: float,
        max_age_s: float | None = None,
    ) -> list[list[Candidate]]:
        """For each row of ``vectors`` (one partition, one batch), the live, unexpired entries
        scoring at least ``threshold``, best first. Touches nothing: call :meth:`touch` on the
        entry that is served."""
        part = self._partitions.get((tenant, fingerprint))
        if part is None or not part.live:
            return [[] for _ in range(len(vectors))]
        k = min(part.rows, self.config.candidates + part.tombstones, 64)
        scores, ids = part.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        now = self._clock()
        ttl = self.config.ttl_s if max_age_s is None else min(self.config.ttl_s, max_age_s)
        out: list[list[Candidate]] = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            found: list[Candidate] = []
            for score, entry_id in zip(row_scores, row_ids, strict=True):
                if entry_id < 0 or score < threshold:
                    continue
                entry = self._entries.get(int(entry_id))
                # Defence in depth: partitions are keyed by tenant and fingerprint already.
                if entry is None or entry.tenant != tenant or entry.fingerprint != fingerprint:
                    continue
                if now - entry.created > ttl:
                    continue
                stored = np.asarray(part.index.reconstruct(int(entry_id)), dtype=np.float32)
                found.append(Candidate(entry, float(score), stored))
            out.append(found)
        return out

    def fits(self, entry: StoredEntry) -> bool:
        """Whether an entry is small enough to be indexed (``max_entry_bytes``)."""
        return entry_bytes(entry) <= self.config.max_entry_bytes

    def touch(self, entry_id: int) -> None:
        """Mark an entry as just used (LRU)."""
        if entry_id in self._entries:
            self._entries.move_to_end(entry_id)

    # ---- writing -------------------------------------------------------------------------

    def add(self, entries: Iterable[tuple[StoredEntry, Vector]]) -> int:
        """Insert entries (already-known ids, expired entries and entries over
        ``max_entry_bytes`` are skipped); returns how many were added. Evicts the least recently
        used past ``max_entries`` or ``max_bytes``."""
        now = self._clock()
        groups: dict[tuple[str, str], tuple[list[int], list[Vector]]] = {}
        for entry, vector in entries:
            if entry.entry_id in self._entries or now - entry.created > self.config.ttl_s:
                continue
            size = entry_bytes(entry)
            if size > self.config.max_entry_bytes:
                self.too_large += 1
                continue
            charged = size + ENTRY_OVERHEAD + 4 * self.config.dim
            self._entries[entry.entry_id] = entry
            self._sizes[entry.entry_id] = charged
            self.size_bytes += charged
            self._by_age.append((entry.created, entry.entry_id))
            ids, vecs = groups.setdefault((entry.tenant, entry.fingerprint), ([], []))
            ids.append(entry.entry_id)
            vecs.append(vector)
        added = 0
        for key, (ids, vecs) in groups.items():
            part = self._partitions.get(key)
            if part is None:
                part = self._partitions[key] = _Partition(self._flat())
            matrix = np.ascontiguousarray(np.vstack(vecs), dtype=np.float32)
            part.index.add_with_ids(matrix, np.asarray(ids, dtype=np.int64))
            part.live.update(ids)
            added += len(ids)
            if not part.approximate and part.rows > self.config.approximate_after:
                self._rebuild(part, approximate=True)
        while self._entries and (
            len(self._entries) > self.config.max_entries or self.size_bytes > self.config.max_bytes
        ):
            oldest = next(iter(self._entries))
            self.remove([oldest])
            self.evicted += 1
        return added

    def remove(self, entry_ids: Iterable[int]) -> int:
        """Drop entries; returns how many were present."""
        removed = 0
        touched: set[tuple[str, str]] = set()
        flat_ids: dict[tuple[str, str], list[int]] = {}
        for entry_id in entry_ids:
            entry = self._entries.pop(entry_id, None)
            if entry is None:
                continue
            self.size_bytes -= self._sizes.pop(entry_id)
            removed += 1
            key = (entry.tenant, entry.fingerprint)
            part = self._partitions.get(key)
            if part is None:
                continue
            part.live.discard(entry_id)
            touched.add(key)
            if part.approximate:
                part.tombstones += 1
            else:
                flat_ids.setdefault(key, []).append(entry_id)
        for key, ids in flat_ids.items():
            self._partitions[key].index.remove_ids(np.asarray(ids, dtype=np.int64))
        for key in touched:
            part = self._partitions[key]
            if not part.live:
                del self._partitions[key]
            elif part.approximate and part.tombstones * 4 > part.rows:
                self._rebuild(part, approximate=len(part.live) > self.config.approximate_after)
        return removed

    def remove_tenant(self, tenant: str | None) -> int:
        """Drop every entry of ``tenant`` (all tenants when None)."""
        if tenant is None:
            count = len(self._entries)
            self._entries.clear()
            self._partitions.clear()
            self._by_age.clear()
            self._sizes.clear()
            self.size_bytes = 0
            return count
        return self.remove([i for i, e in self._entries.items() if e.tenant == tenant])

    def expire(self) -> int:
        """Drop entries older than the TTL; cheap when nothing expired (oldest first)."""
        cutoff = self._clock() - self.config.ttl_s
        doomed = []
        while self._by_age and self._by_age[0][0] < cutoff:
            doomed.append(self._by_age.popleft()[1])
        count = self.remove(doomed)
        self.expired += count
        if len(self._by_age) > 2 * len(self._entries) + 1024:  # ids long gone (evicted)
            self._by_age = deque((c, i) for c, i in self._by_age if i in self._entries)
        return count

    # ---- internals -----------------------------------------------------------------------

    def _flat(self) -> Any:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.config.dim))

    def _hnsw(self) -> Any:
        inner = faiss.IndexHNSWFlat(self.config.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.config.hnsw_ef_construction
        inner.hnsw.efSearch = self.config.hnsw_ef_search
        return faiss.IndexIDMap2(inner)

    def _rebuild(self, part: _Partition, *, approximate: bool) -> None:
        all_ids = faiss.vector_to_array(part.index.id_map)
        rows = part.index.index.reconstruct_n(0, part.rows)
        keep = np.isin(all_ids, np.fromiter(part.live, dtype=np.int64, count=len(part.live)))
        ids, matrix = all_ids[keep], np.ascontiguousarray(rows[keep], dtype=np.float32)
        index = self._hnsw() if approximate else self._flat()
        index.add_with_ids(matrix, ids)
        part.index, part.approximate, part.tombstones = index, approximate, 0
