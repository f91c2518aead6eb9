"""The request flow in one place: `run` calls the stages in order.

Streamed and non-streamed answers part only after the call; a streamed answer's ledger record
and cache copy wait for its last chunk (`_metered`), so they are written once the stream ended
(finished, broken, or abandoned by the client). Only complete, successful answers are stored in
the caches, after the response.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from decimal import Decimal

from gateway.pipeline import (
    cached_answer,
    call,
    classify,
    embed,
    exact_cache,
    ledger,
    limits,
    route,
    semantic_cache,
    shadow,
)
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.call import Started
from gateway.pipeline.reply import Answer, StreamMeter
from gateway.pipeline.turn import Chunks, Completed, Streaming, Turn
from gateway.providers import AttemptFailed

CACHE_ROUTE = "cache"


async def run(turn: Turn) -> Completed | Streaming:
    """Answer one request: from a cache when it safely can, else from the model the policy
    picks, streamed or not as the client asked."""
    hit = await exact_cache.lookup(turn)
    if hit is None:
        await embed.understand(turn)
        hit = await semantic_cache.lookup(turn)
    if hit is not None:
        return _from_cache(turn, hit)
    await classify.judge(turn)
    decision = await route.decide(turn)
    request = turn.request
    # The chosen model's max_tokens (a named model's was applied before the caches already).
    shaped = limits.for_model(
        request, decision.model, turn.runtime.policy.models[decision.model].max_tokens
    )
    calling = turn if shaped is request else replace(turn, request=shaped)
    if request.stream:
        model, started = await call.stream(calling, decision)
        chunks = Chunks(_metered(turn, decision.route, model, started))
        return Streaming(request, decision.route, model, chunks, turn.cache, None, turn.difficulty)
    model, reply = await call.complete(calling, decision)
    with turn.trace.stage("ledger"):
        answer = Answer.of_body(reply.body)
        cost = await _account_and_keep(turn, decision.route, model, answer)
    return Completed(request, decision.route, model, reply.body, cost, turn.cache, turn.difficulty)


def _from_cache(turn: Turn, answer: CachedAnswer) -> Completed | Streaming:
    with turn.trace.stage("ledger"):
        ledger.record_hit(turn, answer)
    request, zero = turn.request, Decimal(0)
    if request.stream:
        chunks = Chunks.known(cached_answer.chunks(answer, request.wants_usage))
        return Streaming(
            request, CACHE_ROUTE, answer.model, chunks, turn.cache, zero, None, turn.cache_score
        )
    body = cached_answer.completion(answer)
    return Completed(
        request, CACHE_ROUTE, answer.model, body, zero, turn.cache, None, turn.cache_score
    )


async def _metered(
    turn: Turn, route_name: str, model: str, started: Started
) -> AsyncGenerator[list[bytes], None]:
    """The stream's chunks as they pass, read for the ledger and the cache, which are written
    when it ends."""
    meter = StreamMeter(turn.request.wants_usage)
    status = ledger.CLIENT_CLOSED
    try:
        async for batch in started.batches():
            if passed := meter.passed(batch):
                yield passed
        status = 200
    except AttemptFailed:
        status = 502
        raise
    finally:
        await _account_and_keep(
            turn, route_name, model, meter.answer, status=status, ttft_at=started.first_at
        )


async def _account_and_keep(
    turn: Turn,
    route_name: str,
    model: str,
    answer: Answer,
    *,
    status: int = 200,
    ttft_at: float | None = None,
) -> Decimal | None:
    """Write the answer's ledger record and count its tokens against the tenant's limit; store
    a complete, cacheable answer in the caches after the response. Returns what it cost."""
    usage, record = ledger.record_answer(
        turn, route_name, model, answer, status=status, ttft_at=ttft_at
    )
    await limits.spend(turn, usage)
    kept = cached_answer.cached(
        answer,
        model=model,
        usage=usage,
        cost_usd=record.cost_usd,
        baseline_cost_usd=record.baseline_cost_usd,
    )
    if status == 200:
        shadow.consider(turn, model, answer)
    if status == 200 and kept is not None:
        turn.services.background.spawn(exact_cache.save(turn, kept))
        if turn.understanding is not None:
            turn.services.background.spawn(semantic_cache.save(turn, kept))
    return record.cost_usd
