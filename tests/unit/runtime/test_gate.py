"""The server's gate: so many at once, so many waiting in order, the rest refused at once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import Overloaded
from gateway.policy.limits import Limits
from gateway.runtime.gate import Gate


async def test_no_limit_counts_nothing() -> None:
    gate = Gate()
    assert await gate.enter(Limits()) is False
    assert gate.active == 0


async def test_past_the_queue_a_request_is_refused_at_once() -> None:
    gate, limits = Gate(), Limits(max_concurrent_requests=1, max_queued=1)
    assert await gate.enter(limits)
    waiting = asyncio.create_task(gate.enter(limits))
    await asyncio.sleep(0)
    assert gate.queued == 1
    with pytest.raises(Overloaded) as caught:
        await gate.enter(limits)
    assert caught.value.status_code == 503
    assert caught.value.headers == {"retry-after": "1"}
    gate.leave()  # handed to the waiter
    assert await waiting is True
    assert (gate.active, gate.queued) == (1, 0)
    gate.leave()
    assert gate.active == 0


async def test_waiters_go_in_order_and_one_that_leaves_the_queue_is_forgotten() -> None:
    gate, limits = Gate(), Limits(max_concurrent_requests=1, max_queued=3)
    await gate.enter(limits)
    order: list[str] = []

    async def wait(name: str) -> None:
        await gate.enter(limits)
        order.append(name)

    first, gone, last = (asyncio.create_task(wait(n)) for n in ("first", "gone", "last"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    gate.leave()
    await first
    gate.leave()
    await last
    assert order == ["first", "last"]
    assert gate.active == 1


async def test_a_wait_past_the_queue_timeout_is_refused() -> None:
    gate, limits = Gate(), Limits(max_concurrent_requests=1, max_queued=1, queue_timeout_s=0.01)
    await gate.enter(limits)
    with pytest.raises(Overloaded):
        await gate.enter(limits)
    assert gate.queued == 0
