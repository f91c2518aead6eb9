"""The long-lived resources a request uses besides the policy, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.background import Background
from gateway.ledger.store import Ledger
from gateway.ml.loader import Models
from gateway.pipeline.exact_cache import ExactCache
from gateway.pipeline.semantic_cache import SemanticStage
from gateway.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    exact: ExactCache
    background: Background
    telemetry: Telemetry
    models: Models
    """The embedder and the classifier."""
    semantic: SemanticStage
