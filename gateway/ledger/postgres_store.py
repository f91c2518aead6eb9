"""The ledger on PostgreSQL: for deployments that outgrow one machine (several replicas, or
more history than Redis memory should hold); ``GATEWAY_LEDGER_URL=postgresql://...``.

The tables and the write transaction are in `gateway.ledger.postgres_schema`, the reads are
the SQLite ledger's (`gateway.ledger.sql_queries`, in the PostgreSQL dialect). Writes run in one
dedicated thread that owns the write connection (psycopg, synchronous: a batch is one COPY and
one transaction); reports, record pages and the CLI read through a small pool of connections
from other threads. A write that fails (the server is down, the schema is missing) sends its
batch and the ones after it to the spool until the database takes writes again
(`gateway.ledger.writer`); nothing is lost and nothing is counted twice.

Budgets: several replicas write here, so a budget check (only for a tenant with a budget)
reads the tenant's stored spend from the rollups (one indexed query on the reader pool, about
a millisecond) and adds what this replica has not stored yet, as the Redis ledger does with its
counters; what another replica has not stored yet (its last ~50 ms) is not seen. While the
database is down, the last spend read plus this replica's own is used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from gateway.ledger.base import SCAN_PAGE, Batch
from gateway.ledger.postgres_schema import check_schema, connect, connect_options, store_batch
from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group
from gateway.ledger.spool import Spool
from gateway.ledger.sql_queries import DIMS, POSTGRES, ReportQuery, records_after, spend_by_day
from gateway.ledger.threaded import ThreadedLedger

T = TypeVar("T")
log = logging.getLogger(__name__)


class PostgresLedger(ThreadedLedger):
    kind = "postgres"

    def __init__(
        self,
        url: str,
        spool: Spool,
        *,
        timeout_s: float = 5.0,
        max_readers: int = 4,
        **options: Any,
    ) -> None:
        super().__init__(spool, **options)
        self.url = url
        self.timeout_s = timeout_s
        self._conn: psycopg.Connection | None = None
        self._partitions: set[str] = set()
        """Monthly partitions known to exist."""
        self._readers = ConnectionPool(
            url,
            min_size=0,
            max_size=max_readers,
            kwargs={"autocommit": True, **connect_options(_whole_seconds(timeout_s))},
            open=False,
            timeout=timeout_s,
        )
        self._readers_open = threading.Lock()

    # -- the writer thread ------------------------------------------------------------------

    async def _open(self) -> None:
        await self._in_thread(self._connect)

    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = connect(self.url, _whole_seconds(self.timeout_s))
            try:
                check_schema(self.url)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _close(self) -> None:
        try:
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
            await asyncio.to_thread(self._readers.close)
        finally:
            self._thread.shutdown(wait=False, cancel_futures=True)

    async def _store(self, batch: Batch) -> None:
        await self._in_thread(self._write_sync, batch)

    def _write_sync(self, batch: Batch) -> None:
        conn = self._connect()
        try:
            counted = store_batch(conn, batch.records, self._partitions)
        except psycopg.Error:
            if conn.broken:
                conn.close()  # reconnect on the next write
            raise
        self._stored(batch, counted)

    # -- budget spend -----------------------------------------------------------------------

    async def _spend_nanos(self, tenant: str, days: range) -> int:
        if self._writer is not None and not self._up:
            return self._known_spend(tenant, days)  # a database that is down is not waited for
        try:
            stored = await asyncio.to_thread(self._read, spend_by_day, tenant, days, POSTGRES)
        except (psycopg.Error, OSError) as exc:
            log.warning("ledger: reading spend failed (%r); counting what is known", exc)
            return self._known_spend(tenant, days)
        with self._lock:
            for day in days:
                self._spend_cache[(tenant, day)] = stored.get(day, 0)
            return sum(stored.values()) + self.unstored.nanos_locked(tenant, days)

    def _known_spend(self, tenant: str, days: range) -> int:
        """The spend last read, plus what this replica stored since and has not stored yet."""
        with self._lock:
            cached = sum(self._spend_cache.get((tenant, day), 0) for day in days)
            return cached + self.unstored.nanos_locked(tenant, days)

    # -- reports and export (the reader pool) -----------------------------------------------

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
        query = ReportQuery(tagged, tenant, tag, by, POSTGRES)
        return await asyncio.to_thread(self._read, query.groups, since, until)

    async def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        after = (since, "")  # keyset paging on the index (time, request_id)
        while page := await asyncio.to_thread(
            self._read, records_after, after, until, SCAN_PAGE, POSTGRES
        ):
            yield page
            after = (page[-1].time, page[-1].request_id)

    def _read(self, query: Callable[..., T], *args: Any) -> T:
        """``query(conn, *args)`` on a connection of the reader pool (blocking)."""
        with self._readers_open:
            if self._readers.closed:
                self._readers.open(wait=False)
        with self._readers.connection() as conn:
            return query(conn, *args)


def _whole_seconds(timeout_s: float) -> int:
    """libpq takes whole seconds, at least 2 (1 is raised to 2 by libpq itself)."""
    return max(2, round(timeout_s))
