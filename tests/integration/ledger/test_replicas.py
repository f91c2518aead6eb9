"""Replicas sharing one data volume and one Redis: each replays only its own spool (so its
budget spend comes right again), the spool of a crashed replica is replayed once by the next
to start, and shutdown on a frozen Redis returns within its grace."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.ledger import open_ledger
from gateway.ledger.redis_store import RedisLedger
from tests.servers import RedisProcess
from tests.unit.ledger.helpers import rec

ROOT = Path(__file__).parents[3]


def replica(url: str, data_dir: Path, name: str, **options: Any) -> RedisLedger:
    options = {"flush_interval_s": 0.01, "timeout_s": 0.3, "replica": name, **options}
    ledger = open_ledger(url, data_dir, **options)
    assert isinstance(ledger, RedisLedger)
    return ledger


async def wait_for(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def assert_each_once(url: str, data_dir: Path, ids: list[str]) -> None:
    reader = replica(url, data_dir / "reader", "reader")
    stored = Counter(r.request_id for r in await reader.records(count=100_000))
    await reader.aclose()
    assert stored == Counter(ids), {k: v for k, v in stored.items() if v != 1}


async def test_two_replicas_replay_their_own_spools_and_their_spend_comes_right(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    a, b = replica(own_redis.url, tmp_path, "a"), replica(own_redis.url, tmp_path, "b")
    await a.start()
    await b.start()
    now = time.time()
    own_redis.kill()
    sent: dict[str, list[str]] = {"a": [], "b": []}
    for i in range(200):
        ledger, name = (a, "a") if i % 2 else (b, "b")
        r = rec(now, cost="0.01", tenant=f"team-{name}")
        sent[name].append(r.request_id)
        ledger.record(r)
        await asyncio.sleep(0.002)
    await a.flush()
    await b.flush()
    assert a.spool.count() == 100 and b.spool.count() == 100
    # budgets see what each replica spooled
    assert await a.spend("team-a", now) == Decimal("1.00")
    own_redis.start()
    await wait_for(lambda: a.spool.count() == 0 and b.spool.count() == 0)
    # each replica replayed its own records, so neither counts them twice now
    for ledger in (a, b):
        assert await ledger.spend("team-a", now) == Decimal("1.00")
        assert await ledger.spend("team-b", now) == Decimal("1.00")
        assert not ledger.unstored
        await ledger.aclose()
    await assert_each_once(own_redis.url, tmp_path, sent["a"] + sent["b"])


_CRASHES_WITH_A_SPOOL = """
import asyncio, os, sys, time
from pathlib import Path
from gateway.ledger import open_ledger
from tests.unit.ledger.helpers import rec

async def main() -> None:
    ledger = open_ledger(sys.argv[1], Path(sys.argv[2]), replica="crashed", timeout_s=0.2,
                         flush_interval_s=0.01)
    await ledger.start()
    for i in range(int(sys.argv[3])):
        ledger.record(rec(time.time(), cost="0.01", request_id=f"crashed-{i}"))
    await ledger.flush()
    print(ledger.spool.count(), flush=True)
    os._exit(0)  # a crash: no shutdown, the spool and its lock left behind

asyncio.run(main())
"""


async def test_the_spool_of_a_crashed_replica_is_replayed_once_by_the_next_to_start(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    now = time.time()
    stored_before = rec(now, cost="0.01", request_id="crashed-0")  # it had landed already
    first = replica(own_redis.url, tmp_path, "first")
    await first.start()
    first.record(stored_before)
    await first.flush()
    own_redis.kill()
    crashed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CRASHES_WITH_A_SPOOL, own_redis.url, str(tmp_path), "50"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert crashed.stdout.strip() == "50", crashed.stderr
    # a live replica never replays it; one that starts adopts it, and its budgets count it
    assert first.spool.count() == 0
    second = replica(own_redis.url, tmp_path, "second")
    await second.start()
    assert second.spool.count() == 50
    assert await second.spend("team-a", now) == Decimal("0.50")  # Redis unseen, + 50 spooled
    own_redis.start()
    await wait_for(lambda: second.spool.count() == 0)
    assert await second.spend("team-a", now) == Decimal("0.50")  # crashed-0 once
    assert not list((tmp_path / "ledger-spool").glob("crashed*"))
    for ledger in (first, second):
        await ledger.aclose()
    await assert_each_once(own_redis.url, tmp_path, [f"crashed-{i}" for i in range(50)])


async def test_aclose_on_a_frozen_redis_spools_within_the_grace(
    own_redis: RedisProcess, tmp_path: Path
) -> None:
    ledger = replica(own_redis.url, tmp_path, "a", timeout_s=30.0, store_timeout_s=60.0)
    await ledger.start()
    records = [rec() for _ in range(300)]
    own_redis.freeze()
    for r in records:
        ledger.record(r)
    await asyncio.sleep(0.1)  # a batch is in Redis's hands, unanswered
    started = time.monotonic()
    await ledger.aclose(grace_s=1.0)
    assert time.monotonic() - started < 1.5
    assert ledger.spool.count() == 300
    own_redis.thaw()  # the frozen batch lands late: the replay must not count it twice
    again = replica(own_redis.url, tmp_path, "a")
    await again.start()
    assert again.spool.count() == 0
    await again.aclose()
    await assert_each_once(own_redis.url, tmp_path, [r.request_id for r in records])
