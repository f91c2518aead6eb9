"""The shared pgvector index (``cache.semantic.index: pgvector``) against the real PostgreSQL on
127.0.0.1:5432, a fresh database per test with the ledger's migrations applied."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from gateway.policy.schema import SemanticCacheConfig
from gateway.semantic import SemanticCache
from gateway.semantic.lazy import LazySemanticCache
from gateway.semantic.pgvector import IndexUnavailable
from tests.integration.semantic.conftest import near, unit
from tests.integration.semantic.pgvector_db import rows, upgraded_database
from tests.postgres import SERVER, CuttableLink, fresh_database

Q = "How do I cook risotto?"
PARAPHRASE = "How do I make risotto?"


@pytest.fixture
def database() -> Iterator[str]:
    with upgraded_database() as url:
        yield url


@pytest.fixture
async def open_cache(database: str) -> AsyncIterator[Callable[..., Awaitable[SemanticCache]]]:
    """Open caches on the test's database (``url`` to go another way, e.g. a cuttable link);
    each is closed at the end."""
    opened: list[SemanticCache] = []

    async def open_one(url: str = database, **options: object) -> SemanticCache:
        cache = await SemanticCache.open(None, pgvector_url=url, **options)  # type: ignore[arg-type]
        opened.append(cache)
        return cache

    yield open_one
    for cache in opened:
        await cache.aclose()


async def test_an_entry_stored_by_one_replica_is_a_hit_on_another(
    database: str, open_cache: Callable[..., Awaitable[SemanticCache]]
) -> None:
    first, second = await open_cache(), await open_cache()
    v = unit(1)
    entry_id = await first.store("team-a", "fp", v, Q, b"answer")
    assert entry_id is not None and rows(database) == 1
    hit = await second.lookup("team-a", "fp", near(v, 2), PARAPHRASE, 0.9)
    assert hit is not None and hit.entry_id == entry_id and hit.payload == b"answer"
    assert hit.text == Q and 0.95 < hit.score <= 1.0 and hit.created <= time.time()
    assert await second.lookup("team-a", "fp", unit(3), Q, 0.9) is None  # far away
    assert await second.lookup("team-a", "fp", v, Q, 1.01) is None  # above the score
    assert await second.lookup("team-a", "fp", v, Q, 0.9, max_age_s=0.0) is None
    health = second.health()
    assert health["status"] == "ok" and health["backend"] == "pgvector"
    assert health["hits"] == 1 and health["lookups"] == 4


async def test_tenants_and_contexts_never_share_entries(
    open_cache: Callable[..., Awaitable[SemanticCache]],
) -> None:
    cache = await open_cache()
    v = unit(1)
    await cache.store("team-a", "fp", v, Q, b"a's answer")
    for threshold in (0.0, 0.5, 0.9):
        assert await cache.lookup("team-b", "fp", v, Q, threshold) is None
        assert await cache.lookup("team-a", "other-fp", v, Q, threshold) is None
    await cache.store("team-b", "fp", v, Q, b"b's answer")
    await cache.store("team-a", "other-fp", v, Q, b"a's other answer")
    asked = [("team-a", "fp"), ("team-b", "fp"), ("team-a", "other-fp")] * 12
    hits = await asyncio.gather(*(cache.lookup(t, fp, v, Q, 0.9) for t, fp in asked))
    assert [h.payload if h else None for h in hits] == [
        b"a's answer",
        b"b's answer",
        b"a's other answer",
    ] * 12


async def test_the_guard_still_decides(open_cache: Callable[..., Awaitable[SemanticCache]]) -> None:
    """The same meaning guard as with the local index: a near-identical vector of a question
    that means the opposite (or names another number) is not served."""
    cache = await open_cache()
    stored, opposite = (
        "How do I turn on dark mode in Slack?",
        "How do I turn off dark mode in Slack?",
    )
    v = unit(1)
    await cache.store("team-a", "fp", v, stored, b"turn it on")
    assert await cache.lookup("team-a", "fp", near(v, 2), opposite, 0.6) is None
    assert (
        await cache.lookup("team-a", "fp", v, "How do I cook risotto in 10 minutes?", 0.6) is None
    )
    health = cache.health()
    assert health["guard_veto_opposite"] == 1 and health["guard_veto_numbers"] == 1
    hit = await cache.lookup(
        "team-a", "fp", near(v, 3), "How can I turn on dark mode in Slack?", 0.6
    )
    assert hit is not None and hit.payload == b"turn it on"


async def test_entries_expire_and_are_swept(
    database: str, open_cache: Callable[..., Awaitable[SemanticCache]]
) -> None:
    now = [time.time()]
    cache = await open_cache(ttl_s=60.0, sweep_interval_s=0.05, clock=lambda: now[0])
    v = unit(1)
    await cache.store("team-a", "fp", v, Q, b"answer")
    assert await cache.lookup("team-a", "fp", v, Q, 0.9) is not None
    now[0] += 59
    assert await cache.lookup("team-a", "fp", v, Q, 0.9) is not None
    now[0] += 2
    assert await cache.lookup("team-a", "fp", v, Q, 0.9) is None  # too old to serve
    deadline = time.monotonic() + 5
    while rows(database):  # ... and the sweep deletes it
        assert time.monotonic() < deadline, "the expired row was never deleted"
        await asyncio.sleep(0.05)
    assert cache.health()["expired"] == 1


async def test_flush_deletes_a_tenant_or_everyone_on_every_replica(
    database: str, open_cache: Callable[..., Awaitable[SemanticCache]]
) -> None:
    first, second = await open_cache(), await open_cache()
    for i in range(3):
        await first.store("team-a", "fp", unit(i), f"question {i}", b"a")
        await first.store("team-b", "fp", unit(10 + i), f"question {i}", b"b")
    assert await second.flush("team-a") == 3
    assert rows(database, "team-a") == 0 and rows(database, "team-b") == 3
    assert await first.lookup("team-a", "fp", unit(0), "question 0", 0.9) is None
    assert await first.lookup("team-b", "fp", unit(10), "question 0", 0.9) is not None
    # A replica that never opened the cache (disabled in its policy now) still reaches the table.
    closed = LazySemanticCache(None, database)
    assert await closed.flush(None) == 3 and rows(database) == 0


async def test_a_database_that_cannot_be_used_is_a_clear_startup_error(database: str) -> None:
    missing = f"{SERVER}/gw_test_no_such_database"
    with pytest.raises(IndexUnavailable, match=r"GATEWAY_LEDGER_URL.*cannot be reached"):
        await SemanticCache.open(None, pgvector_url=missing)
    bare = fresh_database()  # no `gateway db upgrade`
    with bare as url, pytest.raises(IndexUnavailable, match=r"run `gateway db upgrade`"):
        await SemanticCache.open(None, pgvector_url=url)
    with pytest.raises(IndexUnavailable) as caught:
        await SemanticCache.open(None, pgvector_url="postgresql://u:secret@127.0.0.1:1/x")
    assert "secret" not in caught.value.message  # the URL's credentials are redacted
    assert "[redacted]@127.0.0.1:1/x" in caught.value.message


async def test_pgvector_without_a_database_url_is_refused() -> None:
    lazy = LazySemanticCache("redis://127.0.0.1:6379/0", None)
    with pytest.raises(IndexUnavailable, match="set GATEWAY_LEDGER_URL"):
        await lazy.get(SemanticCacheConfig(enabled=True, index="pgvector"))


async def test_postgresql_down_mid_run_misses_and_skips_then_recovers(
    database: str, open_cache: Callable[..., Awaitable[SemanticCache]]
) -> None:
    link = CuttableLink()
    try:
        cache = await open_cache(link.url(database), sweep_interval_s=0.1)
        v = unit(1)
        await cache.store("team-a", "fp", v, Q, b"answer")
        assert await cache.lookup("team-a", "fp", v, Q, 0.9) is not None
        link.cut()
        started = time.perf_counter()
        assert await cache.lookup("team-a", "fp", v, Q, 0.9) is None  # a miss, not an error
        assert await cache.store("team-a", "fp", unit(2), "another question", b"x") is None
        assert await cache.lookup("team-a", "fp", v, Q, 0.9) is None
        assert time.perf_counter() - started < 2.0
        health = cache.health()
        assert cache.degraded and health["status"] == "degraded"
        assert "postgresql" in health["detail"] and health["stores_skipped"] == 1
        with pytest.raises(IndexUnavailable):
            await cache.flush("team-a")
        await cache.discard("0123456789abcdef", "team-a")  # skipped, as Redis's delete is
        link.mend()
        deadline = time.monotonic() + 10
        while cache.degraded:  # the sweep reconnects
            assert time.monotonic() < deadline, "the index never left degraded"
            await asyncio.sleep(0.05)
        assert await cache.lookup("team-a", "fp", v, Q, 0.9) is not None
        assert await cache.store("team-a", "fp", unit(2), "another question", b"x") is not None
        assert rows(database) == 2
    finally:
        link.close()
