"""The local index: partitions, LRU eviction, TTL, and the flat -> HNSW switch."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.semantic.index import (
    ENTRY_OVERHEAD,
    IndexConfig,
    LocalIndex,
    StoredEntry,
    entry_bytes,
)

DIM = 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def unit_rows(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def entry(i: int, tenant: str = "t", fp: str = "f", created: float = 1_000.0) -> StoredEntry:
    return StoredEntry(i + 1, tenant, fp, f"text {i}", f"payload {i}".encode(), created)


def make(clock: Clock | None = None, **config: float) -> LocalIndex:
    return LocalIndex(IndexConfig(dim=DIM, **config), clock or Clock())  # type: ignore[arg-type]


def best(
    index: LocalIndex,
    vector: npt.NDArray[np.float32],
    tenant: str = "t",
    fp: str = "f",
    threshold: float = 0.99,
) -> int | None:
    found = index.search(tenant, fp, vector[None, :], threshold)[0]
    return found[0].entry.entry_id if found else None


def test_exact_vector_is_found_and_threshold_applies() -> None:
    rows = unit_rows(10)
    index = make()
    assert index.add((entry(i), rows[i]) for i in range(10)) == 10
    for i in range(10):
        assert best(index, rows[i]) == i + 1
    assert best(index, unit_rows(1, seed=9)[0], threshold=0.9) is None


def test_partitions_never_mix_tenants_or_fingerprints() -> None:
    row = unit_rows(1)[0]
    index = make()
    index.add([(entry(0, tenant="a"), row)])
    assert best(index, row, tenant="a") == 1
    assert best(index, row, tenant="b") is None
    assert best(index, row, tenant="a", fp="other") is None


def test_least_recently_used_entry_is_evicted_first() -> None:
    rows = unit_rows(4)
    index = make(max_entries=3)
    index.add((entry(i), rows[i]) for i in range(3))
    index.touch(1)  # entry 0 is now the most recently used
    index.add([(entry(3), rows[3])])
    assert len(index) == 3 and index.evicted == 1
    assert best(index, rows[0]) == 1
    assert best(index, rows[1]) is None  # the least recently used went
    assert best(index, rows[3]) == 4


def test_ttl_hides_then_expires_entries() -> None:
    clock = Clock()
    rows = unit_rows(2)
    index = make(clock, ttl_s=10)
    index.add([(entry(0, created=clock.now), rows[0])])
    clock.now += 5
    index.add([(entry(1, created=clock.now), rows[1])])
    assert index.search("t", "f", rows[:1], 0.99, max_age_s=3)[0] == []  # max-age from the client
    clock.now += 6  # entry 0 is 11 s old, entry 1 is 6 s old
    assert best(index, rows[0]) is None
    assert best(index, rows[1]) == 2
    assert index.expire() == 1 and len(index) == 1
    # An entry that arrives already expired (rebuild of old data) is not indexed.
    assert index.add([(entry(5, created=clock.now - 60), rows[0])]) == 0


def test_switch_to_hnsw_keeps_results_and_removal_still_works() -> None:
    n = 300
    rows = unit_rows(n)
    index = make(approximate_after=100)
    index.add((entry(i), rows[i]) for i in range(50))
    assert index.approximate_partitions() == 0
    before = [best(index, rows[i]) for i in range(50)]
    index.add((entry(i), rows[i]) for i in range(50, n))
    assert index.approximate_partitions() == 1
    assert [best(index, rows[i]) for i in range(50)] == before
    assert all(best(index, rows[i]) == i + 1 for i in range(n))
    # Removal on HNSW leaves tombstones that searches skip, then a rebuild drops them.
    assert index.remove(range(1, 41)) == 40
    assert all(best(index, rows[i]) is None for i in range(40))
    assert all(best(index, rows[i]) == i + 1 for i in range(40, n))
    assert index.remove(range(41, 121)) == 80  # past a quarter tombstones: rebuilt
    assert all(best(index, rows[i]) == i + 1 for i in range(120, n))


def test_remove_tenant() -> None:
    rows = unit_rows(3)
    index = make()
    index.add(
        [
            (entry(0, tenant="a"), rows[0]),
            (entry(1, tenant="b"), rows[1]),
            (entry(2, tenant="a", fp="g"), rows[2]),
        ]
    )
    assert index.remove_tenant("a") == 2
    assert len(index) == 1 and index.partition_count() == 1
    assert index.remove_tenant(None) == 1 and len(index) == 0


def big_entry(i: int, payload_bytes: int, text: str | None = None) -> StoredEntry:
    return StoredEntry(i + 1, "t", "f", text or f"text {i}", bytes(payload_bytes), 1_000.0)


def test_a_byte_budget_evicts_the_least_recently_used() -> None:
    rows = unit_rows(20)
    one = entry_bytes(big_entry(0, 10_000)) + ENTRY_OVERHEAD + 4 * DIM
    index = make(max_bytes=5 * one + one // 2, max_entry_bytes=64 * 1024)
    index.add([(big_entry(i, 10_000), rows[i]) for i in range(5)])
    index.touch(1)  # entry 0 is now the most recently used
    index.add([(big_entry(i, 10_000), rows[i]) for i in range(5, 8)])
    assert len(index) == 5 and index.evicted == 3
    assert best(index, rows[0]) == 1  # touched: kept
    assert [best(index, rows[i]) for i in (1, 2, 3)] == [None, None, None]  # oldest first
    for i in range(8, 20):
        index.add([(big_entry(i, 10_000), rows[i])])
        assert len(index) == 5
        assert 5 * one <= index.size_bytes <= index.config.max_bytes  # texts of 6 or 7 chars
    assert [best(index, rows[i]) for i in range(15, 20)] == [16, 17, 18, 19, 20]
    assert index.evicted == 15


def test_an_entry_over_max_entry_bytes_is_not_indexed() -> None:
    rows = unit_rows(3)
    index = make(max_entry_bytes=4096)
    assert index.add([(big_entry(0, 5000), rows[0]), (big_entry(1, 100), rows[1])]) == 1
    assert len(index) == 1 and index.too_large == 1
    assert best(index, rows[0]) is None and best(index, rows[1]) == 2
    assert not index.fits(big_entry(2, 5000)) and index.fits(big_entry(2, 100))
    assert not index.fits(big_entry(2, 100, text="€" * 2000))  # 2 bytes a character in memory


def test_bytes_are_given_back_on_every_way_out() -> None:
    clock = Clock()
    rows = unit_rows(6)
    index = make(clock, ttl_s=10)
    index.add([(big_entry(i, 1000), rows[i]) for i in range(2)])
    index.add(
        [(StoredEntry(10 + i, "u", "f", "x", b"y" * 500, clock.now), rows[2 + i]) for i in range(2)]
    )
    assert index.size_bytes > 0
    index.remove([1])
    index.remove_tenant("u")
    assert len(index) == 1
    clock.now += 20
    index.expire()
    assert len(index) == 0 and index.size_bytes == 0
    index.add([(big_entry(5, 10, text="z"), rows[5])])
    index.remove_tenant(None)
    assert index.size_bytes == 0
