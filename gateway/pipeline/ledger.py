"""The ledger stage: what a request consumed and cost, as one `LedgerRecord`, written here and
nowhere else (answers, cache hits and failures alike), with the request's span, metrics and log
line.

Token counts come from the provider's ``usage``. A stream is asked for its usage upstream even
when the client did not ask (``normalize`` sets ``stream_options.include_usage``), and the
usage-only chunk is then kept from the client. When a provider sends no usage at all, the
counts are estimated (UTF-8 bytes of the text / 4, rounded up; the same rule as routing's
``prompt_tokens``) and the record is marked ``estimated``.

The baseline is the same tokens priced at the policy's ``baseline_model``: what the request
would have cost without the gateway. Without a baseline model it is the cost itself (no saving
is claimed); with an unpriced model either is None, never zero.
"""

from __future__ import annotations

import time
from decimal import Decimal

import msgspec

from gateway.errors import GatewayError
from gateway.ledger.record import LedgerRecord
from gateway.ml.classifier import Judgement
from gateway.ml.text import request_text
from gateway.pipeline.cached_answer import CachedAnswer
from gateway.pipeline.cost import cost_usd, measured
from gateway.pipeline.normalize import Arrival, ChatRequest
from gateway.pipeline.reply import Answer
from gateway.pipeline.services import Services
from gateway.pipeline.turn import Turn
from gateway.policy.batch import BATCH_TAG
from gateway.policy.schema import Policy
from gateway.providers import PromptTokensDetails, Usage
from gateway.providers.engine_meter import Throughput
from gateway.runtime.tokens import TokenCounter
from gateway.telemetry import RequestTrace

CLIENT_CLOSED = 499
"""Status recorded for a stream whose client went away (nginx's convention)."""


def estimate_tokens(text_bytes: int) -> int:
    return -(-text_bytes // 4)


def counted(
    usage: Usage | None, request: ChatRequest, completion: str, counter: TokenCounter | None = None
) -> tuple[Usage, bool]:
    """The provider's usage; else the model's tokenizer's count; else an estimate (and True)."""
    if usage is not None:
        return usage, False
    if counter is not None:
        return counter.usage(request.body["messages"], completion), False
    prompt, output = request.prompt_tokens, estimate_tokens(len(completion.encode()))
    return Usage(prompt, output, prompt + output), True


def baseline_usd(
    policy: Policy,
    model: str,
    usage: Usage,
    service_tier: str | None = None,
    *,
    batch: bool = False,
) -> Decimal | None:
    """What the same tokens cost on the baseline model, in the same service tier (and for a
    batch line, at the baseline's batch price: without the gateway it would be batched too)."""
    return _priced(policy, policy.baseline_model or model, usage, service_tier, batch=batch)


def _priced(
    policy: Policy,
    model: str,
    usage: Usage,
    service_tier: str | None,
    *,
    batch: bool = False,
    throughput: Throughput | None = None,
) -> Decimal | None:
    price = policy.models[model].price
    if price is not None and throughput is not None:  # throughput: measured, fixed now
        price = price.at_throughput(*throughput)
    return cost_usd(usage, None if price is None else price.in_tier(service_tier), batch=batch)


def record(
    policy: Policy,
    request: ChatRequest,
    *,
    route: str | None,
    model: str | None,
    usage: Usage | None,
    estimated: bool = False,
    status: int = 200,
    ttft_at: float | None = None,
    cache: str = "miss",
    judgement: Judgement | None = None,
    service_tier: str | None = None,
    throughput: Throughput | None = None,
) -> LedgerRecord:
    """``service_tier``: the tier the provider reports it served the answer in;
    ``throughput``: what the model's engine measured, for a price per GPU hour."""
    now = time.monotonic()
    batch_id = request.tags.get(BATCH_TAG)
    batch = batch_id is not None
    cost = (
        _priced(policy, model, usage, service_tier, batch=batch, throughput=throughput)
        if model and usage
        else None
    )
    baseline = (
        baseline_usd(policy, model, usage, service_tier, batch=batch) if model and usage else None
    )
    details = usage.prompt_tokens_details if usage else None
    return LedgerRecord(
        time=request.arrived_unix,
        request_id=request.request_id,
        tenant=request.tenant,
        tags=dict(request.tags),
        route=route,
        model=model,
        cache=cache,  # type: ignore[arg-type]
        input_tokens=usage.prompt_tokens if usage else 0,
        cached_input_tokens=(details or PromptTokensDetails()).cached_tokens,
        output_tokens=usage.completion_tokens if usage else 0,
        cost_usd=cost,
        baseline_cost_usd=baseline,
        latency_ms=round((now - request.arrived_mono) * 1000, 3),
        ttft_ms=None if ttft_at is None else round((ttft_at - request.arrived_mono) * 1000, 3),
        difficulty=None if judgement is None else judgement.difficulty,
        category=None if judgement is None else judgement.category,
        status=status,
        stream=request.stream,
        estimated=estimated,
        batch_id=batch_id,
    )


def record_answer(
    turn: Turn,
    route: str,
    model: str,
    answer: Answer,
    *,
    status: int = 200,
    ttft_at: float | None = None,
) -> tuple[Usage, LedgerRecord]:
    """Write the record of an answer from ``model`` (tokens counted when upstream sent no usage);
    returns the usage it was costed with, and the record."""
    request = turn.request
    usage, estimated = counted(
        answer.usage, request, answer.text, turn.runtime.token_counters.get(model)
    )
    entry = record(
        turn.runtime.policy,
        request,
        route=route,
        model=model,
        usage=usage,
        estimated=estimated,
        status=status,
        ttft_at=ttft_at,
        cache=turn.cache,
        judgement=turn.judgement,
        service_tier=answer.service_tier,
        throughput=measured(turn.runtime.providers.get(model)),
    )
    _write(turn.services, turn.trace, entry, turn, answer.text)
    return usage, entry


SHADOW_ROUTE = "shadow"


def record_shadow(
    turn: Turn,
    role: str,
    model: str,
    usage: Usage | None,
    *,
    started: float,
    status: int = 200,
    estimated: bool = False,
) -> LedgerRecord:
    """Write the record of a shadow comparison's extra call (``role``: ``large`` or ``judge``)
    for the client's request: its own id (``<request id>:shadow-<role>``), ``shadow_of`` the
    client's, route ``shadow`` and a baseline of $0, since without the gateway there would be
    no such call. A failed call (no usage) costs an unknown amount (None), as any failure."""
    request = turn.request
    entry = record(turn.runtime.policy, request, route=SHADOW_ROUTE, model=model, usage=usage)
    entry = msgspec.structs.replace(
        entry,
        request_id=f"{request.request_id}:shadow-{role}",
        shadow_of=request.request_id,
        cache="bypass",
        baseline_cost_usd=Decimal(0),
        latency_ms=round((time.monotonic() - started) * 1000, 3),
        ttft_ms=None,
        difficulty=None,
        category=None,
        status=status,
        stream=False,
        estimated=estimated,
    )
    turn.services.ledger.record(entry)
    return entry


def record_embeddings(
    turn: Turn, route: str, model: str, *, called: int, served: int, estimated: bool = False
) -> LedgerRecord:
    """Write the record of an embeddings request: ``called`` input tokens embedded by ``model``
    now and ``served`` from the exact cache. It costs the called tokens at the model's input
    price; its baseline is all of them at that price (there is no other model to compare
    with: another model's vectors are another answer)."""
    policy, total = turn.runtime.policy, Usage(called + served, 0, called + served)
    entry = record(
        policy,
        turn.request,
        route=route,
        model=model,
        usage=Usage(called, 0, called),
        estimated=estimated,
        cache=turn.cache,
    )
    entry = msgspec.structs.replace(
        entry,
        input_tokens=total.prompt_tokens,
        baseline_cost_usd=_priced(policy, model, total, None, batch=entry.batch_id is not None),
    )
    _write(turn.services, turn.trace, entry)  # no prompt to log: the inputs are no chat
    return entry


def record_hit(turn: Turn, answer: CachedAnswer) -> None:
    """Write the record of a request answered from a cache."""
    entry = cache_hit(turn.request, answer, turn.cache)
    _write(turn.services, turn.trace, entry, turn, answer.content)


def record_failure(
    services: Services,
    trace: RequestTrace,
    arrival: Arrival,
    error: GatewayError,
    turn: Turn | None = None,
    *,
    batch_id: str | None = None,
) -> None:
    """Write the record of a request that failed without an answer; with its ``turn`` (it was
    read, perhaps routed), the record keeps its tags, stream flag, route and model, so that
    reports by tag or model count it. ``batch_id``: the batch of a line that failed, perhaps
    before it was read."""
    entry = failure(
        arrival.request_id,
        arrival.tenant,
        arrival.at,
        error.status_code,
        free=error.before_any_model,
    )
    if turn is not None:
        entry = msgspec.structs.replace(
            entry,
            tags=dict(turn.request.tags),
            stream=turn.request.stream,
            route=turn.route,
            model=turn.model,
            cache=turn.cache,
        )
    if batch_id is not None:
        tags = {**entry.tags, BATCH_TAG: batch_id}
        entry = msgspec.structs.replace(entry, tags=tags, batch_id=batch_id)
    _write(services, trace, entry)


def _write(
    services: Services,
    trace: RequestTrace,
    entry: LedgerRecord,
    turn: Turn | None = None,
    completion: str | None = None,
) -> None:
    """The one place a request's record is written; its span, metrics and log line end with it
    (with the prompt and completion only when the policy says ``telemetry.log_prompts``)."""
    services.ledger.record(entry)
    if turn is not None and turn.runtime.policy.telemetry.log_prompts:
        prompt = request_text(turn.request.body["messages"])
        services.telemetry.request_done(
            trace, entry, prompt=prompt, completion=completion, include_text=True
        )
    else:
        services.telemetry.request_done(trace, entry)


def failure(
    request_id: str, tenant: str, arrived: tuple[float, float], status: int, *, free: bool
) -> LedgerRecord:
    """The record of a request that failed without an answer: it cost $0 when it was refused
    before any model was called (``free``), otherwise its cost is unknown (None)."""
    cost = Decimal(0) if free else None
    return LedgerRecord(
        time=arrived[0],
        request_id=request_id,
        tenant=tenant,
        cost_usd=cost,
        baseline_cost_usd=cost,
        status=status,
        latency_ms=round((time.monotonic() - arrived[1]) * 1000, 3),
    )


def cache_hit(request: ChatRequest, answer: CachedAnswer, outcome: str) -> LedgerRecord:
    """A hit costs nothing; its baseline is what the answer cost when it was first produced."""
    return LedgerRecord(
        time=request.arrived_unix,
        request_id=request.request_id,
        tenant=request.tenant,
        tags=dict(request.tags),
        route="cache",
        model=answer.model,
        cache=outcome,  # type: ignore[arg-type]
        input_tokens=answer.usage.prompt_tokens,
        cached_input_tokens=answer.usage.cached_tokens,
        output_tokens=answer.usage.completion_tokens,
        cost_usd=Decimal(0),
        baseline_cost_usd=answer.baseline_cost_usd,
        latency_ms=round((time.monotonic() - request.arrived_mono) * 1000, 3),
        ttft_ms=round((time.monotonic() - request.arrived_mono) * 1000, 3)
        if request.stream
        else None,
        status=200,
        stream=request.stream,
        batch_id=request.tags.get(BATCH_TAG),
    )
