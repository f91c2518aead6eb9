"""The server's own bound on work: so many requests at once, so many waiting, the rest refused.

An overloaded gateway that accepts everything answers nobody in time; one that refuses what it
cannot start soon answers the rest, and tells the refused when to come back (503 with
Retry-After), so that clients and load balancers go elsewhere instead of timing out.

NOTE: the algorithm. ``active`` counts the requests running under the limit. A request enters
at once while ``active`` is below the limit and nobody waits (first come, first served); else it
waits in a FIFO queue of futures, if the queue has room, for at most the policy's
``queue_timeout_s``; else it is refused at once. A request that leaves hands its place straight
to the oldest waiter (``active`` is unchanged), or frees it. The limits are read per request
from the policy in force, so a reload changes them; a request admitted while no limit was set
is not counted (its `Ticket` says so), and does not give anything back.
"""

from __future__ import annotations

import asyncio
from collections import deque

from gateway.errors import Overloaded
from gateway.policy.limits import Limits

RETRY_AFTER_S = 1


class Gate:
    """One per process; every request that a limit applies to enters and leaves it."""

    def __init__(self) -> None:
        self.active = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for waiter in self._waiting if not waiter.done())

    async def enter(self, limits: Limits) -> bool:
        """Wait for a place; True when one was taken (`leave` must follow), False when the
        policy sets no limit. Raises `Overloaded` when the queue is full or the wait too long."""
        limit = limits.max_concurrent_requests
        if limit is None:
            return False
        if self.active < limit and not self._waiting:
            self.active += 1
            return True
        if len(self._waiting) >= limits.max_queued:
            raise _overloaded(f"{self.active} requests are running and {limits.max_queued} wait")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, limits.queue_timeout_s)
        except TimeoutError:
            self._forget(waiter)
            raise _overloaded(
                f"no place freed up within {limits.queue_timeout_s:g} s in the queue"
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # a place was handed over just as the wait ended: pass it on
            self._forget(waiter)
            raise
        return True

    def leave(self) -> None:
        """Give the place to the oldest waiter, or free it."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)


def _overloaded(why: str) -> Overloaded:
    return Overloaded(
        f"The gateway is overloaded ({why}); try again shortly.",
        headers={"retry-after": str(RETRY_AFTER_S)},
    )
