"""The ledger interface that both stores implement, and its background writer.

On the request path `Ledger.record` only appends to an in-memory queue (a few microseconds);
one writer task per ledger moves the queue to the store in batches, off the event loop. A
record is never dropped: a failed batch goes back to the head of the queue and is retried
with backoff, a store that cannot take it sends it to the spool (`gateway.ledger.spool`), and
`aclose` writes everything still queued before it returns.

Budgets need spend that includes what is still queued, so each ledger keeps, per
(tenant, UTC day), the cost of the records it accepted but has not stored yet, and adds it to
what the store says (`spend`).

`gateway.ledger.store.open_ledger` picks the store; the stores (`sqlite_store`,
`redis_store`) import this module, and this module imports neither.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from gateway.errors import GatewayError
from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group, Report, fold
from gateway.ledger.spool import Spool
from gateway.ledger.sums import day_of, from_nanos, to_nanos

log = logging.getLogger(__name__)

SCAN_PAGE = 1000
"""Records per page of `Ledger.scan`."""
SpendKey = tuple[str, int]
"""(tenant, UTC day number)."""


class LedgerUnavailable(GatewayError):
    """The ledger's store cannot answer a report now (Redis down)."""

    status = 503
    type = "api_error"
    default_code = "ledger_unavailable"
    log_level = logging.WARNING


class Ledger(abc.ABC):
    """Where request records go, and where reports and budget spend come from."""

    kind: ClassVar[str]

    def __init__(self, spool: Spool, *, flush_interval_s: float = 0.05, max_batch: int = 500):
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self._queue: deque[LedgerRecord] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._hurry = False
        self._busy = False
        self._flushed: list[asyncio.Future[None]] = []
        self._lock = threading.Lock()  # the spend counters are also updated in store threads
        self._unstored: dict[SpendKey, int] = {}

    # -- the request path -------------------------------------------------------------------

    def record(self, record: LedgerRecord) -> None:
        """Queue a record for writing; never blocks, never fails, never drops it."""
        self._queue.append(record)
        if record.cost_usd is not None:
            key = (record.tenant, day_of(record.time))
            nanos = to_nanos(record.cost_usd)
            with self._lock:
                self._unstored[key] = self._unstored.get(key, 0) + nanos
        if not self._wake.is_set():
            self._wake.set()

    async def spend(self, tenant: str, since: float) -> Decimal:
        """The tenant's cost from the UTC day of ``since`` to now, queued records included.

        Day granularity: ``since`` counts from the start of its UTC day, which is exact for
        daily and calendar-month budgets.
        """
        days = range(day_of(since), day_of(time.time()) + 1)
        return from_nanos(await self._spend_nanos(tenant, days))

    # -- reports and health -----------------------------------------------------------------

    async def report(
        self,
        since: float,
        until: float,
        by: Sequence[str] = (),
        tenant: str | None = None,
        tag: str | None = None,
    ) -> Report:
        """Totals and rows grouped by ``by`` over ``[since, until)``; see `gateway.ledger.report`.

        ``tag`` (``"k=v"``) keeps only the records with that tag.
        """
        since, until = self._window(since, until)
        by = tuple(by)
        tagged = "tag" in by or tag is not None
        rows = await self._groups(since, until, tagged=tagged, tenant=tenant, tag=tag, by=by)
        totals = None
        if "tag" in by and tag is None:  # a record with several tags: count it once in totals
            totals = await self._groups(since, until, tagged=False, tenant=tenant, tag=None, by=())
        return fold(rows, totals, since=since, until=until, by=by, tenant=tenant, tag=tag)

    @abc.abstractmethod
    def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        """The stored records of requests that arrived in ``[since, until)``, a page of at most
        `SCAN_PAGE` at a time: a week of traffic is never held in memory at once (for
        calibration and export; not for the request path)."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """For /readyz: the store, and how far behind the writer is."""

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start the writer (which first replays any spool left over)."""
        if self._writer is None:
            await self._open()
            self._writer = asyncio.create_task(self._run(), name=f"ledger-writer-{self.kind}")

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until every record queued so far has been written."""
        if self._writer is None or self._writer.done() or not (self._queue or self._busy):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushed.append(done)
        self._hurry = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), timeout_s)

    async def aclose(self) -> None:
        """Write everything still queued (to the store, else to the spool), then close."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        elif self._queue:
            await self._write_or_spool(list(self._queue))
            self._queue.clear()
        await self._close()

    # NOTE: the writer. It sleeps until a record arrives, then waits flush_interval_s so that
    # the records of that interval form one batch (one SQLite transaction, one Redis
    # pipeline), then writes the queue in batches of max_batch until it is empty. A failed
    # batch goes back to the head of the queue and is retried with backoff (0.05 s doubling
    # to 5 s); when closing, it goes to the spool instead (and only if the spool's disk fails
    # too, three times, is it given up, logged record by record). While idle, it wakes every
    # `_idle_timeout` seconds for the store's upkeep (Redis: replay the spool when Redis is
    # back).
    async def _run(self) -> None:
        backoff, failures = 0.0, 0
        while True:
            if not self._queue:
                self._release_flushers()
                if self._closing:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                except TimeoutError:
                    try:
                        await self._upkeep()
                    except Exception:
                        log.exception("ledger: upkeep failed; trying again later")
                    continue
                if not (self._closing or self._hurry):
                    await asyncio.sleep(self.flush_interval_s)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._busy = True
            try:
                if self._closing:
                    await self._write_or_spool(batch)
                else:
                    await self._write(batch)
                backoff, failures = 0.0, 0
            except Exception:
                failures += 1
                if self._closing and failures >= 3:
                    # Both the store and the spool's disk failed at shutdown: nothing is left
                    # to write to. Say exactly what is lost rather than hang the shutdown.
                    log.critical(
                        "ledger: LOST %d records (store and spool both failed): %s",
                        len(batch),
                        ", ".join(record.request_id for record in batch),
                    )
                    continue
                log.exception("ledger: writing %d records failed; retrying", len(batch))
                self._queue.extendleft(reversed(batch))
                backoff = min(5.0, max(0.05, backoff * 2))
                await asyncio.sleep(backoff)
            finally:
                self._busy = False

    async def _write_or_spool(self, batch: list[LedgerRecord]) -> None:
        try:
            await self._write(batch)
        except Exception:
            log.exception("ledger: store failed at shutdown; spooling %d records", len(batch))
            await asyncio.to_thread(self.spool.append, batch)

    def _release_flushers(self) -> None:
        self._hurry = False
        for done in self._flushed:
            if not done.done():
                done.set_result(None)
        self._flushed.clear()

    def _stored(self, records: Iterable[LedgerRecord], counted: Mapping[SpendKey, int]) -> None:
        """Records left the queue for the store: move their cost from "unstored" to stored.

        ``counted`` is the cost the store newly counted (duplicates excluded) per key; stores
        that cache spend override `_on_stored` to add it to their cache under the same lock.
        """
        with self._lock:
            for record in records:
                if record.cost_usd is None:
                    continue
                key = (record.tenant, day_of(record.time))
                left = self._unstored.get(key, 0) - to_nanos(record.cost_usd)
                if left:
                    self._unstored[key] = left
                else:
                    self._unstored.pop(key, None)
            self._on_stored(counted)

    def _on_stored(self, counted: Mapping[SpendKey, int]) -> None:  # noqa: B027
        """Called with ``self._lock`` held; nothing to do unless a store caches spend."""

    def _unstored_nanos(self, tenant: str, days: Iterable[int]) -> int:
        """Call with ``self._lock`` held."""
        return sum(self._unstored.get((tenant, day), 0) for day in days)

    def _window(self, since: float, until: float) -> tuple[float, float]:
        """The period a store can report exactly; the SQLite store is exact to the second."""
        return since, until

    # -- what each store implements ---------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _write(self, batch: list[LedgerRecord]) -> None:
        """Store a batch (idempotent by request_id) or spool it; call `_stored` for what landed."""

    @abc.abstractmethod
    async def _spend_nanos(self, tenant: str, days: range) -> int: ...

    @abc.abstractmethod
    async def _groups(
        self,
        since: float,
        until: float,
        *,
        tagged: bool,
        tenant: str | None,
        tag: str | None,
        by: tuple[str, ...],
    ) -> list[Group]:
        """Group sums over the period; a store may pre-aggregate over columns not in ``by``."""

    def _idle_timeout(self) -> float | None:
        return None

    async def _upkeep(self) -> None:
        return None
