"""Priority scheduling: `PriorityGate` alone, then the engine pausing a batch request (priority 1)
for a live one (0) with the real SmolLM2 on the CPU."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from local_engine.scheduling import PriorityGate
from tests.engine.conftest import LONG_PROMPT, PROMPTS, Smol
from tests.engine.test_engine import collect_rest, greedy, text_of, wait_for


async def test_slots_go_by_priority_then_arrival() -> None:
    gate = PriorityGate(1)
    await gate.acquire(0)
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release(priority)

    tasks = []
    for name, priority in (("batch-a", 1), ("batch-b", 1), ("live", 0), ("later", 2)):
        tasks.append(asyncio.create_task(take(name, priority)))
        await asyncio.sleep(0)  # each one queues before the next
    assert gate.waiting == 4
    gate.release(0)
    await asyncio.gather(*tasks)
    assert order == ["live", "batch-a", "batch-b", "later"]
    assert (gate.running, gate.waiting) == (0, 0)


async def test_a_worse_priority_waits_for_a_better_one_even_with_free_slots() -> None:
    gate = PriorityGate(4)
    await gate.acquire(0)
    assert gate.outranked(1) and not gate.outranked(0)
    batch = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0.01)
    assert not batch.done() and gate.waiting == 1
    gate.release(0)
    await asyncio.wait_for(batch, 1)
    assert gate.running == 1 and not gate.outranked(1)


async def test_a_cancelled_wait_gives_up_its_place() -> None:
    gate = PriorityGate(1)
    await gate.acquire(1)
    live = asyncio.create_task(gate.acquire(0))
    await asyncio.sleep(0)
    assert gate.outranked(1)
    live.cancel()
    with pytest.raises(asyncio.CancelledError):
        await live
    assert not gate.outranked(1) and gate.waiting == 0
    batch = asyncio.create_task(gate.acquire(1))
    gate.release(1)
    await asyncio.wait_for(batch, 1)
    assert (gate.running, gate.waiting) == (1, 0)


@pytest.mark.model
async def test_a_batch_request_pauses_for_a_live_one_and_resumes_with_the_same_answer(
    smol: Smol, make_engine: Any
) -> None:
    # One slot: the live request can only run if the batch request gives its slot back.
    engine = await make_engine(max_running=1, max_queue=4)
    prompt = PROMPTS[3]
    batch = engine.chat_stream(greedy(prompt, max_tokens=40, stream=True, priority=1))
    head = [await anext(batch), await anext(batch)]  # role, then its first tokens
    rest_of_batch = asyncio.create_task(collect_rest(batch))  # read on, as a client does
    live = await asyncio.wait_for(engine.chat(greedy(PROMPTS[0], priority=0)), timeout=120)
    assert live["choices"][0]["message"]["content"] == smol.reference_text(PROMPTS[0])
    assert not rest_of_batch.done()  # paused: the live request ran alone
    rest = await asyncio.wait_for(rest_of_batch, timeout=120)
    assert text_of(head + rest) == smol.reference_text(prompt, 40)
    assert rest[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    metrics = engine.metrics.render().decode()
    assert 'local_engine_preemptions_total{model="smollm2-135m-instruct"} 1.0' in metrics
    await wait_for(lambda: engine.backend.active_requests() == 0)
    assert (engine.stats().running, engine.stats().waiting) == (0, 0)


@pytest.mark.model
async def test_batch_work_waits_while_a_live_request_runs(make_engine: Any) -> None:
    engine = await make_engine()
    live = engine.chat_stream(greedy(LONG_PROMPT, max_tokens=400, stream=True))
    await anext(live)
    await anext(live)
    batch = asyncio.create_task(engine.chat(greedy(PROMPTS[4], max_tokens=3, priority=1)))
    await wait_for(lambda: engine.stats().waiting == 1)
    await asyncio.sleep(0.3)
    assert not batch.done() and engine.stats().running == 1  # free slots, yet it waits
    await live.aclose()
    result = await asyncio.wait_for(batch, timeout=120)
    assert result["usage"]["completion_tokens"] == 3
    metrics = engine.metrics.render().decode()
    assert 'local_engine_preemptions_total{model="smollm2-135m-instruct"} 0.0' in metrics


async def test_priority_must_be_an_integer(make_engine: Any) -> None:
    from local_engine.errors import EngineError

    engine = await make_engine()
    with pytest.raises(EngineError) as bad:
        await engine.chat(greedy(PROMPTS[0], priority="high"))
    assert bad.value.status == 400 and "priority" in str(bad.value)


@pytest.mark.model
async def test_a_paused_request_whose_client_goes_away_frees_everything(make_engine: Any) -> None:
    engine = await make_engine(max_running=1, max_queue=4)
    batch = engine.chat_stream(greedy(LONG_PROMPT, max_tokens=400, stream=True, priority=1))
    await anext(batch)
    await anext(batch)
    reader = asyncio.create_task(collect_rest(batch))
    live = engine.chat_stream(greedy(LONG_PROMPT, max_tokens=400, stream=True))
    await anext(live)
    await anext(live)  # the live request holds the only slot: the batch one is paused
    assert (engine.stats().running, engine.stats().waiting) == (1, 1)
    reader.cancel()  # the batch client went away while paused
    with pytest.raises(asyncio.CancelledError):
        await reader
    await batch.aclose()
    assert (engine.stats().running, engine.stats().waiting) == (1, 0)
    await live.aclose()
    await wait_for(lambda: engine.backend.active_requests() == 0)
    assert (engine.stats().running, engine.stats().waiting) == (0, 0)
    metrics = engine.metrics.render().decode()
    assert 'outcome="cancelled"} 2.0' in metrics
