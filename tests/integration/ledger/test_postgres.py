"""The PostgreSQL ledger against a real PostgreSQL: migrations, reports equal to SQLite's,
monthly partitions, exactly-once (in the hourly tag rollups too, and in their back-fill),
budgets across replicas, and the database going away."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from yoyo import read_migrations

from gateway.ledger import Ledger, LedgerRecord, open_ledger
from gateway.ledger.base import SCAN_PAGE
from gateway.ledger.postgres_schema import (
    INDEX_MIGRATIONS,
    MIGRATIONS,
    _backend,
    connect,
    pending,
    store_batch,
    upgrade,
)
from gateway.ledger.postgres_store import PostgresLedger
from gateway.ledger.sums import Sums, tag_labels
from tests.conftest import ADMIN_KEY, Gateway, policy_text
from tests.fake_upstream import FakeUpstream
from tests.integration.ledger.test_redis import MIX
from tests.postgres import CuttableLink, fresh_database
from tests.unit.ledger.helpers import DAY, T0, rec


@pytest.fixture
def database() -> Iterator[str]:
    """A new database with the ledger's tables."""
    with fresh_database() as url:
        upgrade(url)
        yield url


def pg_ledger(url: str, data_dir: Path, **options: Any) -> PostgresLedger:
    options = {"flush_interval_s": 0.01, "timeout_s": 2.0, **options}
    ledger = open_ledger(None, data_dir, ledger_url=url, **options)
    assert isinstance(ledger, PostgresLedger)
    return ledger


async def _drained(ledger: PostgresLedger, timeout_s: float = 20.0) -> None:
    """Wait until everything recorded is stored: nothing queued, in flight or spooled."""
    deadline = time.monotonic() + timeout_s
    while True:
        await ledger.flush()
        health = ledger.health()
        if health["queued"] == 0 and health["spooled"] == 0:
            return
        assert time.monotonic() < deadline, f"not drained: {health}"
        await asyncio.sleep(0.05)


async def _stored_ids(ledger: PostgresLedger) -> Counter[str]:
    return Counter([r.request_id async for page in ledger.scan(0, 2e9) for r in page])


def test_upgrade_applies_each_migration_once() -> None:
    ids = [path.stem for path in sorted(MIGRATIONS.glob("*.sql"))]
    assert ids[0] == "0001.ledger-tables" and "0002.tag-hours" in ids
    index_ids = [path.stem for path in sorted(INDEX_MIGRATIONS.glob("*.sql"))]
    assert index_ids == ["0001.semantic-entries"]
    with fresh_database() as url:
        assert pending(url) == ids  # the ledger waits for its own migrations only
        assert upgrade(url) == ids + index_ids  # this server has pgvector (scripts/postgres)
        assert upgrade(url) == [] and pending(url) == []


# Periods whose ends cut days and hours: a tagged report reads whole days from the daily
# rollups, whole hours from the hourly ones and the seconds around them from the records.
PARTIAL_PERIODS = (
    (T0 + 1800 + 7, T0 + DAY + 5400 + 13),
    (T0 + 100, T0 + DAY - 100),
    (T0 + 5 * 3600 + 1, T0 + 5 * 3600 + 20),
    (T0 + 3 * 3600, T0 + 2 * DAY),
)


def _hour_sums(records: list[LedgerRecord]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """What ``rollup_tag_hour`` must hold for ``records``, summed in Python (`Sums.of`)."""
    sums: dict[tuple[Any, ...], Sums] = {}
    for r in records:
        for label in tag_labels(r.tags):
            key = (int(r.time // 3600), label, r.tenant, r.model or "", r.route or "", r.cache)
            sums.setdefault(key, Sums()).add(Sums.of(r))
    return {key: tuple(value.values()) for key, value in sums.items()}


def _stored_hour_sums(url: str) -> dict[tuple[Any, ...], tuple[int, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT * FROM ledger.rollup_tag_hour").fetchall()
    return {tuple(row[:6]): tuple(int(v) for v in row[6:]) for row in rows}


async def _same_reports_by_tag(postgres: PostgresLedger, sqlite: Ledger) -> None:
    for since, until in PARTIAL_PERIODS:
        for by, tag in [(("tag",), None), (("day", "tag", "cache"), None), (("model",), "team=x")]:
            for tenant in (None, "team-b"):
                a = await postgres.report(since, until, by, tenant=tenant, tag=tag)
                b = await sqlite.report(since, until, by, tenant=tenant, tag=tag)
                assert a.to_dict() == b.to_dict(), (since, until, by, tenant, tag)


async def test_hourly_tag_rollups_count_each_record_once_and_reports_stay_exact(
    database: str, tmp_path: Path
) -> None:
    postgres = pg_ledger(database, tmp_path / "p")
    sqlite = open_ledger(None, tmp_path / "s")
    for ledger in (postgres, sqlite):
        await ledger.start()
        for r in [*MIX, *MIX[:7]]:  # replayed records, in the same batch
            ledger.record(r)
        await ledger.flush()
    for r in MIX[20:40]:  # and in a later one
        postgres.record(r)
    await postgres.flush()
    assert _stored_hour_sums(database) == _hour_sums(MIX)
    await _same_reports_by_tag(postgres, sqlite)
    for ledger in (postgres, sqlite):
        await ledger.aclose()


async def test_the_tag_hours_migration_back_fills_what_was_stored_before(
    tmp_path: Path,
) -> None:
    with fresh_database() as url:
        with _backend(url) as backend:
            first = backend.to_apply(read_migrations(str(MIGRATIONS)))[:1]
            backend.apply_migrations(first)
        with connect(url, 2) as conn:
            store_batch(conn, MIX, set())
            assert conn.execute("SELECT to_regclass('rollup_tag_hour')").fetchone() == (None,)
        assert "0002.tag-hours" in upgrade(url)
        assert _stored_hour_sums(url) == _hour_sums(MIX)
        postgres = pg_ledger(url, tmp_path / "p")
        sqlite = open_ledger(None, tmp_path / "s")
        for ledger in (postgres, sqlite):
            await ledger.start()
        for r in MIX:
            sqlite.record(r)
        await sqlite.flush()
        await _same_reports_by_tag(postgres, sqlite)
        for ledger in (postgres, sqlite):
            await ledger.aclose()


async def test_reports_equal_sqlite_reports_to_the_second(database: str, tmp_path: Path) -> None:
    postgres = pg_ledger(database, tmp_path / "p")
    sqlite = open_ledger(None, tmp_path / "s")
    for ledger in (postgres, sqlite):
        await ledger.start()
        for r in MIX:
            ledger.record(r)
        await ledger.flush()
    for since, until in ((T0, T0 + 3 * DAY), (T0 + 3600, T0 + DAY + 7200), (T0 + 10, T0 + 20)):
        for by in [(), ("model",), ("day", "model"), ("tenant", "cache"), ("tag",), ("route",)]:
            for tenant in (None, "team-b"):
                a = await postgres.report(since, until, by, tenant=tenant)
                b = await sqlite.report(since, until, by, tenant=tenant)
                assert a.to_dict() == b.to_dict(), (since, until, by, tenant)
    tagged = await postgres.report(T0, T0 + 3 * DAY, ("model",), tag="team=x")
    assert (
        tagged.to_dict()
        == (await sqlite.report(T0, T0 + 3 * DAY, ("model",), tag="team=x")).to_dict()
    )
    assert tagged.totals.requests == 30
    assert postgres.health() == {
        "ledger": "postgres",
        "postgres": "up",
        "queued": 0,
        "spooled": 0,
        "lost": 0,
    }
    for ledger in (postgres, sqlite):
        await ledger.aclose()


async def test_a_record_written_twice_is_stored_and_counted_once(
    database: str, tmp_path: Path
) -> None:
    ledger = pg_ledger(database, tmp_path)
    await ledger.start()
    first, second = rec(), rec(cost="0.5")
    for r in (first, second, first):  # twice in one batch
        ledger.record(r)
    await ledger.flush()
    ledger.record(second)  # and again later, as a replay from the spool does
    await ledger.flush()
    report = await ledger.report(T0, T0 + DAY)
    assert report.totals.requests == 2
    assert report.totals.cost_usd == Decimal("0.501")
    assert await _stored_ids(ledger) == Counter([first.request_id, second.request_id])
    await ledger.aclose()


async def test_records_land_in_monthly_partitions_and_scan_in_order(
    database: str, tmp_path: Path
) -> None:
    ledger = pg_ledger(database, tmp_path)
    await ledger.start()
    records = [rec(T0 + i * 2 * DAY + i) for i in range(39)]  # June 15 to August 30, 2025
    for r in reversed(records):
        ledger.record(r)
    await ledger.flush()
    with psycopg.connect(database) as conn:
        partitions = conn.execute(
            "SELECT c.relname, count(*) FROM ledger.records r "
            "JOIN pg_class c ON c.oid = r.tableoid GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert partitions == [("records_2025_06", 8), ("records_2025_07", 16), ("records_2025_08", 15)]
    pages = [page async for page in ledger.scan(T0, T0 + 100 * DAY)]
    assert [r.request_id for page in pages for r in page] == [r.request_id for r in records]
    assert all(len(page) <= SCAN_PAGE for page in pages)
    await ledger.aclose()


async def test_spend_is_shared_by_replicas_once_stored(database: str, tmp_path: Path) -> None:
    one = pg_ledger(database, tmp_path / "one")
    two = pg_ledger(database, tmp_path / "two")
    for ledger in (one, two):
        await ledger.start()
    now = time.time()
    one.record(rec(now - 2 * DAY, cost="1.5"))
    one.record(rec(now, cost="0.25"))
    two.record(rec(now, cost="9", tenant="team-b"))
    two.record(rec(now, cost="0.5"))
    assert await one.spend("team-a", now - 2 * DAY) == Decimal("1.75")  # its own, queued
    for ledger in (one, two):
        await ledger.flush()
    for ledger in (one, two):
        assert await ledger.spend("team-a", now - 2 * DAY) == Decimal("2.25")
        assert await ledger.spend("team-a", now) == Decimal("0.75")
        assert await ledger.spend("team-b", now) == Decimal("9")
    for ledger in (one, two):
        await ledger.aclose()


async def test_without_the_tables_records_wait_in_the_spool_until_the_upgrade(
    tmp_path: Path,
) -> None:
    with fresh_database() as url:
        ledger = pg_ledger(url, tmp_path)
        await ledger.start()
        records = [rec(T0 + i) for i in range(50)]
        for r in records:
            ledger.record(r)
        await ledger.flush()
        assert ledger.health()["postgres"] == "down"
        assert ledger.health()["spooled"] == 50
        upgrade(url)
        ledger.record(rec(T0 + 100))  # the next write tries again, after the backoff
        await _drained(ledger)
        assert sum((await _stored_ids(ledger)).values()) == 51
        await ledger.aclose()


async def test_a_cut_connection_mid_run_loses_nothing_and_counts_nothing_twice(
    database: str, tmp_path: Path
) -> None:
    link = CuttableLink()
    ledger = pg_ledger(link.url(database), tmp_path)
    await ledger.start()
    ids: list[str] = []
    saw_down = False
    try:
        for i in range(300):
            r = rec(T0 + i)
            ids.append(r.request_id)
            ledger.record(r)
            if i == 100:
                await ledger.flush()
                link.cut()
            if i == 200:
                await ledger.flush()
                health = ledger.health()
                saw_down = health["postgres"] == "down" and health["spooled"] > 0
                link.mend()
            await asyncio.sleep(0.001)
        await _drained(ledger)
        assert saw_down
        assert await _stored_ids(ledger) == Counter(ids)
        report = await ledger.report(T0 - DAY, T0 + 2 * DAY)
        assert report.totals.requests == 300
        assert report.totals.cost_usd == Decimal("0.001") * 300
    finally:
        await ledger.aclose()
        link.close()


def test_a_gateway_on_postgres_reports_what_its_clients_were_charged(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    database: str,
    tmp_path: Path,
) -> None:
    """Through the official SDK; the admin report (from PostgreSQL) sums to the nano-dollar
    what the x-gateway-cost-usd headers said, streams are recorded too, and `gateway report`
    reads the same."""
    gw = start_gateway(policy_text(primary, backup), ledger_url=database)
    client = gw.client()
    charged = Decimal(0)
    for i in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"question {i}"}]
        )
        charged += Decimal(raw.headers["x-gateway-cost-usd"])
    assert charged > 0
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    report = httpx.get(f"{gw.url}/admin/reports/cost", headers=admin).json()
    assert report["totals"]["requests"] == 4
    assert Decimal(report["totals"]["cost_usd"]) == charged
    for i in range(2):
        stream = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": f"stream {i}"}], stream=True
        )
        assert [chunk for chunk in stream]
    deadline = time.monotonic() + 10  # a stream's record is written just after its end
    while (report := httpx.get(f"{gw.url}/admin/reports/cost", headers=admin).json())["totals"][
        "requests"
    ] < 6:
        assert time.monotonic() < deadline, report["totals"]
        time.sleep(0.05)
    assert report["totals"]["requests"] == 6
    charged = Decimal(report["totals"]["cost_usd"])
    env = {**os.environ, "GATEWAY_LEDGER_URL": database, "GATEWAY_DATA_DIR": str(tmp_path)}
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "gateway"), "report", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert Decimal(json.loads(cli.stdout)["totals"]["cost_usd"]) == charged
