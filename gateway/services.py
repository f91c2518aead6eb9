"""The long-lived resources a request uses besides the policy, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.background import Background
from gateway.exact_cache import ExactCache
from gateway.ledger.store import Ledger
from gateway.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class Services:
    ledger: Ledger
    exact: ExactCache
    background: Background
    telemetry: Telemetry
