"""The request flow in one place: each stage is one call, in order.

Stages exchange frozen value objects (`ChatRequest`, `Decision`, `Reply`, `Started`), never
wire JSON; `normalize` made the request, `respond` turns the result into HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from gateway import call, route
from gateway.call import Started
from gateway.cost import cost_usd
from gateway.normalize import ChatRequest
from gateway.policy.store import Runtime
from gateway.providers import Reply
from gateway.route import Decision


@dataclass(frozen=True, slots=True)
class Completed:
    request: ChatRequest
    decision: Decision
    model: str
    """The policy model that answered: the chosen one or one of its fallbacks."""
    reply: Reply
    cost_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class Streaming:
    request: ChatRequest
    decision: Decision
    model: str
    stream: Started


async def run(runtime: Runtime, request: ChatRequest) -> Completed | Streaming:
    decision = route.choose(runtime.policy, request, runtime.sessions)
    if request.stream:
        model, started = await call.stream(runtime, decision, request)
        _remember_session(runtime, decision, model)
        return Streaming(request, decision, model, started)
    model, reply = await call.complete(runtime, decision, request)
    _remember_session(runtime, decision, model)
    return Completed(
        request, decision, model, reply, cost_usd(reply.usage, runtime.policy.models[model].price)
    )


def _remember_session(runtime: Runtime, decision: Decision, model: str) -> None:
    if decision.session is not None:
        runtime.sessions.remember(decision.session, model)
