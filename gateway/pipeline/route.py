"""Choosing the model: a model the client named, or the first policy rule that matches (for
embeddings: the named embeddings model, or the policy's first for ``auto``).

A matching rule may send a share of its traffic to another model (an A/B split, decided by a
hash of the request so the same request always lands on the same arm), and with sticky sessions
a conversation stays on the model that answered its first turn unless the rule says
``sticky: false``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from gateway.errors import BadRequest, BudgetExceeded, ModelNotFound
from gateway.ml.classifier import Judgement
from gateway.pipeline import budget
from gateway.pipeline.normalize import ChatRequest
from gateway.pipeline.turn import Turn
from gateway.policy.batch import BATCH_TAG
from gateway.policy.schema import Policy, Route, When
from gateway.runtime.sessions import Sessions, session_key

FORCED = "forced"
EMBEDDINGS = "embeddings"
"""The route of an embeddings request for ``auto``: the policy's first embeddings model."""
STICKY = "sticky"
AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    """The rule that chose the model; ``forced`` when the client named it, ``sticky`` when the
    conversation's first turn did."""
    model: str
    session: str | None = None
    """The sticky-session key under which to remember the model that answers."""


async def decide(turn: Turn) -> Decision:
    """The model for this request: the tenant's budget first (a tenant past it is downgraded to
    the cheapest model, or refused), then the client's choice or the policy's rules."""
    with turn.trace.stage("route") as span:
        downgrade = await budget.enforce(turn)
        if downgrade is not None:
            decision = Decision(budget.DOWNGRADE, downgrade)
        else:
            runtime = turn.runtime
            decision = choose(runtime.policy, turn.request, runtime.sessions, turn.judgement)
        span.set_attribute("gateway.route", decision.route)
    turn.route, turn.model = decision.route, decision.model
    return decision


def choose(
    policy: Policy,
    request: ChatRequest,
    sessions: Sessions,
    judgement: Judgement | None = None,
) -> Decision:
    """``judgement``: the classifier's verdict; rules that test difficulty or category never
    match without one."""
    if request.model in policy.models:
        if policy.models[request.model].kind != "chat":
            raise ModelNotFound(
                f"{request.model!r} is an embeddings model: it answers POST /v1/embeddings; "
                f"chat models: {_of_kind(policy, 'chat')}.",
                param="model",
            )
        return Decision(FORCED, request.model)
    rule = next((r for r in policy.routes if matches(r.when, request, judgement)), None)
    if rule is None:
        if request.model != AUTO:
            raise ModelNotFound(
                f"The model {request.model!r} does not exist; use 'auto' or one of "
                f"{sorted(policy.models)} (GET /v1/models).",
                param="model",
            )
        raise BadRequest(
            "No routing rule of the policy matches this request; name a model instead of 'auto'.",
            param="model",
            code="no_route",
        )
    session = None
    if policy.routing.sticky_sessions and rule.sticky:
        session = session_key(request.tenant, request.session_id, request.body["messages"])
        pinned = sessions.model_of(session)
        if pinned in policy.models:
            return Decision(STICKY, pinned, session)
    return Decision(rule.name, _arm(rule, request), session)


async def decide_embeddings(turn: Turn) -> Decision:
    """The embeddings model for this request: the one it names, or for ``auto`` the policy's
    first. A tenant past its budget is refused even where chat would be downgraded: another
    model's vectors are not comparable with the ones the client already has."""
    with turn.trace.stage("route") as span:
        if await budget.enforce(turn) is not None:
            raise BudgetExceeded(
                f"Tenant {turn.request.tenant!r} has used its budget; embeddings are not "
                "downgraded to another model, whose vectors would not be comparable."
            )
        decision = choose_embeddings(turn.runtime.policy, turn.request.model)
        span.set_attribute("gateway.route", decision.route)
    turn.route, turn.model = decision.route, decision.model
    return decision


def choose_embeddings(policy: Policy, model: str) -> Decision:
    """``model`` when it is an embeddings model of the policy; for ``auto`` the first."""
    embedders = _of_kind(policy, "embeddings")
    if model == AUTO and embedders:
        return Decision(EMBEDDINGS, embedders[0])
    if model in embedders:
        return Decision(FORCED, model)
    if model == AUTO:
        raise ModelNotFound("The policy has no embeddings model.", param="model")
    kind = "a chat model" if model in policy.models else "not a model of this gateway"
    raise ModelNotFound(
        f"{model!r} is {kind}; embeddings models: {['auto', *embedders]} (GET /v1/models).",
        param="model",
    )


def _of_kind(policy: Policy, kind: str) -> list[str]:
    return [name for name, config in policy.models.items() if config.kind == kind]


def matches(when: When | None, request: ChatRequest, judgement: Judgement | None = None) -> bool:
    """Every condition that is set must hold; without ``model`` a rule serves only ``auto``."""
    if when is None:
        return request.model == AUTO
    if when.needs_classifier and not _judged(when, judgement):
        return False
    return (
        request.model in (when.model if when.model is not None else (AUTO,))
        and (when.prompt_tokens is None or when.prompt_tokens.contains(request.prompt_tokens))
        and (when.tenant is None or request.tenant in when.tenant)
        and (when.tags is None or all(request.tags.get(k) == v for k, v in when.tags.items()))
        and (when.has_tools is None or when.has_tools == request.has_tools)
        and (when.has_images is None or when.has_images == request.has_images)
        and (when.batch is None or when.batch == (BATCH_TAG in request.tags))
    )


def _judged(when: When, judgement: Judgement | None) -> bool:
    return (
        judgement is not None
        and (when.difficulty is None or when.difficulty.contains(judgement.difficulty))
        and (when.category is None or judgement.category in when.category)
    )


def _arm(rule: Route, request: ChatRequest) -> str:
    if rule.split is not None and request_unit(request) < rule.split.share:
        return rule.split.to
    return rule.to


def request_unit(request: ChatRequest) -> float:
    """A number in [0, 1) fixed by the request's tenant and messages."""
    digest = hashlib.sha256(
        request.tenant.encode() + b"\0" + msgspec.json.encode(request.body["messages"])
    ).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
