"""The long-lived resources a request uses besides the policy, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.background import Background
from gateway.exact_cache import ExactCache
from gateway.ledger.store import Ledger
from gateway.semantic_stage import SemanticStage
from gateway.telemetry import Telemetry
from gateway.understand import Models


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    exact: ExactCache
    background: Background
    telemetry: Telemetry
    models: Models
    """The embedder and the classifier."""
    semantic: SemanticStage
