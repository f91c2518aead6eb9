"""The ledger stage: what a request consumed and cost, as one `LedgerRecord`.

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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from gateway.ledger.record import LedgerRecord
from gateway.pipeline.answer import CachedAnswer
from gateway.pipeline.cost import cost_usd
from gateway.pipeline.normalize import ChatRequest
from gateway.policy.schema import Policy
from gateway.providers import PromptTokensDetails, Usage
from gateway.runtime.tokens import TokenCounter

if TYPE_CHECKING:
    from gateway.ml.classifier import Judgement

CLIENT_CLOSED = 499
"""Status recorded for a stream whose client went away (nginx's convention)."""


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[object] | None = None
    function_call: object | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None
    finish_reason: str | None = None


class _Answer(msgspec.Struct):
    """The parts of a completion or chunk that accounting (and caching) read."""

    model: str = ""
    choices: list[_Choice] = []
    usage: Usage | None = None


def estimate_tokens(text_bytes: int) -> int:
    return -(-text_bytes // 4)


@dataclass
class StreamMeter:
    """Watches a stream go by: its usage, and its text for an estimate or the cache."""

    wants_usage: bool
    usage: Usage | None = None
    pieces: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    upstream_model: str = ""
    plain_text: bool = True
    """One choice of text only: no tool calls, no other choices; only such answers are cached."""

    def forward(self, chunk: bytes) -> bool:
        """Account for ``chunk``; False when the client must not see it (unasked-for usage)."""
        try:
            answer = msgspec.json.decode(chunk, type=_Answer)
        except msgspec.MsgspecError:
            return True  # not a completion chunk (an error event, say): pass it on untouched
        self.upstream_model = answer.model or self.upstream_model
        if answer.usage is not None:
            self.usage = answer.usage
        for choice in answer.choices:
            delta = choice.delta or _Delta()
            if choice.index != 0 or delta.tool_calls or delta.function_call:
                self.plain_text = False
            if delta.content:
                self.pieces.append(delta.content)
            self.finish_reason = choice.finish_reason or self.finish_reason
        return self.wants_usage or answer.usage is None or bool(answer.choices)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def reply_usage(body: bytes) -> tuple[Usage | None, str]:
    """The usage of a non-streamed answer, and its text for when there is none."""
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except msgspec.MsgspecError:
        return None, ""
    return answer.usage, "".join(c.message.content or "" for c in answer.choices if c.message)


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


def baseline_usd(policy: Policy, model: str, usage: Usage) -> Decimal | None:
    baseline = policy.baseline_model or model
    return cost_usd(usage, policy.models[baseline].price)


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
) -> LedgerRecord:
    now = time.monotonic()
    cost = cost_usd(usage, policy.models[model].price) if model and usage else None
    baseline = baseline_usd(policy, model, usage) if model and usage else None
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
    )


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
    )
