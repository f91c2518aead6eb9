"""The request flow in one place: each stage is one call, in order.

    exact cache -> embed -> semantic cache -> classify -> budget, route -> call -> (respond)
    -> account, store in the caches

Embedding happens only when the semantic cache or a difficulty/category rule needs it, and once;
classification only for requests the policy routes (not for a named model).

Stages exchange frozen value objects (`ChatRequest`, `Decision`, `Reply`, `Started`,
`CachedAnswer`), never wire JSON; `normalize` made the request, `respond` turns the result
into HTTP. Every answered request leaves one ledger record: a non-streamed one when it is
complete, a streamed one when its stream ends (finished, broken, or abandoned by the client).
Only complete, successful answers are stored in the cache, after the response.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal

from gateway.ledger.record import LedgerRecord
from gateway.ml.loader import Understanding
from gateway.ml.text import request_text
from gateway.pipeline import answer as cached_answer
from gateway.pipeline import budget, call, route
from gateway.pipeline import ledger as account
from gateway.pipeline.answer import CachedAnswer
from gateway.pipeline.call import Started
from gateway.pipeline.exact_cache import Outcome
from gateway.pipeline.normalize import ChatRequest
from gateway.pipeline.route import Decision
from gateway.pipeline.semantic_cache import SemanticStage
from gateway.pipeline.services import Services
from gateway.providers import AttemptFailed, Usage
from gateway.runtime.store import Runtime
from gateway.telemetry import RequestTrace

CACHE_ROUTE = "cache"


@dataclass(frozen=True, slots=True)
class Completed:
    request: ChatRequest
    route: str
    model: str
    """The policy model that answered (a fallback, perhaps) or whose cached answer was served."""
    body: bytes
    cost_usd: Decimal | None
    cache: Outcome
    difficulty: float | None = None
    cache_score: float | None = None


@dataclass(frozen=True, slots=True)
class Streaming:
    request: ChatRequest
    route: str
    model: str
    chunks: AsyncGenerator[bytes, None]
    """The SSE ``data`` payloads the client gets, metered for the ledger as they pass."""
    cache: Outcome
    cost_usd: Decimal | None = None
    """Known before the stream only for a cache hit (zero)."""
    difficulty: float | None = None
    cache_score: float | None = None


async def run(
    runtime: Runtime, services: Services, request: ChatRequest, trace: RequestTrace
) -> Completed | Streaming:
    policy = runtime.policy
    with trace.stage("exact_cache") as span:
        outcome, hit = await services.exact.lookup(request, runtime)
        span.set_attribute("gateway.cache", outcome)
    if hit is not None:
        return _from_cache(runtime, services, request, hit, outcome, trace)
    judging = runtime.classifies and request.model not in policy.models
    semantic = SemanticStage.wanted(request, runtime)
    understanding = None
    if judging or semantic:
        with trace.stage("embed"):
            understanding = await services.models.understand(request)
    if semantic and understanding is not None and request.cache_control.read:
        with trace.stage("semantic_cache") as span:
            found = await services.semantic.lookup(request, runtime, understanding)
            outcome = _semantic_outcome(outcome, found is not None, services.semantic)
            span.set_attribute("gateway.cache", outcome)
        if found is not None:
            return _from_cache(
                runtime, services, request, found.answer, outcome, trace, found.score
            )
    judgement = None
    if judging and understanding is not None:
        with trace.stage("classify") as span:
            judgement = await services.models.classify(request, understanding)
            span.set_attribute("gateway.difficulty", judgement.difficulty)
            span.set_attribute("gateway.category", judgement.category)
    with trace.stage("route") as span:
        decision = await budget.enforce(runtime, services.ledger, request) or route.choose(
            policy, request, runtime.sessions, judgement
        )
        span.set_attribute("gateway.pipeline.route", decision.route)
    if judgement is not None:  # a budget downgrade decides without it, but it was measured
        decision = dataclasses.replace(decision, judgement=judgement)
    difficulty = _difficulty(decision)
    if request.stream:
        with trace.stage("call"):  # up to the first chunk; the rest streams after the response
            model, started = await call.stream(runtime, decision, request)
        _remember_session(runtime, decision, model)
        chunks = _metered(
            runtime, services, request, decision, model, started, outcome, trace, understanding
        )
        return Streaming(request, decision.route, model, chunks, outcome, difficulty=difficulty)
    with trace.stage("call"):
        model, reply = await call.complete(runtime, decision, request)
    _remember_session(runtime, decision, model)
    with trace.stage("ledger"):
        usage, text = account.reply_usage(reply.body)
        usage, record = _record(runtime, request, decision, model, usage, text, outcome)
        answer = cached_answer.from_reply(
            reply.body,
            model=model,
            usage=usage,
            cost_usd=record.cost_usd,
            baseline_cost_usd=record.baseline_cost_usd,
            created=time.time(),
        )
        _finish(runtime, services, trace, request, record, answer.content if answer else None)
    _store(runtime, services, request, answer, understanding)
    return Completed(
        request, decision.route, model, reply.body, record.cost_usd, outcome, difficulty
    )


def _record(
    runtime: Runtime,
    request: ChatRequest,
    decision: Decision,
    model: str,
    usage: Usage | None,
    text: str,
    outcome: Outcome,
    *,
    status: int = 200,
    ttft_at: float | None = None,
) -> tuple[Usage, LedgerRecord]:
    """The ledger record of an answer from a model, its tokens counted when upstream sent no
    usage; returns the usage it was costed with too."""
    usage, estimated = account.counted(usage, request, text, runtime.token_counters.get(model))
    record = account.record(
        runtime.policy,
        request,
        route=decision.route,
        model=model,
        usage=usage,
        estimated=estimated,
        status=status,
        ttft_at=ttft_at,
        cache=outcome,
        judgement=decision.judgement,
    )
    return usage, record


def _difficulty(decision: Decision) -> float | None:
    return decision.judgement.difficulty if decision.judgement is not None else None


def _semantic_outcome(exact: Outcome, hit: bool, semantic: SemanticStage) -> Outcome:
    """``semantic`` on a hit; after a miss, ``bypass`` stays only while a store is down."""
    if hit:
        return "semantic"
    return "bypass" if exact == "bypass" and semantic.degraded() else "miss"


def _from_cache(
    runtime: Runtime,
    services: Services,
    request: ChatRequest,
    answer: CachedAnswer,
    outcome: Outcome,
    trace: RequestTrace,
    score: float | None = None,
) -> Completed | Streaming:
    with trace.stage("ledger"):
        record = account.cache_hit(request, answer, outcome)
        _finish(runtime, services, trace, request, record, answer.content)
    if request.stream:
        chunks = _replay(cached_answer.chunks(answer, request.wants_usage))
        return Streaming(
            request, CACHE_ROUTE, answer.model, chunks, outcome, Decimal(0), cache_score=score
        )
    return Completed(
        request,
        CACHE_ROUTE,
        answer.model,
        cached_answer.completion(answer),
        Decimal(0),
        outcome,
        cache_score=score,
    )


def _finish(
    runtime: Runtime,
    services: Services,
    trace: RequestTrace,
    request: ChatRequest,
    record: LedgerRecord,
    completion: str | None,
) -> None:
    """The end of every answered request: its ledger record, span, metrics and log line."""
    services.ledger.record(record)
    if runtime.policy.telemetry.log_prompts:
        services.telemetry.request_done(
            trace,
            record,
            prompt=request_text(request.body["messages"]),
            completion=completion,
            include_text=True,
        )
    else:
        services.telemetry.request_done(trace, record)


async def _replay(chunks: list[bytes]) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        yield chunk


async def _metered(
    runtime: Runtime,
    services: Services,
    request: ChatRequest,
    decision: Decision,
    model: str,
    started: Started,
    outcome: Outcome,
    trace: RequestTrace,
    understanding: Understanding | None,
) -> AsyncGenerator[bytes, None]:
    meter = account.StreamMeter(request.wants_usage)
    status = account.CLIENT_CLOSED
    try:
        async for chunk in started.chunks():
            if meter.forward(chunk):
                yield chunk
        status = 200
    except AttemptFailed:
        status = 502
        raise
    finally:
        usage, record = _record(
            runtime,
            request,
            decision,
            model,
            meter.usage,
            meter.text,
            outcome,
            status=status,
            ttft_at=started.first_at,
        )
        _finish(runtime, services, trace, request, record, meter.text)
        if status == 200:
            answer = _streamed_answer(meter, model, usage, record)
            _store(runtime, services, request, answer, understanding)


def _streamed_answer(
    meter: account.StreamMeter, model: str, usage: Usage, record: LedgerRecord
) -> CachedAnswer | None:
    return cached_answer.from_stream(
        meter.pieces,
        meter.finish_reason,
        meter.upstream_model,
        meter.plain_text,
        model=model,
        usage=usage,
        cost_usd=record.cost_usd,
        baseline_cost_usd=record.baseline_cost_usd,
        created=time.time(),
    )


def _store(
    runtime: Runtime,
    services: Services,
    request: ChatRequest,
    answer: CachedAnswer | None,
    understanding: Understanding | None,
) -> None:
    """After the response: store a complete, cacheable answer."""
    if answer is None:
        return
    services.background.spawn(services.exact.save(request, runtime, answer))
    if understanding is not None and SemanticStage.wanted(request, runtime):
        services.background.spawn(services.semantic.save(request, runtime, understanding, answer))


def _remember_session(runtime: Runtime, decision: Decision, model: str) -> None:
    if decision.session is not None:
        runtime.sessions.remember(decision.session, model)
