"""A `LedgerRecord` as a row of the SQL stores' ``records`` table, and back.

The SQLite and PostgreSQL stores keep the same columns. Money is integer nano-dollars
(``cost_nusd``, ``baseline_nusd``), tags are JSON text, flags are integers. Record fields
without a column of their own are kept as JSON in ``extra``, so a new field of `LedgerRecord`
survives the round trip before it earns a column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.ledger.record import LedgerRecord
from gateway.ledger.spend import SpendKey
from gateway.ledger.sums import Sums, day_of, from_nanos, main_key, tag_keys, to_nanos

COLUMNS = (
    *("request_id", "time", "day", "tenant", "tags", "route", "model", "cache"),
    *("input_tokens", "cached_input_tokens", "output_tokens", "cost_nusd", "baseline_nusd"),
    *("latency_ms", "ttft_ms", "difficulty", "status", "stream", "estimated", "extra"),
)
"""The columns of ``records``, in order."""
_KNOWN = frozenset(
    (
        *("time", "request_id", "tenant", "tags", "route", "model", "cache"),
        *("input_tokens", "cached_input_tokens", "output_tokens", "cost_usd"),
        *("baseline_cost_usd", "latency_ms", "ttft_ms", "difficulty", "status"),
        *("stream", "estimated"),
    )
)
"""The record fields that have a column; the others go to ``extra``."""


def row_of(record: LedgerRecord) -> tuple[Any, ...]:
    extra = {k: v for k, v in msgspec.structs.asdict(record).items() if k not in _KNOWN}
    return (
        record.request_id,
        record.time,
        day_of(record.time),
        record.tenant,
        msgspec.json.encode(record.tags).decode(),
        record.route,
        record.model,
        record.cache,
        record.input_tokens,
        record.cached_input_tokens,
        record.output_tokens,
        None if record.cost_usd is None else to_nanos(record.cost_usd),
        None if record.baseline_cost_usd is None else to_nanos(record.baseline_cost_usd),
        record.latency_ms,
        record.ttft_ms,
        record.difficulty,
        record.status,
        int(record.stream),
        int(record.estimated),
        msgspec.json.encode(extra).decode() if extra else None,
    )


def record_of(row: tuple[Any, ...]) -> LedgerRecord:
    """The record of a ``SELECT * FROM records`` row."""
    column = dict(zip(COLUMNS, row, strict=True))
    cost, base, extra = column["cost_nusd"], column["baseline_nusd"], column["extra"]
    fields: dict[str, Any] = {name: column[name] for name in _KNOWN if name in column}
    fields.update(
        tags=msgspec.json.decode(column["tags"]),
        cost_usd=None if cost is None else from_nanos(cost),
        baseline_cost_usd=None if base is None else from_nanos(base),
        stream=bool(column["stream"]),
        estimated=bool(column["estimated"]),
    )
    if extra:
        fields.update(msgspec.json.decode(extra))
    return msgspec.convert(fields, LedgerRecord)


@dataclass(slots=True)
class Rollups:
    """What a batch of newly stored records adds to the rollup tables, and to spend."""

    main: dict[tuple[Any, ...], Sums] = field(default_factory=dict)
    tagged: dict[tuple[Any, ...], Sums] = field(default_factory=dict)
    counted: dict[SpendKey, int] = field(default_factory=dict)
    """Cost in nano-dollars per (tenant, day)."""

    @classmethod
    def of(cls, fresh: list[LedgerRecord]) -> Rollups:
        rollups = cls()
        for record in fresh:
            sums = Sums.of(record)
            key = main_key(record)
            rollups.main.setdefault(key, Sums()).add(sums)
            for tag_key in tag_keys(record):
                rollups.tagged.setdefault(tag_key, Sums()).add(sums)
            if sums.cost:
                spend_key = (record.tenant, key[0])
                rollups.counted[spend_key] = rollups.counted.get(spend_key, 0) + sums.cost
        return rollups

    def main_rows(self) -> list[tuple[Any, ...]]:
        """``(*key, *sums)`` per main group, in key order (so that concurrent writers lock the
        rows of a shared store in the same order)."""
        return [(*k, *self.main[k].values()) for k in sorted(self.main)]

    def tag_rows(self) -> list[tuple[Any, ...]]:
        return [(*k, *self.tagged[k].values()) for k in sorted(self.tagged)]
