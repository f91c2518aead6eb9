"""The policy's ``shadow`` section: a sample of the requests routed to the small model is also
sent to the large one in the background and the pair is graded by a judge model, so that the
router can learn from the gateway's own traffic."""

from __future__ import annotations

from pydantic import Field

from gateway.policy.types import Name, PerMillion, Strict


class ShadowConfig(Strict):
    """Shadow comparisons; off unless ``rate`` is above 0."""

    rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of small-model requests also sent to `to`."
    )
    to: Name | None = Field(default=None, description="The policy model to compare against.")
    judge: Name | None = Field(default=None, description="The policy model that grades a pair.")
    daily_budget_usd: PerMillion | None = Field(
        default=None, description="Per tenant and UTC day; shadow work stops when it is spent."
    )
