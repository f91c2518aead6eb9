"""The classify stage: the request's difficulty in [0, 1] and its category, from the shared
embedding and cheap text features (the model is :mod:`gateway.ml.classifier`).

It runs only when the policy has a rule that tests difficulty or category and the client left
the choice to the policy (``auto`` or a rule's alias), not when it named a model."""

from __future__ import annotations

from gateway.pipeline.turn import Turn


def wanted(turn: Turn) -> bool:
    return turn.runtime.classifies and turn.request.model not in turn.runtime.policy.models


async def judge(turn: Turn) -> None:
    """Set ``turn.judgement`` when the policy's rules need it."""
    if turn.understanding is None or not wanted(turn):
        return
    with turn.trace.stage("classify") as span:
        request = turn.request
        turn.judgement = judgement = await turn.services.models.classify(
            request.body["messages"], request.has_tools, turn.understanding.vector
        )
        span.set_attribute("gateway.difficulty", judgement.difficulty)
        span.set_attribute("gateway.category", judgement.category)
