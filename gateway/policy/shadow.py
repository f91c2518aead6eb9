"""The policy's ``shadow`` section: a sample of the requests routed to the small model is also
sent to the large one in the background and the pair is graded by a judge model, so that the
router can learn from the gateway's own traffic (``gateway/pipeline/shadow.py`` does it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.policy.types import Name, PerMillion, Strict

Rate = Annotated[float, Field(ge=0, le=1)]


class ShadowConfig(Strict):
    """Shadow comparisons; off unless ``rate`` (or a tenant's rate) is above 0."""

    rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of small-model requests also sent to `to`."
    )
    tenants: dict[Name, Rate] = Field(
        default_factory=dict, description="Per-tenant rates that replace `rate` for that tenant."
    )
    to: Name | None = Field(default=None, description="The policy model to compare against.")
    judge: Name | None = Field(default=None, description="The policy model that grades a pair.")
    daily_budget_usd: PerMillion | None = Field(
        default=None, description="Per tenant and UTC day; shadow work stops when it is spent."
    )
    keep_features: bool = Field(
        default=False,
        description="Keep the embedding and features of every request the router judged and "
        "sent to a model other than `to`, not only the sampled ones, so that feedback on any "
        "of those answers can train the router.",
    )

    @property
    def enabled(self) -> bool:
        """Some tenant's requests may be sampled."""
        return max(self.rate, *self.tenants.values(), 0.0) > 0

    def rate_for(self, tenant: str) -> float:
        return self.tenants.get(tenant, self.rate)
