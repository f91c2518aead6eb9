"""What the SQL ledgers share: one thread owns the blocking write connection (so a batch never
blocks the event loop, and writes never interleave), and the budget spend of each (tenant, day)
is cached and kept up to date from what each stored batch counted."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.ledger.base import Ledger, SpendKey
from gateway.ledger.spool import Spool

T = TypeVar("T")


class ThreadedLedger(Ledger):
    """A `Ledger` over a blocking database driver (sqlite3, psycopg)."""

    def __init__(self, spool: Spool, **options: Any) -> None:
        super().__init__(spool, **options)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ledger-{self.kind}")
        self._spend_cache: dict[SpendKey, int] = {}
        """Stored spend per (tenant, day), read from the store, then kept up to date."""

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the writer thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    def _on_stored(self, counted: Mapping[SpendKey, int]) -> None:
        for key, nanos in counted.items():
            if key in self._spend_cache:
                self._spend_cache[key] += nanos
