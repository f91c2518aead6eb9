"""The Redis ledger against a real Redis: rollups, exactly-once, and Redis going away mid-run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from gateway.ledger import open_ledger
from gateway.ledger.base import SCAN_PAGE
from gateway.ledger.redis_store import RedisLedger
from tests.servers import RedisProcess
from tests.unit.ledger.helpers import DAY, T0, rec


def redis_ledger(url: str, data_dir: Path, prefix: str = "gateway:ledger:") -> RedisLedger:
    ledger = open_ledger(url, data_dir, key_prefix=prefix, flush_interval_s=0.01, timeout_s=0.3)
    assert isinstance(ledger, RedisLedger)
    return ledger


MIX = [
    *(rec(T0 + i * 5000, model="small", tags={"team": "x"}) for i in range(30)),
    *(rec(T0 + i * 7000, model="large", cost="0.01", baseline="0.01") for i in range(20)),
    *(rec(T0 + i * 9000, cache="exact", cost="0", tenant="team-b") for i in range(10)),
    *(rec(T0 + i * 3000, model="mystery", cost=None, tags={"a": "1", "b": "2"}) for i in range(5)),
]


async def test_reports_from_redis_rollups_equal_sqlite_reports(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    redis = redis_ledger(redis_url, tmp_path / "r", prefix)
    sqlite = open_ledger(None, tmp_path / "s")
    for ledger in (redis, sqlite):
        await ledger.start()
        for r in MIX:
            ledger.record(r)
        await ledger.flush()
    since, until = T0, T0 + 3 * DAY
    for by in [(), ("model",), ("day", "model"), ("tenant", "cache"), ("tag",), ("route",)]:
        for tenant in (None, "team-b"):
            a = await redis.report(since, until, by, tenant=tenant)
            b = await sqlite.report(since, until, by, tenant=tenant)
            assert a.to_dict() == b.to_dict(), (by, tenant)
    a = await redis.report(since, until, ("model",), tag="team=x")
    assert a.to_dict() == (await sqlite.report(since, until, ("model",), tag="team=x")).to_dict()
    assert a.totals.requests == 30
    # the Redis store reports whole UTC days
    partial = await redis.report(T0 + 3600, T0 + 7200)
    assert (partial.since, partial.until) == (T0, T0 + DAY)
    assert redis.health() == {
        "ledger": "redis",
        "redis": "up",
        "queued": 0,
        "spooled": 0,
        "lost": 0,
    }
    for ledger in (redis, sqlite):
        await ledger.aclose()


async def test_a_replayed_record_is_counted_once(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ledger = redis_ledger(redis_url, tmp_path, prefix)
    await ledger.start()
    batch = [rec(), rec(cost="0.5")]
    await ledger._send(batch)
    await ledger._send(batch)  # as after a timeout whose write did land
    ledger.record(batch[0])
    await ledger.flush()
    report = await ledger.report(T0, T0 + DAY)
    assert report.totals.requests == 2
    assert report.totals.cost_usd == Decimal("0.501")
    assert [r.request_id for r in await ledger.records()] == [r.request_id for r in batch]
    await ledger.aclose()


async def test_spend_is_counted_per_tenant_and_day(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ledger = redis_ledger(redis_url, tmp_path, prefix)
    await ledger.start()
    now = time.time()
    ledger.record(rec(now - 2 * DAY, cost="1.5"))
    ledger.record(rec(now, cost="0.25"))
    ledger.record(rec(now, cost="9", tenant="team-b"))
    assert await ledger.spend("team-a", now - 2 * DAY) == Decimal("1.75")  # from the queue
    await ledger.flush()
    assert await ledger.spend("team-a", now - 2 * DAY) == Decimal("1.75")
    assert await ledger.spend("team-a", now) == Decimal("0.25")
    # a second replica sees the same spend
    other = redis_ledger(redis_url, tmp_path / "other", prefix)
    assert await other.spend("team-a", now - 7 * DAY) == Decimal("1.75")
    await other.aclose()
    await ledger.aclose()


async def _wait_for(predicate: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _assert_each_once(ledger: RedisLedger, ids: list[str]) -> None:
    stored = Counter(r.request_id for r in await ledger.records(count=100_000))
    assert stored == Counter(ids), {k: v for k, v in stored.items() if v != 1}
    report = await ledger.report(T0 - DAY, T0 + 2 * DAY)
    assert report.totals.requests == len(ids)
    assert report.totals.cost_usd == Decimal("0.001") * len(ids)


async def test_redis_killed_mid_run_loses_nothing_and_counts_nothing_twice(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    ledger = redis_ledger(own_redis.url, tmp_path)
    await ledger.start()
    ids: list[str] = []
    saw_down = False
    for i in range(300):
        r = rec(T0 + i)
        ids.append(r.request_id)
        ledger.record(r)
        if i == 100:
            await ledger.flush()
            own_redis.kill()
        if i == 200:
            await ledger.flush()
            health = ledger.health()
            saw_down = health["redis"] == "down" and health["spooled"] > 0
            own_redis.start()
        await asyncio.sleep(0.003)
    assert saw_down
    await ledger.flush()
    await _wait_for(lambda: ledger.health()["spooled"] == 0 and ledger.health()["redis"] == "up")
    await _assert_each_once(ledger, ids)
    await ledger.aclose()


async def test_a_frozen_redis_times_out_to_the_spool_and_late_writes_are_not_doubled(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    ledger = redis_ledger(own_redis.url, tmp_path)
    await ledger.start()
    ids: list[str] = []
    for i in range(150):
        r = rec(T0 + i)
        ids.append(r.request_id)
        ledger.record(r)
        if i == 50:
            own_redis.freeze()  # writes sent now are applied late, after they were spooled
        if i == 100:
            await ledger.flush()
            assert ledger.health()["spooled"] > 0
            own_redis.thaw()
        await asyncio.sleep(0.003)
    await ledger.flush()
    await _wait_for(lambda: ledger.health()["spooled"] == 0 and ledger.health()["redis"] == "up")
    await _assert_each_once(ledger, ids)
    await ledger.aclose()


async def test_shutdown_while_redis_is_down_spools_and_the_next_start_replays(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    ledger = redis_ledger(own_redis.url, tmp_path)
    await ledger.start()
    first = [rec(T0 + i) for i in range(20)]
    for r in first:
        ledger.record(r)
    await ledger.flush()
    assert await ledger.spend("team-a", T0) == Decimal("0.020")
    own_redis.kill()
    later = [rec(T0 + 100 + i) for i in range(30)]
    for r in later:
        ledger.record(r)
    await ledger.flush()
    assert ledger.health()["redis"] == "down"
    # budgets go on: the last spend seen plus what this replica spooled, without waiting
    started = time.monotonic()
    assert await ledger.spend("team-a", T0) == Decimal("0.050")
    assert time.monotonic() - started < 0.2
    await ledger.aclose()  # Redis is down: everything queued goes to the spool
    assert ledger.spool.count() == 30
    own_redis.start()
    again = redis_ledger(own_redis.url, tmp_path)
    await again.start()  # replays the spool first
    assert again.health()["spooled"] == 0
    await _assert_each_once(again, [r.request_id for r in first + later])
    await again.aclose()


async def test_rollups_stay_exact_past_what_a_double_holds(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Lua numbers are doubles; the two-limb sums must not round (2**53 nanos ≈ $9M)."""
    ledger = redis_ledger(redis_url, tmp_path, prefix)
    await ledger.start()
    records = [
        rec(cost="7000000.123456789", baseline="1.000000001"),
        rec(cost="7000000.000000001", baseline="2.5"),
        rec(cost="0.000000007", baseline="0.000000003"),
    ]
    for r in records:
        ledger.record(r)
    await ledger.flush()
    totals = (await ledger.report(T0, T0 + DAY)).totals
    assert totals.cost_usd == Decimal("14000000.123456797")
    assert totals.baseline_cost_usd == Decimal("3.500000004")
    assert totals.savings_usd == Decimal("3.500000004") - Decimal("14000000.123456797")
    await ledger.aclose()


async def test_scan_returns_the_records_that_arrived_in_the_window_page_by_page(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Several pages, and paging neither skips nor repeats records of the same second."""
    same_second = [f"same{i}" for i in range(SCAN_PAGE + 7)]
    for ledger in (redis_ledger(redis_url, tmp_path / "r", prefix), open_ledger(None, tmp_path)):
        await ledger.start()
        for i in range(1500):
            ledger.record(rec(T0 + i, request_id=f"r{i}"))
        for request_id in same_second:
            ledger.record(rec(T0 + 150, request_id=request_id))
        await ledger.flush()
        pages = [page async for page in ledger.scan(T0 + 100, T0 + 1200)]
        found = sorted(r.request_id for page in pages for r in page)
        assert found == sorted([f"r{i}" for i in range(100, 1200)] + same_second)
        assert len(pages) >= 2 and max(map(len, pages)) <= SCAN_PAGE  # never all at once
        await ledger.aclose()
