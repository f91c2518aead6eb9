"""The ledger's write path: the in-memory queue, the writer task, the spool, and shutdown.

On the request path `Writer.record` only appends to a queue (a few microseconds); one writer
task moves the queue to the store in batches, off the event loop. Where a record is at any
moment, and what a crash of the process (or the machine) loses:

- **stored**: committed (SQLite with ``synchronous=FULL``; Redis acknowledged the write, which
  is as durable as that Redis's persistence) — kept;
- **spooled**: appended and ``fsync``'d to this replica's spool (`gateway.ledger.spool`) —
  kept, and stored when the store answers again, once (stores are idempotent by request id);
- **queued** or **in flight** in memory — lost by a crash. Each record leaves the queue within
  ``flush_interval_s`` plus one store write of at most ``store_timeout_s``; the queue never
  holds more than ``max_queued`` records (past it, the oldest are spooled at once, off the
  writer), so a crash loses at most ``max_queued + max_batch`` records, and in steady state
  the records of the last ``flush_interval_s`` or so.

A batch the store fails (an error, or no answer within ``store_timeout_s``) goes to the spool,
and so do the batches after it without trying the store, until a retry (backoff 0.1 s doubling
to 5 s) replays the spool into the store; a store that works again first gets the spool, then
new batches. When the spool's disk fails too, a batch stays queued and is retried; only then,
past ``max_queued``, are the oldest records given up, logged one by one and counted in
``lost`` (memory stays bounded: nothing is left that could keep them).

Budgets need spend that includes what is not stored yet: each ledger counts what it accepted
until it is stored, once (`gateway.ledger.spend`); a write that lands after its batch was
spooled only updates the store, so the spend is briefly counted twice (too high), never too low.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import ClassVar

from gateway.ledger.record import LedgerRecord
from gateway.ledger.spend import Batch, SpendKey, UnstoredSpend
from gateway.ledger.spool import Spool

log = logging.getLogger(__name__)


class Writer(abc.ABC):
    """The queue and writer every store shares; the store implements `_open`, `_store` and
    `_close`."""

    kind: ClassVar[str]

    def __init__(
        self,
        spool: Spool,
        *,
        flush_interval_s: float = 0.05,
        max_batch: int = 500,
        max_queued: int = 10_000,
        store_timeout_s: float = 5.0,
    ) -> None:
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_queued = max(max_queued, 1)
        self.store_timeout_s = store_timeout_s
        self.lost = 0
        """Records given up because the store and the spool's disk both failed."""
        self._queue: deque[LedgerRecord] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._spill: asyncio.Task[None] | None = None
        self._inflight: Batch | None = None
        self._closing = False
        self._hurry = False
        self._flushed: list[asyncio.Future[None]] = []
        self.unstored = UnstoredSpend()
        self._lock = self.unstored.lock  # the stores' spend caches change under it too
        self._up = True
        self._retry_at = 0.0
        self._backoff = 0.0
        self._spool_retry_at = 0.0

    # -- the request path -------------------------------------------------------------------

    def record(self, record: LedgerRecord) -> None:
        """Queue a record for writing; never blocks, never fails."""
        self._queue.append(record)
        self.unstored.add([record])
        if not self._wake.is_set():
            self._wake.set()
        if len(self._queue) > self.max_queued:
            self._over_bound()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Take this replica's spool (adopting those of replicas that are gone), open the
        store, replay the spool, and start the writer. A store that fails to open is retried
        by the writer; records are spooled meanwhile."""
        if self._writer is not None:
            return
        try:
            await asyncio.to_thread(self.spool.acquire)
            await asyncio.to_thread(self._count_spooled)
        except OSError as exc:  # the data volume: the store may still work; appends retry it
            log.error("ledger: the spool in %s cannot be used: %r", self.spool.directory, exc)
        try:
            await self._open()
            if self.spool.count():
                await self._replay()
        except Exception as exc:
            self._down(exc)
        self._writer = asyncio.create_task(self._run(), name=f"ledger-writer-{self.kind}")

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) until every record queued so far has been written or
        spooled."""
        if self._writer is None or self._writer.done():
            return
        if not (self._queue or self._inflight or self._spill):
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushed.append(done)
        self._hurry = True
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), timeout_s)

    async def aclose(self, grace_s: float = 10.0) -> None:
        """Write everything queued to the store, else to the spool, then close; returns within
        about ``grace_s`` however the store behaves.

        The writer gets the grace less a reserve (a quarter, at most 1 s); what it has not
        written by then (the queue, and a batch the store is still working on) is spooled in
        the reserve, and a write that lands later is counted once on replay.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self._closing = True
        self._wake.set()
        if self._writer is None:
            if self._queue:
                await self._close_unstarted(deadline)
        else:
            await self._finish_writer(deadline - min(1.0, grace_s / 4))
        await self._spool_leftover(deadline)
        try:
            async with asyncio.timeout_at(max(deadline, loop.time() + 0.1)):
                await self._close()
        except TimeoutError:
            log.warning("ledger: the %s store did not close within the grace; left open", self.kind)
        await asyncio.to_thread(self.spool.release)

    async def _finish_writer(self, until: float) -> None:
        assert self._writer is not None
        pending = {self._writer} | ({self._spill} if self._spill else set())
        timeout = max(0.0, until - asyncio.get_running_loop().time())
        await asyncio.wait(pending, timeout=timeout)
        if not self._writer.done():
            log.warning("ledger: the writer did not finish within the grace; spooling the rest")
            self._up, self._retry_at = False, float("inf")  # no more store attempts
            with self._lock:
                batch = self._inflight
                if batch is not None and batch.spooling:
                    log.error(
                        "ledger: %d records are in the spool only if its write completes",
                        len(batch.records),
                    )
                elif batch is not None and not batch.settled:
                    batch.settle = False
                    self._queue.extendleft(reversed(batch.records))  # its spooled copy settles it
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._writer = None

    async def _spool_leftover(self, deadline: float) -> None:
        records = list(self._queue)
        self._queue.clear()
        loop = asyncio.get_running_loop()
        if records:
            try:
                async with asyncio.timeout_at(max(deadline, loop.time() + 0.1)):
                    await self._to_spool(records)
            except Exception as exc:
                self._lose(records, f"spooling at shutdown failed ({exc!r})")
        if self._spill is not None:
            done, _ = await asyncio.wait({self._spill}, timeout=max(0.1, deadline - loop.time()))
            if not done:
                log.error(
                    "ledger: the spool's disk did not answer within the grace: the last "
                    "records handed to it are in the spool only if its write completes"
                )
        self._release_flushers()

    async def _close_unstarted(self, deadline: float) -> None:
        records = list(self._queue)
        with contextlib.suppress(Exception):
            async with asyncio.timeout_at(deadline):
                await asyncio.to_thread(self.spool.acquire)  # never another live one's files
                await self._open()
                if await self._try_store(Batch(records)):
                    self._queue.clear()

    # NOTE: the writer. It sleeps until a record arrives, then waits flush_interval_s so that
    # the records of that interval form one batch (one SQLite transaction, one Redis
    # pipeline), then writes the queue in batches of max_batch until it is empty: to the store
    # while it works (replaying the spool first when the spool has records), to the spool
    # while it does not, trying the store again at `_retry_at`. A batch that neither takes
    # goes back to the head of the queue and is retried (the spool's disk after 0.1 s to 5 s).
    # While idle with a spool, it wakes at `_retry_at` to replay it.
    async def _run(self) -> None:
        spool_backoff = 0.0
        while True:
            if not self._queue and self._spill is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._spill)
            if not self._queue:
                self._release_flushers()
                if self._closing:
                    return
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._idle_timeout())
                except TimeoutError:
                    await self._retry_spool()
                    continue
                if not (self._closing or self._hurry):
                    await asyncio.sleep(self.flush_interval_s)
                continue
            count = min(self.max_batch, len(self._queue))
            batch = self._inflight = Batch([self._queue.popleft() for _ in range(count)])
            try:
                if not await self._try_store(batch):
                    batch.spooling = True
                    await self._to_spool(batch.records)
                spool_backoff = 0.0
            except Exception as exc:
                log.error("ledger: the store and the spool both failed (%r); retrying", exc)
                self._queue.extendleft(reversed(batch.records))
                self._spool_failed()
                self._drop_over_bound()
                spool_backoff = min(5.0, max(0.1, spool_backoff * 2))
                await asyncio.sleep(spool_backoff)
            finally:
                self._inflight = None

    async def _try_store(self, batch: Batch) -> bool:
        """Store a batch (the spool first) unless the store is down; False: spool it."""
        if not self._up and (self._closing or time.monotonic() < self._retry_at):
            return False
        try:
            if self.spool.count():
                await self._replay()
            await self._store_in_time(batch)
        except Exception as exc:
            self._down(exc)
            return False
        self._back_up()
        return True

    async def _store_in_time(self, batch: Batch) -> None:
        try:
            await asyncio.wait_for(self._store(batch), self.store_timeout_s)
        except BaseException:
            with self._lock:
                if batch.settled:
                    return  # it landed as the timeout struck: stored, not to be spooled
                batch.settle = False
            raise
        if batch.settle and not batch.settled:
            self._stored(batch, {})

    async def _replay(self) -> None:
        """Store every record of this replica's spool, file by file; raises when the store
        fails (the file stays, and is sent again: stores skip what they already have)."""
        for path in await asyncio.to_thread(self.spool.claim):
            records = await asyncio.to_thread(self.spool.read, path)
            for start in range(0, len(records), self.max_batch):
                chunk = Batch(records[start : start + self.max_batch], settle=False)
                await asyncio.wait_for(self._store(chunk), self.store_timeout_s)
            await asyncio.to_thread(self.spool.remove, path, len(records))
            self.unstored.settle(records)
            log.info("ledger: replayed %d spooled records from %s", len(records), path.name)

    async def _retry_spool(self) -> None:
        if self.spool.count() and (self._up or time.monotonic() >= self._retry_at):
            try:
                await self._replay()
            except Exception as exc:
                self._down(exc)
            else:
                self._back_up()

    def _idle_timeout(self) -> float | None:
        if not self.spool.count():
            return None
        return max(0.05, self._retry_at - time.monotonic())

    def _down(self, exc: BaseException) -> None:
        if self._up:
            log.warning("ledger: the %s store failed (%r); spooling records", self.kind, exc)
        self._up = False
        self._backoff = min(5.0, max(0.1, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff

    def _back_up(self) -> None:
        if not self._up:
            log.warning("ledger: the %s store is back", self.kind)
        self._up, self._backoff = True, 0.0

    # -- the spool and the queue's bound ----------------------------------------------------

    async def _to_spool(self, records: list[LedgerRecord]) -> None:
        await asyncio.to_thread(self.spool.append, records)

    def _over_bound(self) -> None:
        if self._spill is not None or self._writer is None:
            return  # spilling already; or not started, and aclose spools the queue
        if time.monotonic() < self._spool_retry_at:
            self._drop_over_bound()
        else:
            self._spill = asyncio.get_running_loop().create_task(self._spill_over())

    async def _spill_over(self) -> None:
        """Spool the oldest records until the queue is down to half its bound."""
        try:
            while len(self._queue) > self.max_queued // 2:
                count = min(len(self._queue) - self.max_queued // 2, 4 * self.max_batch)
                chunk = [self._queue.popleft() for _ in range(count)]
                try:
                    await self._to_spool(chunk)
                except Exception as exc:
                    log.error("ledger: the queue is full and the spool failed (%r)", exc)
                    self._queue.extendleft(reversed(chunk))
                    self._spool_failed()
                    self._drop_over_bound()
                    return
        finally:
            self._spill = None

    def _spool_failed(self) -> None:
        self._spool_retry_at = time.monotonic() + 1.0

    def _drop_over_bound(self) -> None:
        excess = len(self._queue) - self.max_queued
        if excess > 0:
            lost = [self._queue.popleft() for _ in range(excess)]
            self._lose(lost, "the queue is full and neither the store nor the spool takes it")

    def _lose(self, records: list[LedgerRecord], why: str) -> None:
        if not records:
            return
        self.lost += len(records)
        self.unstored.settle(records)
        lost_ids = ", ".join(record.request_id for record in records)
        log.critical("ledger: LOST %d records (%s): %s", len(records), why, lost_ids)

    def _count_spooled(self) -> None:
        """At start: what this replica's spool holds counts as unstored spend until replayed."""
        for records in self.spool.pending():
            self.unstored.add(records)

    def _release_flushers(self) -> None:
        self._hurry = False
        for done in self._flushed:
            if not done.done():
                done.set_result(None)
        self._flushed.clear()

    # -- "unstored" spend -------------------------------------------------------------------

    def _stored(self, batch: Batch, counted: Mapping[SpendKey, int]) -> None:
        """The store wrote ``batch`` (possibly on its own thread): ``counted`` is the cost it
        newly counted per key (duplicates excluded), for stores that cache spend."""
        with self._lock:
            self._on_stored(counted)
            if batch.settle and not batch.settled:
                batch.settled = True
                self.unstored.settle_locked(batch.records)

    def _on_stored(self, counted: Mapping[SpendKey, int]) -> None:  # noqa: B027
        """Called with ``self._lock`` held; nothing to do unless a store caches spend."""

    # -- what each store implements ---------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _store(self, batch: Batch) -> None:
        """Store ``batch.records`` idempotently by request id, then call `_stored`; raise when
        the store fails. It may be cancelled (a timeout) and still land: stores that write
        in a thread call `_stored` from there."""
