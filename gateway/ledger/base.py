"""The ledger interface that both stores implement: reports, budget spend and health, on top
of the write path every store shares (`gateway.ledger.writer`: the queue, the writer task, the
spool, shutdown, and what a crash can lose).

Budgets need spend that includes what is not stored yet, so each ledger adds the cost of the
records it accepted but has not stored (queued, in flight, or spooled) to what the store says
(`spend`).

`gateway.ledger.store.open_ledger` picks the store; the stores (`sqlite_store`,
`redis_store`) import this module, and this module imports neither.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

from gateway.errors import GatewayError
from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import Group, Report, batch_groups, fold
from gateway.ledger.spend import Batch, SpendKey
from gateway.ledger.sums import day_of, from_nanos
from gateway.ledger.writer import Writer

__all__ = ["SCAN_PAGE", "Batch", "Ledger", "LedgerUnavailable", "SpendKey"]

log = logging.getLogger(__name__)

SCAN_PAGE = 1000
"""Records per page of `Ledger.scan`."""


class LedgerUnavailable(GatewayError):
    """The ledger's store cannot answer a report now (Redis down)."""

    status = 503
    type = "api_error"
    default_code = "ledger_unavailable"
    log_level = logging.WARNING


class Ledger(Writer):
    """Where request records go, and where reports and budget spend come from."""

    async def spend(self, tenant: str, since: float) -> Decimal:
        """The tenant's cost from the UTC day of ``since`` to now, unstored records included.

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

        ``tag`` (``"k=v"``) keeps only the records with that tag. ``batch`` groups the lines of
        each batch (`batch_groups`: the tag groups of the reserved batch tag).
        """
        since, until = self._window(since, until)
        by = tuple(by)
        grouped = tuple("tag" if name == "batch" else name for name in by)
        tagged = "tag" in grouped or tag is not None
        rows = await self._groups(since, until, tagged=tagged, tenant=tenant, tag=tag, by=grouped)
        if "batch" in by:
            rows = batch_groups(rows)
        totals = None
        if "tag" in grouped and tag is None:  # a record with several tags: count it once
            totals = await self._groups(since, until, tagged=False, tenant=tenant, tag=None, by=())
        return fold(rows, totals, since=since, until=until, by=by, tenant=tenant, tag=tag)

    @abc.abstractmethod
    def scan(self, since: float, until: float) -> AsyncIterator[list[LedgerRecord]]:
        """The stored records of requests that arrived in ``[since, until)``, a page of at most
        `SCAN_PAGE` at a time: a week of traffic is never held in memory at once (for
        calibration and export; not for the request path)."""

    def health(self) -> dict[str, Any]:
        """For /readyz: the store, whether it takes writes, and how far behind the writer is."""
        return {
            "ledger": self.kind,
            self.kind: "up" if self._up else "down",
            "queued": len(self._queue),
            "spooled": self.spool.count(),
            "lost": self.lost,
        }

    def _window(self, since: float, until: float) -> tuple[float, float]:
        """The period a store can report exactly; the SQLite store is exact to the second."""
        return since, until

    # -- what each store implements ---------------------------------------------------------

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
