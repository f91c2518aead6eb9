"""Who holds the engine's batch slots: requests in order of priority, then of arrival.

A request carries a ``priority`` (vLLM's request field: lower runs first, 0 by default). The
gateway sends batch lines with a higher number than live requests, so live requests are not
slowed down by work that can wait.

NOTE: the rules.

- A request takes a slot when one is free and no request of a better (lower) priority is
  waiting or running; among equals, the first to ask goes first.
- A running request is *outranked* while a request of a better priority waits or runs. The
  engine then pauses it at its next token: it gives its slot back (and its KV cache blocks:
  the backend request is cancelled) and asks again, to go on from the tokens it had generated,
  once nothing better is left. On a CPU, where a decode step of 33 sequences costs far more
  than one of a single sequence, this is what keeps a live request as fast as it is alone; the
  price is the recompute of a paused request's prompt and tokens when it resumes (vLLM's
  preemption by recompute).

Everything here runs on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Callable


class PriorityGate:
    """``slots`` places, handed out by priority then arrival (see the module docstring)."""

    def __init__(self, slots: int, on_change: Callable[[], None] = lambda: None) -> None:
        self.slots = slots
        self._on_change = on_change
        """Called after the running or waiting counts change (the engine's gauges)."""
        self._running: Counter[int] = Counter()
        self._waiting: Counter[int] = Counter()
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def running(self) -> int:
        return self._running.total()

    @property
    def waiting(self) -> int:
        return self._waiting.total()

    def full(self) -> bool:
        return self.running >= self.slots

    def outranked(self, priority: int) -> bool:
        """A request of a better priority than ``priority`` waits or runs."""
        return any(p < priority for p in (*self._running, *self._waiting))

    async def acquire(self, priority: int) -> None:
        """Wait for a slot by the rules; cancelling the wait gives up the place in line."""
        if not self._queue and not self.full() and not self.outranked(priority):
            self._running[priority] += 1
            self._on_change()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._order), waiter))
        self._waiting[priority] += 1
        self._on_change()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # admitted as it was cancelled
                self.release(priority)
            raise
        finally:
            self._drop_waiting(priority)

    def release(self, priority: int) -> None:
        """Give a slot back; the next in line may take it."""
        self._running[priority] -= 1
        if not self._running[priority]:
            del self._running[priority]
        self._admit()
        self._on_change()

    def _drop_waiting(self, priority: int) -> None:
        self._waiting[priority] -= 1
        if not self._waiting[priority]:
            del self._waiting[priority]
        self._admit()  # the head may have been outranked only by this one
        self._on_change()

    def _admit(self) -> None:
        while self._queue and not self.full():
            priority, _, waiter = self._queue[0]
            if waiter.done():  # its wait was cancelled
                heapq.heappop(self._queue)
                continue
            if any(p < priority for p in self._running):
                return
            heapq.heappop(self._queue)
            self._running[priority] += 1
            waiter.set_result(None)
