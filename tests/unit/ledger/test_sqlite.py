"""The SQLite ledger on a real file: time filters, idempotence, spend, flush, spool replay."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from gateway.ledger import open_ledger
from gateway.ledger.sqlite_store import SQLiteLedger
from tests.unit.ledger.helpers import DAY, T0, rec


async def started(data_dir: Path) -> SQLiteLedger:
    ledger = open_ledger(None, data_dir, flush_interval_s=0.01)
    assert isinstance(ledger, SQLiteLedger)
    await ledger.start()
    return ledger


async def test_time_filters_are_exact_across_partial_and_whole_days(tmp_path: Path) -> None:
    ledger = await started(tmp_path)
    # one record every 6 hours for 5 days, cost 0.001 each, tagged by half
    records = [rec(T0 + i * 6 * 3600, tags={"half": "a" if i < 10 else "b"}) for i in range(20)]
    for r in records:
        ledger.record(r)
    await ledger.flush()

    def expected(since: float, until: float) -> int:
        return sum(1 for r in records if since <= r.time < until)

    windows = [
        (T0, T0 + 5 * DAY),  # whole days only
        (T0 + 3600, T0 + 4 * DAY + 7 * 3600),  # partial at both ends
        (T0 + 6 * 3600, T0 + 6 * 3600 + 1),  # one record, inside one day
        (T0 + 6 * 3600 + 1, T0 + 12 * 3600),  # none: until is exclusive
        (T0 + DAY - 1, T0 + 2 * DAY + 1),  # a whole day and two sliver ends
    ]
    for since, until in windows:
        for by in ((), ("day",), ("tag",), ("model", "cache")):
            report = await ledger.report(since, until, by)
            n = expected(since, until)
            assert report.totals.requests == n, (since - T0, until - T0, by)
            assert report.totals.cost_usd == (Decimal("0.001") * n if n else None)
            if by == ("tag",):
                assert sum(row.requests for row in report.rows) == n
        tagged = await ledger.report(since, until, ("day",), tag="half=b")
        assert tagged.totals.requests == sum(
            1 for r in records if since <= r.time < until and r.tags["half"] == "b"
        )
    await ledger.aclose()


async def test_a_record_written_twice_is_counted_once(tmp_path: Path) -> None:
    ledger = await started(tmp_path)
    r = rec()
    ledger.record(r)
    await ledger.flush()
    ledger.record(r)
    ledger.record(r)
    await ledger.flush()
    report = await ledger.report(T0, T0 + DAY, ("tag",))
    assert report.totals.requests == 1
    assert await ledger.spend("team-a", T0) == Decimal("0.001")
    assert len(ledger.records()) == 1
    assert ledger.records()[0] == r
    await ledger.aclose()


async def test_tenant_filter_and_spend_include_queued_records(tmp_path: Path) -> None:
    ledger = await started(tmp_path)
    now = time.time()
    ledger.record(rec(now - 2 * DAY, cost="1.25", tenant="team-a"))
    ledger.record(rec(now, cost="0.75", tenant="team-a"))
    ledger.record(rec(now, cost="5", tenant="team-b"))
    ledger.record(rec(now, cost=None, tenant="team-a"))
    # before the writer ran: counted from the queue
    assert await ledger.spend("team-a", now - 3 * DAY) == Decimal("2.00")
    await ledger.flush()
    assert await ledger.spend("team-a", now - 3 * DAY) == Decimal("2.00")
    assert await ledger.spend("team-a", now) == Decimal("0.75")
    ledger.record(rec(now, cost="0.25", tenant="team-a"))
    assert await ledger.spend("team-a", now) == Decimal("1.00")
    await ledger.flush()
    assert await ledger.spend("team-a", now) == Decimal("1.00")
    report = await ledger.report(now - 3 * DAY, now + 1, ("tenant",), tenant="team-a")
    assert [row.group["tenant"] for row in report.rows] == ["team-a"]
    assert report.totals.cost_usd == Decimal("2.25")
    assert report.totals.unpriced_requests == 1
    await ledger.aclose()
    # a CLI reading the same file, without starting a writer
    reader = open_ledger(None, tmp_path)
    assert await reader.spend("team-a", now - 3 * DAY) == Decimal("2.25")
    assert (await reader.report(now - 3 * DAY, now + 1)).totals.requests == 5
    await reader.aclose()


async def test_aclose_writes_everything_queued(tmp_path: Path) -> None:
    ledger = open_ledger(None, tmp_path, flush_interval_s=60)  # the timer never fires
    await ledger.start()
    for i in range(1234):
        ledger.record(rec(T0 + i))
    await ledger.aclose()
    reader = open_ledger(None, tmp_path)
    assert (await reader.report(T0, T0 + DAY)).totals.requests == 1234
    await reader.aclose()


async def test_spooled_records_are_stored_once_at_start(tmp_path: Path) -> None:
    ledger = open_ledger(None, tmp_path)
    stored = rec()
    await ledger.start()
    ledger.record(stored)
    await ledger.aclose()
    # a previous run spooled these (its store failed at shutdown); one is already stored
    spooled = [rec(), rec(), stored]
    ledger.spool.append(spooled)
    ledger.spool.append(spooled[:1])  # and one twice
    ledger.spool.release()
    again = await started(tmp_path)
    assert again.spool.count() == 0
    report = await again.report(T0, T0 + DAY)
    assert report.totals.requests == 3
    assert sorted(r.request_id for r in again.records()) == sorted(r.request_id for r in spooled)
    await again.aclose()
