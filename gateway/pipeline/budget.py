"""Per-tenant budgets, per UTC day and per UTC calendar month.

Spend is read from the ledger, which keeps per-tenant counters as it writes (atomically, in
Redis or SQLite), so every gateway replica sees the same spend. Because ledger writes are
batched, a burst can overshoot a budget by the requests in flight: budgets are a brake, not an
exact cap.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gateway.errors import BudgetExceeded
from gateway.pipeline.turn import Turn
from gateway.policy.schema import cheapest_model

DOWNGRADE = "budget-downgrade"


def periods(now: float) -> tuple[tuple[str, float, float], ...]:
    """(name, start, reset) of the current UTC day and month, as unix times."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
    return (
        ("daily", today.timestamp(), today.timestamp() + 86400),
        ("monthly", month.timestamp(), next_month.timestamp()),
    )


async def enforce(turn: Turn) -> str | None:
    """None within budget; past it, the model to downgrade to, or `BudgetExceeded`."""
    request, policy = turn.request, turn.runtime.policy
    tenant = policy.tenants.get(request.tenant)
    if tenant is None:
        return None
    now = time.time()
    limits = {"daily": tenant.daily_budget_usd, "monthly": tenant.monthly_budget_usd}
    for name, start, reset in periods(now):
        limit = limits[name]
        if limit is None or await turn.services.ledger.spend(request.tenant, start) < limit:
            continue
        if tenant.on_budget_exceeded == "downgrade":
            cheapest = cheapest_model(policy)
            assert cheapest is not None  # the policy's validation guarantees one
            return cheapest
        resets = datetime.fromtimestamp(reset, UTC).isoformat()
        raise BudgetExceeded(
            f"Tenant {request.tenant!r} has used its {name} budget of ${limit}; "
            f"it resets at {resets}.",
            headers={"retry-after": str(int(reset - now) + 1)},
        )
    return None
