"""Choosing the model: a model named by the client, or the first policy rule that matches."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import BadRequest, ModelNotFound
from gateway.normalize import ChatRequest
from gateway.policy.schema import Policy, When

FORCED = "forced"


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    """The rule that chose the model, or ``forced`` when the client named it."""
    model: str


def choose(policy: Policy, request: ChatRequest) -> Decision:
    if request.model != "auto":
        if request.model not in policy.models:
            raise ModelNotFound(
                f"The model {request.model!r} does not exist; use 'auto' or one of "
                f"{sorted(policy.models)} (GET /v1/models).",
                param="model",
            )
        return Decision(FORCED, request.model)
    for rule in policy.routes:
        if rule.when is None or matches(rule.when, request):
            return Decision(rule.name, rule.to)
    raise BadRequest(
        "No routing rule of the policy matches this request; name a model instead of 'auto'.",
        param="model",
        code="no_route",
    )


def matches(when: When, request: ChatRequest) -> bool:
    """Every condition that is set must hold."""
    return (
        (when.tenant is None or request.tenant in when.tenant)
        and (when.tags is None or all(request.tags.get(k) == v for k, v in when.tags.items()))
        and (when.has_tools is None or when.has_tools == request.has_tools)
        and (when.has_images is None or when.has_images == request.has_images)
    )
