"""The long-lived resources a request uses besides the policy, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.background import Background
from gateway.batch.service import Batches
from gateway.exact_store import Store
from gateway.labels_store import LabelStore, SQLiteLabels
from gateway.ledger.base import Ledger
from gateway.ml.loader import Models
from gateway.responses_store import ResponseStore, SQLiteResponses
from gateway.runtime.gate import Gate
from gateway.runtime.limiter import Limiter
from gateway.runtime.live import LiveTraffic
from gateway.runtime.store import PolicyStore
from gateway.semantic.lazy import LazySemanticCache
from gateway.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Services:
    policies: PolicyStore
    """The policy in force (``policies.current``), reloaded on change."""
    ledger: Ledger
    exact: Store
    """Where the exact cache's entries live."""
    semantic: LazySemanticCache
    models: Models
    """The embedder and the classifier."""
    background: Background
    """Work after the response (cache stores), drained at shutdown."""
    telemetry: Telemetry
    limiter: Limiter = field(default_factory=lambda: Limiter(None))
    """Tenants' rate limits (in Redis when the gateway has one)."""
    gate: Gate = field(default_factory=Gate)
    """The server's concurrent requests and queue."""
    responses: ResponseStore = field(
        default_factory=lambda: SQLiteResponses(Path(":memory:"), 100_000)
    )
    """Stored Responses (``POST /v1/responses`` with ``store``); the default, in memory, is
    for services built without the app's lifespan."""
    labels: LabelStore = field(default_factory=lambda: SQLiteLabels(Path(":memory:")))
    """The router's labels from shadow comparisons and feedback (`gateway.labels_store`); the
    default, in memory, is for services built without the app's lifespan."""
    live: LiveTraffic = field(default_factory=LiveTraffic)
    """Live requests in flight, which batch work yields to."""
    batches: Batches | None = None
    """The Batch API's state and files; None for services built without the app's lifespan."""
