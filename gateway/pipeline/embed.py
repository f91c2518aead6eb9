"""The embed stage: the request's text and its embedding, once, for the semantic cache and the
classifier alike; skipped when neither will read it."""

from __future__ import annotations

from gateway.ml.text import request_text
from gateway.pipeline import classify, semantic_cache
from gateway.pipeline.turn import Turn


async def understand(turn: Turn) -> None:
    """Set ``turn.understanding`` when a later stage needs it."""
    if not (classify.wanted(turn) or semantic_cache.wanted(turn)):
        return
    with turn.trace.stage("embed"):
        text = request_text(turn.request.body["messages"])
        turn.understanding = await turn.services.models.understand(text)
