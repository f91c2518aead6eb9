"""SemanticCache against the real Redis: hits, tenants, persistence, sharing, faults."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.ml import guard
from gateway.semantic import SemanticCache
from tests.integration.semantic.conftest import REDIS_URL, TcpProxy, near, unit

Q = "How do I cook risotto?"


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    """Seconds until ``check`` holds; fails after ``within_s``."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > within_s:
            pytest.fail(f"not within {within_s} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[SemanticCache]:
    url = REDIS_URL if request.param == "redis" else None
    c = await SemanticCache.open(url, namespace=namespace)
    yield c
    await c.aclose()


async def test_hit_miss_guard_and_max_age(cache: SemanticCache) -> None:
    v = unit(1)
    entry_id = await cache.store("team-a", "fp", v, Q, b"answer")
    assert entry_id is not None
    hit = await cache.lookup("team-a", "fp", near(v, 2), "How do I make risotto?", 0.9)
    assert hit is not None and hit.payload == b"answer" and hit.entry_id == entry_id
    assert hit.text == Q and 0.95 < hit.score <= 1.0 and hit.created <= time.time()
    assert await cache.lookup("team-a", "fp", unit(3), Q, 0.9) is None  # far away
    assert await cache.lookup("team-a", "fp", v, Q, 1.01) is None  # threshold above the score
    assert await cache.lookup("team-a", "other-fp", v, Q, 0.5) is None  # other context
    # The embedding says "same", the guard says otherwise.
    assert (
        await cache.lookup("team-a", "fp", v, "How do I cook risotto in 10 minutes?", 0.9) is None
    )
    assert await cache.lookup("team-a", "fp", v, Q, 0.9, max_age_s=0.0) is None
    assert cache.health()["guard_veto_numbers"] == 1


async def test_tenants_are_isolated(cache: SemanticCache) -> None:
    v = unit(1)
    await cache.store("team-a", "fp", v, Q, b"a's answer")
    for threshold in (0.0, 0.5, 0.9):
        assert await cache.lookup("team-b", "fp", v, Q, threshold) is None
    await cache.store("team-b", "fp", v, Q, b"b's answer")
    hits = await asyncio.gather(
        *(cache.lookup(t, "fp", v, Q, 0.9) for t in ["team-a", "team-b"] * 20)
    )
    assert [h.payload if h else None for h in hits] == [b"a's answer", b"b's answer"] * 20
    assert await cache.flush("team-a") == 1
    assert await cache.lookup("team-a", "fp", v, Q, 0.9) is None
    assert await cache.lookup("team-b", "fp", v, Q, 0.9) is not None


async def test_concurrent_lookups_are_batched_and_right(cache: SemanticCache) -> None:
    vectors = [unit(i) for i in range(40)]
    for i, v in enumerate(vectors):
        await cache.store("t", f"fp{i % 3}", v, f"question {i}", str(i).encode())
    hits = await asyncio.gather(
        *(
            cache.lookup("t", f"fp{i % 3}", near(v, 100 + i), f"question {i}", 0.9)
            for i, v in enumerate(vectors)
        )
    )
    assert [h.payload.decode() if h else None for h in hits] == [str(i) for i in range(40)]


async def test_a_failing_lookup_spoils_no_other_lookup_of_its_batch(namespace: str) -> None:
    """``Cache-Control: max-age=0`` used to raise inside the batch (``max()`` of no ages), and
    every lookup of that batch missed, other tenants' included. Now each lookup that fails (in
    the shared search, or in its own decision) is a miss for itself alone."""
    c = await SemanticCache.open(None, namespace=namespace, guard_check=_guard_failing_on_poison)
    try:
        v = unit(1)
        for tenant in ("team-a", "team-b", "team-c"):
            await c.store(tenant, "fp", v, Q, tenant.encode())
        await asyncio.sleep(0.01)  # the entries are older than max-age=0
        # team-c's partition search fails when a poisoned lookup is among its members.
        search = c._index.search

        def failing_search(tenant, fingerprint, vectors, threshold, max_age_s=None):  # type: ignore[no-untyped-def]
            if tenant == "team-c" and threshold == 0.5:
                raise RuntimeError("injected search failure")
            return search(tenant, fingerprint, vectors, threshold, max_age_s)

        c._index.search = failing_search  # type: ignore[method-assign]
        lookups = [
            ("team-a", Q, 0.9, None),
            ("team-b", Q, 0.9, 0.0),  # max-age=0: a miss, and nothing else
            ("team-a", "poison " + Q, 0.9, None),  # the guard raises on this one
            ("team-c", Q, 0.9, None),
            ("team-c", Q, 0.5, None),  # makes the shared search of team-c fail
            ("team-a", Q, 0.9, 60.0),
        ] * 3
        hits = await asyncio.gather(
            *(c.lookup(t, "fp", v, text, th, max_age_s=age) for t, text, th, age in lookups)
        )
        assert [h.payload.decode() if h else None for h in hits] == [
            "team-a",
            None,
            None,
            "team-c",
            None,
            "team-a",
        ] * 3
        assert c.health()["lookup_errors"] == 6  # the poisoned decisions and lone searches
    finally:
        await c.aclose()


def _guard_failing_on_poison(a: str, b: str, u: Any, v: Any) -> guard.Verdict:
    if a.startswith("poison"):
        raise ValueError("injected guard failure")
    return guard.check(a, b, u, v)


async def test_lru_bound_and_ttl(namespace: str) -> None:
    c = await SemanticCache.open(
        REDIS_URL, namespace=namespace, max_entries=3, ttl_s=1.0, sweep_interval_s=0.2
    )
    try:
        vs = [unit(i) for i in range(4)]
        for i in range(3):
            await c.store("t", "fp", vs[i], f"q{i}", b"x")
        assert await c.lookup("t", "fp", vs[0], "q0", 0.9) is not None  # 0 is now recent
        await c.store("t", "fp", vs[3], "q3", b"x")
        assert await c.lookup("t", "fp", vs[1], "q1", 0.9) is None  # least recently used: gone
        assert await c.lookup("t", "fp", vs[0], "q0", 0.9) is not None
        assert c.health()["entries"] == 3
        await asyncio.sleep(1.3)
        assert await c.lookup("t", "fp", vs[3], "q3", 0.9) is None  # TTL
        await eventually(lambda: _zero(c), 2)
    finally:
        await c.aclose()


async def _zero(c: SemanticCache) -> bool:
    return c.health()["entries"] == 0


async def test_restart_rebuilds_the_index_from_redis(namespace: str) -> None:
    first = await SemanticCache.open(REDIS_URL, namespace=namespace, approximate_after=5)
    vs = [unit(i) for i in range(12)]
    for i, v in enumerate(vs):
        await first.store("team-a", "fp", v, f"question {i}", f"answer {i}".encode())
    await first.aclose()
    second = await SemanticCache.open(REDIS_URL, namespace=namespace, approximate_after=5)
    try:
        assert second.health()["entries"] == 12
        assert second.health()["approximate_partitions"] == 1
        for i, v in enumerate(vs):
            hit = await second.lookup("team-a", "fp", near(v, 50 + i), f"question {i}", 0.9)
            assert hit is not None and hit.payload == f"answer {i}".encode()
        assert await second.lookup("team-b", "fp", vs[0], "question 0", 0.0) is None
    finally:
        await second.aclose()


SECOND_PROCESS = textwrap.dedent("""
    import asyncio, sys
    import numpy as np
    from gateway.semantic import SemanticCache

    async def main() -> None:
        cache = await SemanticCache.open(sys.argv[1], namespace=sys.argv[2])
        row = np.random.default_rng(int(sys.argv[3])).standard_normal(384).astype(np.float32)
        print("ready", flush=True)
        sys.stdin.readline()
        await cache.store("team-a", "fp", row / np.linalg.norm(row), "from the other process",
                          b"their answer")
        print("stored", flush=True)
        await cache.aclose()

    asyncio.run(main())
""")


async def test_a_second_process_sees_new_entries_within_a_second(namespace: str) -> None:
    mine = await SemanticCache.open(REDIS_URL, namespace=namespace)
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SECOND_PROCESS, REDIS_URL, namespace, "77",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert other.stdout is not None and other.stdin is not None
    try:
        assert await asyncio.wait_for(other.stdout.readline(), 60) == b"ready\n"
        other.stdin.write(b"go\n")
        await other.stdin.drain()
        assert await asyncio.wait_for(other.stdout.readline(), 30) == b"stored\n"
        v = unit(77)

        async def visible() -> bool:
            hit = await mine.lookup("team-a", "fp", v, "from the other process", 0.95)
            return hit is not None and hit.payload == b"their answer"

        assert await eventually(visible, within_s=1.0) < 1.0
        assert await mine.lookup("team-b", "fp", v, "from the other process", 0.0) is None
    finally:
        other.stdin.close()
        await asyncio.wait_for(other.wait(), 30)
        await mine.aclose()
    assert other.returncode == 0


async def test_flush_reaches_other_processes(namespace: str) -> None:
    a = await SemanticCache.open(REDIS_URL, namespace=namespace)
    b = await SemanticCache.open(REDIS_URL, namespace=namespace)
    try:
        v = unit(5)
        await a.store("team-a", "fp", v, Q, b"x")
        await a.store("team-b", "fp", v, Q, b"y")
        await eventually(lambda: _has(b, "team-a", v), 1)
        assert await a.flush("team-a") == 1
        await eventually(lambda: _gone(b, "team-a", v), 1)
        assert await b.lookup("team-b", "fp", v, Q, 0.9) is not None
    finally:
        await a.aclose()
        await b.aclose()


async def _has(c: SemanticCache, tenant: str, v: object) -> bool:
    return await c.lookup(tenant, "fp", v, Q, 0.9) is not None  # type: ignore[arg-type]


async def _gone(c: SemanticCache, tenant: str, v: object) -> bool:
    return not await _has(c, tenant, v)


@pytest.mark.parametrize(
    "damage",
    [b"garbage", b"SEM1" + b"\x00" * 8 + b"\x93\x01\x02\x03", "flip-a-byte"],
)
async def test_corrupt_entry_is_a_miss_and_is_deleted(
    namespace: str, redis_client: aioredis.Redis, damage: bytes | str
) -> None:
    writer = await SemanticCache.open(REDIS_URL, namespace=namespace)
    v = unit(9)
    entry_id = await writer.store("team-a", "fp", v, Q, b"answer")
    await writer.aclose()
    key = f"{namespace}:sem:e:{entry_id}"
    blob = await redis_client.get(key)
    assert blob is not None
    if damage == "flip-a-byte":
        bad = bytearray(blob)
        bad[-3] ^= 0xFF  # inside the payload: the checksum catches it
        damage = bytes(bad)
    await redis_client.set(key, damage)
    reader = await SemanticCache.open(REDIS_URL, namespace=namespace)
    try:
        assert await reader.lookup("team-a", "fp", v, Q, 0.5) is None
        assert reader.health()["corrupt_deleted"] == 1
        assert await redis_client.exists(key) == 0
        assert await redis_client.zcard(f"{namespace}:sem:all") == 0
    finally:
        await reader.aclose()


async def test_redis_down_degrades_serves_locally_and_recovers(
    namespace: str, proxy: TcpProxy
) -> None:
    c = await SemanticCache.open(
        proxy.url, namespace=namespace, redis_timeout_s=0.3, follow_block_ms=200
    )
    direct = await SemanticCache.open(REDIS_URL, namespace=namespace)
    try:
        v, w = unit(1), unit(2)
        assert await c.store("team-a", "fp", v, Q, b"kept locally") is not None
        await proxy.stop()
        await eventually(lambda: _degraded(c), 3)
        assert "redis" in str(c.health()["detail"])
        started = time.perf_counter()
        hit = await c.lookup("team-a", "fp", v, Q, 0.9)  # served from the local index
        assert hit is not None and hit.payload == b"kept locally"
        assert time.perf_counter() - started < 0.05
        assert await c.store("team-a", "fp", w, "missed write", b"z") is None  # skipped
        assert c.health()["stores_skipped"] >= 1
        # Meanwhile another process writes: the degraded one catches up after recovery.
        await direct.store("team-a", "fp", w, "written while away", b"caught up")
        await proxy.start()
        await eventually(lambda: _ok(c), 5)
        await eventually(lambda: _payload(c, w, b"caught up"), 1)
        assert await c.store("team-a", "fp", unit(3), "after recovery", b"ok") is not None
    finally:
        await c.aclose()
        await direct.aclose()


async def test_slow_redis_degrades_without_slowing_lookups(namespace: str, proxy: TcpProxy) -> None:
    c = await SemanticCache.open(
        proxy.url, namespace=namespace, redis_timeout_s=0.3, follow_block_ms=200
    )
    try:
        v = unit(1)
        assert await c.store("team-a", "fp", v, Q, b"x") is not None
        proxy.delay_s = 1.0
        assert await c.store("team-a", "fp", unit(2), "slow", b"y") is None
        assert c.health()["status"] == "degraded"
        started = time.perf_counter()
        assert await c.lookup("team-a", "fp", v, Q, 0.9) is not None
        assert time.perf_counter() - started < 0.05
        proxy.delay_s = 0.0
        await eventually(lambda: _ok(c), 5)
    finally:
        await c.aclose()


async def test_unreachable_at_start_then_catches_up(namespace: str) -> None:
    proxy = TcpProxy()
    await proxy.start()
    url = proxy.url
    await proxy.stop()  # nothing listens on the port now
    writer = await SemanticCache.open(REDIS_URL, namespace=namespace)
    c = await SemanticCache.open(url, namespace=namespace, redis_timeout_s=0.2, follow_block_ms=200)
    try:
        assert c.health()["status"] == "degraded"
        v = unit(4)
        await writer.store("team-a", "fp", v, Q, b"early")
        await proxy.start()  # same port
        await eventually(lambda: _ok(c), 5)
        await eventually(lambda: _payload(c, v, b"early"), 1)
    finally:
        await c.aclose()
        await writer.aclose()
        await proxy.stop()


async def _degraded(c: SemanticCache) -> bool:
    return c.health()["status"] == "degraded"


async def _ok(c: SemanticCache) -> bool:
    return c.health()["status"] == "ok"


async def _payload(c: SemanticCache, v: object, payload: bytes) -> bool:
    hit = await c.lookup("team-a", "fp", v, "x", 0.9)  # type: ignore[arg-type]
    return hit is not None and hit.payload == payload


async def test_an_entry_keeps_only_what_the_guard_reads_and_a_huge_one_is_not_stored(
    cache: SemanticCache,
) -> None:
    v, w = unit(1), unit(2)
    document = "Summarise this contract, clause by clause, for a new employee. " * 70_000
    assert await cache.store("t", "fp", v, document, b"summary") is not None
    hit = await cache.lookup("t", "fp", v, document, 0.9)
    assert hit is not None and hit.text == document[: guard.MAX_CHARS]
    assert await cache.store("t", "fp", w, "Q", bytes(65 * 1024)) is None  # over 64 KiB
    assert await cache.lookup("t", "fp", w, "Q", 0.9) is None
    health = cache.health()
    assert health["stores_too_large"] == 1 and health["entries"] == 1
    assert health["bytes"] < 20_000


async def test_a_byte_budget_bounds_the_index_and_a_restart_keeps_the_newest(
    namespace: str,
) -> None:
    first = await SemanticCache.open(REDIS_URL, namespace=namespace)
    vs = [unit(i) for i in range(12)]
    for i, v in enumerate(vs):
        await first.store("t", "fp", v, f"question {i}", bytes(30_000))
    assert first.health()["entries"] == 12
    await first.aclose()
    # Room for about four 30 kB entries (each is charged its payload, text, vector, overhead).
    budget = 4 * 32_500
    second = await SemanticCache.open(
        REDIS_URL, namespace=namespace, max_bytes=budget, max_entry_bytes=40_000
    )
    try:
        health = second.health()
        assert health["entries"] == 4 and health["bytes"] <= budget
        for i, v in enumerate(vs):
            hit = await second.lookup("t", "fp", v, f"question {i}", 0.9)
            assert (hit is not None) == (i >= 8), i  # the newest four were kept
        await second.store("t", "fp", unit(99), "question 99", bytes(30_000))
        assert second.health()["entries"] == 4 and second.health()["bytes"] <= budget
        assert await second.lookup("t", "fp", vs[8], "question 8", 0.9) is None  # LRU went
    finally:
        await second.aclose()
