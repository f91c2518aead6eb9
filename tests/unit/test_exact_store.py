"""The exact cache's in-process store: bounded by entries and by bytes, least recently used
first."""

from __future__ import annotations

from gateway.exact_store import MemoryStore, tenant_part


async def test_a_byte_budget_evicts_the_least_recently_used() -> None:
    store = MemoryStore(max_entries=1000, ttl_s=60, max_bytes=5 * 10_256 + 100)
    for i in range(5):
        await store.set(f"k{i}", bytes(10_000), 60)
    assert await store.get("k0") is not None  # k0 is now the most recently used
    for i in range(5, 20):
        await store.set(f"k{i}", bytes(10_000), 60)
        assert store.size_bytes <= 5 * 10_256 + 100
    assert len(store) == 5
    assert await store.get("k1") is None
    assert all([await store.get(f"k{i}") is not None for i in range(15, 20)])


async def test_the_entry_bound_still_holds_for_small_answers() -> None:
    store = MemoryStore(max_entries=3, ttl_s=60)
    for i in range(10):
        await store.set(f"k{i}", b"x", 60)
    assert len(store) == 3
    assert [await store.get(f"k{i}") for i in (6, 7, 8, 9)] == [None, b"x", b"x", b"x"]


async def test_an_answer_over_the_whole_budget_is_not_stored() -> None:
    store = MemoryStore(max_entries=10, ttl_s=60, max_bytes=4096)
    await store.set("small", b"ok", 60)
    await store.set("huge", bytes(8192), 60)
    assert await store.get("huge") is None and store.too_large == 1
    assert await store.get("small") == b"ok"


async def test_flush_gives_the_bytes_back() -> None:
    store = MemoryStore(max_entries=10, ttl_s=60)
    await store.set(f"{tenant_part('a')}:1", bytes(1000), 60)
    await store.set(f"{tenant_part('b')}:1", bytes(1000), 60)
    assert await store.flush("a") == 1
    assert len(store) == 1 and 1000 < store.size_bytes < 2000
    await store.flush(None)
    assert store.size_bytes == 0
