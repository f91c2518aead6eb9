"""The embedded ledger: one SQLite file (WAL), for a gateway that runs with no other service.

This module owns the connections and the threads; the tables and the write transaction are in
`gateway.ledger.sqlite_schema`, the reads in `gateway.ledger.sql_queries`.

Writes run in one dedicated thread that owns the write connection, and commit with
``synchronous=FULL`` (a batch is on disk when it counts as stored); reports open their own
read-only connection in another thread (WAL lets them read while the writer writes). Budget
spend is read once per (tenant, day) on the writer thread and then kept up to date from what
each batch counted, so a budget check reads no disk.

A write that fails (a full disk, a file locked by another process, a file that cannot be
opened) sends its batch, and the ones after it, to the spool until the file takes writes
again (`gateway.ledger.writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.ledger.base import SCAN_PAGE, Batch
from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group
from gateway.ledger.spool import Spool
from gateway.ledger.sql_queries import DIMS, ReportQuery, records_after, spend_by_day
from gateway.ledger.sqlite_schema import SCHEMA, store_batch
from gateway.ledger.threaded import ThreadedLedger
from gateway.sqlite_files import open_file

T = TypeVar("T")
log = logging.getLogger(__name__)


class SQLiteLedger(ThreadedLedger):
    kind = "sqlite"

    def __init__(self, path: Path, spool: Spool, **options: Any) -> None:
        super().__init__(spool, **options)
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def reader(self) -> sqlite3.Connection | None:
        """A new read-only connection to the file (the caller closes it); None before the file
        exists."""
        if not self.path.exists():
            return None
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    # -- the writer thread ------------------------------------------------------------------

    async def _open(self) -> None:
        await self._in_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = open_file(self.path, SCHEMA, synchronous="FULL", autocommit=True)
            conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: the indexes of millions of rows
            self._conn = conn
        return self._conn

    async def _close(self) -> None:
        try:
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
        finally:
            # A write stuck past the grace (a locked file) ends on its own; don't wait for it.
            self._thread.shutdown(wait=False, cancel_futures=True)

    async def _store(self, batch: Batch) -> None:
        await self._in_thread(self._write_sync, batch)

    def _write_sync(self, batch: Batch) -> None:
        counted = store_batch(self._connect(), batch.records)
        self._stored(batch, counted)

    # -- budget spend -----------------------------------------------------------------------

    async def _spend_nanos(self, tenant: str, days: range) -> int:
        with self._lock:
            if all((tenant, day) in self._spend_cache for day in days):
                return self._cached_spend(tenant, days)
        if self._conn is None:  # not started (a CLI): read the file as it is
            stored = await asyncio.to_thread(self._read, {}, spend_by_day, tenant, days)
            with self._lock:
                return sum(stored.values()) + self.unstored.nanos_locked(tenant, days)
        # On the writer thread, so no batch commits between the read and the caching.
        try:
            await self._in_thread(self._load_spend, tenant, days)
        except sqlite3.Error as exc:
            log.warning("ledger: reading spend failed (%r); counting what is known", exc)
            with self._lock:
                known = sum(self._spend_cache.get((tenant, day), 0) for day in days)
                return known + self.unstored.nanos_locked(tenant, days)
        with self._lock:
            return self._cached_spend(tenant, days)

    def _cached_spend(self, tenant: str, days: range) -> int:
        cached = sum(self._spend_cache[(tenant, day)] for day in days)
        return cached + self.unstored.nanos_locked(tenant, days)

    def _load_spend(self, tenant: str, days: range) -> None:
        stored = spend_by_day(self._connect(), tenant, days)
        with self._lock:
            for day in days:
                self._spend_cache.setdefault((tenant, day), stored.get(day, 0))

    # -- reports and export (read-only connections) -----------------------------------------

    async def _groups(
        self,
        since: float,
        until: float,
        *,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...] = DIMS,
    ) -> list[Group]:
        query = ReportQuery(tagged, tenant, tag, by)
        return await asyncio.to_thread(self._read, [], query.groups, since, until)

    async def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        after = (since, "")  # keyset paging on the primary key (time, request_id)
        while page := await asyncio.to_thread(self._page, after, until):
            yield page
            after = (page[-1].time, page[-1].request_id)

    def records(self, since: float = 0.0, until: float = float("inf")) -> list[LedgerRecord]:
        """Stored records by time, for export and calibration (blocking)."""
        return self._read([], records_after, (since, ""), until)

    def _page(self, after: tuple[float, str], until: float) -> list[LedgerRecord]:
        return self._read([], records_after, after, until, SCAN_PAGE)

    def _read(self, empty: T, query: Callable[..., T], *args: Any) -> T:
        """``query(conn, *args)`` on a new read-only connection; ``empty`` before the file
        exists."""
        conn = self.reader()
        if conn is None:
            return empty
        with contextlib.closing(conn):
            return query(conn, *args)
