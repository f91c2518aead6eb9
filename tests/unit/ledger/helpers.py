"""Ledger records for tests, with money as exact decimals."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from gateway.ledger.record import LedgerRecord

DAY = 86_400.0
T0 = 1_750_000_000.0 // DAY * DAY  # 2025-06-15 00:00 UTC, the start of a UTC day
_ids = itertools.count()


def rec(
    t: float = T0 + 3600,
    *,
    cost: str | None = "0.001",
    baseline: str | None = "0.004",
    **fields: Any,
) -> LedgerRecord:
    """A record at ``t``; ``cost``/``baseline`` in USD as text (None: unpriced)."""
    values: dict[str, Any] = {
        "time": t,
        "request_id": f"req-{next(_ids)}",
        "tenant": "team-a",
        "route": "default",
        "model": "small",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost_usd": None if cost is None else Decimal(cost),
        "baseline_cost_usd": None if baseline is None else Decimal(baseline),
    }
    values.update(fields)
    return LedgerRecord(**values)
