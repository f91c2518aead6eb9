"""Spend a ledger accepted but has not stored yet, per (tenant, UTC day), for budgets; and the
`Batch` whose write settles it.

Budgets read the store's spend plus this, so a record counts from the moment it is accepted
(queued, in flight, or spooled) to the moment it is stored, and exactly once: a record leaves
"unstored" when the store's write of its batch returns in time, or when the spool file holding
it has been replayed (see `gateway.ledger.writer`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from gateway.ledger.record import LedgerRecord
from gateway.ledger.sums import day_of, to_nanos

SpendKey = tuple[str, int]
"""(tenant, UTC day number)."""


class Batch:
    """Records on their way to the store, and whether the store's write may settle them."""

    __slots__ = ("records", "settle", "settled", "spooling")

    def __init__(self, records: list[LedgerRecord], *, settle: bool = True) -> None:
        self.records = records
        self.settle = settle
        """False for a replayed chunk (its file settles) and for a batch whose spooled copy
        will settle it (the write failed or ran late)."""
        self.settled = False
        self.spooling = False


class UnstoredSpend:
    """Nano-dollars per `SpendKey`; ``lock`` guards it (store threads settle batches too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._nanos: dict[SpendKey, int] = {}

    def __len__(self) -> int:
        """How many (tenant, day) keys have spend not stored yet."""
        with self.lock:
            return len(self._nanos)

    def add(self, records: Iterable[LedgerRecord]) -> None:
        with self.lock:
            for record in records:
                if record.cost_usd is not None:
                    key = (record.tenant, day_of(record.time))
                    self._nanos[key] = self._nanos.get(key, 0) + to_nanos(record.cost_usd)

    def settle(self, records: Iterable[LedgerRecord]) -> None:
        with self.lock:
            self.settle_locked(records)

    def settle_locked(self, records: Iterable[LedgerRecord]) -> None:
        """`settle`, with ``lock`` already held."""
        for record in records:
            if record.cost_usd is None:
                continue
            key = (record.tenant, day_of(record.time))
            left = self._nanos.get(key, 0) - to_nanos(record.cost_usd)
            if left:
                self._nanos[key] = left
            else:
                self._nanos.pop(key, None)

    def nanos_locked(self, tenant: str, days: Iterable[int]) -> int:
        """The tenant's unstored spend on ``days``; call with ``lock`` held."""
        return sum(self._nanos.get((tenant, day), 0) for day in days)
