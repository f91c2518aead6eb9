"""A SQLite store that fails (full, locked): records go to the spool, budgets still see them, the
queue stays bounded, and when the store recovers each record arrives once; shutdown never hangs."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.ledger import open_ledger
from gateway.ledger.record import LedgerRecord
from gateway.ledger.sqlite_store import SQLiteLedger
from tests.unit.ledger.helpers import rec


def sqlite_ledger(data_dir: Path, **options: Any) -> SQLiteLedger:
    options = {"flush_interval_s": 0.01, "replica": "r1", **options}
    ledger = open_ledger(None, data_dir, **options)
    assert isinstance(ledger, SQLiteLedger)
    return ledger


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def set_max_pages(ledger: SQLiteLedger, pages: int) -> None:
    """SQLite's own limit on the file's size: past it, writes fail with SQLITE_FULL, as on a
    full disk (set on the writer's connection, in its thread)."""

    def limit() -> None:
        conn = ledger._connect()
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await ledger._in_thread(limit)


def assert_each_once(data_dir: Path, records: list[LedgerRecord]) -> None:
    stored = Counter(r.request_id for r in sqlite_ledger(data_dir).records())
    assert stored == Counter({r.request_id for r in records}), "missing or doubled records"


async def test_a_full_disk_spools_and_everything_arrives_once_when_it_has_room(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path)
    await ledger.start()
    now = time.time()
    before = [rec(now, cost="0.01") for _ in range(10)]
    for r in before:
        ledger.record(r)
    await ledger.flush()
    await set_max_pages(ledger, 1)  # no room for one more page
    during = [rec(now, cost="0.01") for _ in range(400)]
    for i, r in enumerate(during):
        ledger.record(r)
        if i % 100 == 0:
            ledger.record(before[0])  # a record already stored, accepted again
        await asyncio.sleep(0)
    await ledger.flush()
    health = ledger.health()
    assert health["sqlite"] == "down" and health["spooled"] >= 400 and health["queued"] == 0
    # budgets count what sits in the spool
    assert await ledger.spend("team-a", now) == Decimal("0.01") * 414
    await set_max_pages(ledger, 1_000_000)
    await wait_for(lambda: ledger.health()["spooled"] == 0 and ledger.health()["sqlite"] == "up")
    assert await ledger.spend("team-a", now) == Decimal("0.01") * 410  # the repeats once
    assert not ledger.unstored
    await ledger.aclose()
    assert_each_once(tmp_path, before + during)


async def test_a_locked_file_spools_within_the_store_timeout_and_the_queue_stays_bounded(
    tmp_path: Path,
) -> None:
    ledger = sqlite_ledger(tmp_path, max_queued=50, store_timeout_s=30.0)
    await ledger.start()
    first = rec()
    ledger.record(first)
    await ledger.flush()
    other = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the file: writes wait on it
    records = [rec() for _ in range(600)]
    longest = 0
    for r in records:
        ledger.record(r)
        longest = max(longest, len(ledger._queue))
        await asyncio.sleep(0.001)
    assert longest <= 100, longest  # the bound, plus what arrives during one spool append
    assert ledger.spool.count() >= 400  # the writer is stuck on the lock: the queue spilled
    other.execute("ROLLBACK")
    other.close()
    await ledger.flush(timeout_s=20)
    await wait_for(lambda: ledger.health()["spooled"] == 0)
    assert not ledger.unstored
    await ledger.aclose()
    assert_each_once(tmp_path, [first, *records])


async def test_aclose_on_a_locked_store_spools_within_the_grace(tmp_path: Path) -> None:
    ledger = sqlite_ledger(tmp_path, store_timeout_s=60.0)
    await ledger.start()
    first = rec()
    ledger.record(first)
    await ledger.flush()
    other = sqlite3.connect(tmp_path / "ledger.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    records = [rec() for _ in range(300)]
    for r in records:
        ledger.record(r)
    await asyncio.sleep(0.1)  # the writer is now waiting on the lock with a batch
    started = time.monotonic()
    await ledger.aclose(grace_s=1.0)
    assert time.monotonic() - started < 1.5
    assert ledger.spool.count() == 300  # the batch in the store's hands too, as a copy
    other.execute("ROLLBACK")
    other.close()
    await asyncio.sleep(0.2)
    again = sqlite_ledger(tmp_path)  # the next start replays the spool, once each
    await again.start()
    assert again.spool.count() == 0
    await again.aclose()
    assert_each_once(tmp_path, [first, *records])


async def test_a_store_that_cannot_open_spools_until_it_can(tmp_path: Path) -> None:
    blocker = tmp_path / "ledger.sqlite3"
    blocker.mkdir()  # the database's path is taken by a directory: the store cannot open
    ledger = sqlite_ledger(tmp_path)
    await ledger.start()
    records = [rec() for _ in range(20)]
    for r in records:
        ledger.record(r)
    await ledger.flush()
    assert ledger.health()["sqlite"] == "down" and ledger.spool.count() == 20
    blocker.rmdir()
    await wait_for(lambda: ledger.health()["spooled"] == 0)
    await ledger.aclose()
    assert_each_once(tmp_path, records)
