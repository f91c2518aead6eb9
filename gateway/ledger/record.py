"""One ledger record per request: what it cost, and what it would have cost without us.

Money is `Decimal` (exact); a record is written once and never updated, so stores can be
append-only and replays can be made idempotent by ``request_id``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

CacheOutcome = Literal["miss", "exact", "semantic", "bypass"]


class LedgerRecord(msgspec.Struct, frozen=True, kw_only=True):
    time: float
    """Unix time (seconds) when the request arrived."""
    request_id: str
    tenant: str
    tags: dict[str, str] = {}
    route: str | None = None
    """The rule that chose the model; None when the request failed before routing."""
    model: str | None = None
    """The policy model that answered (or whose cached answer was served)."""
    cache: CacheOutcome = "miss"
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None
    """None when the model has no price: unknown, never a silent zero."""
    baseline_cost_usd: Decimal | None = None
    """The same tokens at the policy's baseline model; for a cache hit, the original answer's."""
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    difficulty: float | None = None
    """The classifier's score, when it ran (the policy routes by difficulty or category)."""
    category: str | None = None
    """The classifier's category, when it ran."""
    status: int = 200
    """The HTTP status the client got."""
    stream: bool = False
    estimated: bool = False
    """Token counts were estimated because the provider sent no usage."""
    batch_id: str | None = None
    """The batch (``POST /v1/batches``) this request was a line of."""
    shadow_of: str | None = None
    """For a shadow comparison's extra calls (the large model's answer, the judge's grade): the
    request id of the client's request they compare; None for a client's own request."""


def encode(record: LedgerRecord) -> bytes:
    return msgspec.json.encode(record)


def decode(data: bytes) -> LedgerRecord:
    return msgspec.json.decode(data, type=LedgerRecord)
