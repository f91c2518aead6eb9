"""What every store keeps per group: integer counters, with money in nano-dollars.

Money is summed as integers of 1e-9 USD: exact (no float), cheap to add in SQL and with Redis
``HINCRBY``, and fine enough for any per-token price down to $0.001 per million tokens. A
record's `Decimal` cost is rounded half-even to 1e-9 once, when it is written; every sum after
that is exact.

Both stores keep the same `Sums` for the same groups, so one report function serves both:

- main groups: (day, tenant, model, route, cache)
- tag groups: (day, tag, tenant, model, route, cache), one per ``k=v`` tag of a record, and
  one with the tag ``""`` for a record without tags; so a record with two tags is in two tag
  groups, and a report grouped by tag takes its totals from the main groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Decimal

from gateway.ledger.record import LedgerRecord

NANO = Decimal("1e-9")
DAY_S = 86_400

UNTAGGED = ""
"""The tag of a record that has none, in tag groups."""


def to_nanos(usd: Decimal) -> int:
    return int((usd / NANO).to_integral_value(ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).quantize(NANO)


def day_of(unix_time: float) -> int:
    """The UTC day number (days since 1970-01-01) of a unix time."""
    return int(unix_time // DAY_S)


def tag_labels(tags: dict[str, str]) -> list[str]:
    """A record's tags as ``k=v`` labels, ``[""]`` when it has none."""
    return [f"{k}={v}" for k, v in sorted(tags.items())] or [UNTAGGED]


@dataclass(slots=True)
class Sums:
    """Counters of one group. Field names are also the SQL columns and the Redis fields."""

    n: int = 0
    """Requests."""
    input: int = 0
    cached: int = 0
    output: int = 0
    ptok: int = 0
    """Input + output tokens of the requests whose cost is known (for $ per Mtok)."""
    cost: int = 0
    """Sum of the known costs, nano-USD."""
    nocost: int = 0
    """Requests whose cost is unknown (the model has no price)."""
    base: int = 0
    """Sum of the known baseline costs, nano-USD."""
    nobase: int = 0
    """Requests whose baseline cost is unknown."""
    both: int = 0
    """Requests whose cost and baseline cost are both known."""
    save: int = 0
    """Sum of (baseline - cost) over the requests where both are known, nano-USD."""

    def add(self, other: Sums) -> None:
        # Spelled out: this runs for every record and every group of a report.
        self.n += other.n
        self.input += other.input
        self.cached += other.cached
        self.output += other.output
        self.ptok += other.ptok
        self.cost += other.cost
        self.nocost += other.nocost
        self.base += other.base
        self.nobase += other.nobase
        self.both += other.both
        self.save += other.save

    def values(self) -> tuple[int, ...]:
        """In the order of `NAMES`."""
        return (
            self.n,
            self.input,
            self.cached,
            self.output,
            self.ptok,
            self.cost,
            self.nocost,
            self.base,
            self.nobase,
            self.both,
            self.save,
        )

    @classmethod
    def of(cls, record: LedgerRecord) -> Sums:
        cost = None if record.cost_usd is None else to_nanos(record.cost_usd)
        base = None if record.baseline_cost_usd is None else to_nanos(record.baseline_cost_usd)
        return cls(
            n=1,
            input=record.input_tokens,
            cached=record.cached_input_tokens,
            output=record.output_tokens,
            ptok=0 if cost is None else record.input_tokens + record.output_tokens,
            cost=cost or 0,
            nocost=int(cost is None),
            base=base or 0,
            nobase=int(base is None),
            both=int(cost is not None and base is not None),
            save=0 if cost is None or base is None else base - cost,
        )


NAMES: tuple[str, ...] = tuple(f.name for f in fields(Sums))

MainKey = tuple[int, str, str, str, str]
"""(day, tenant, model, route, cache); a missing model or route is ``""``."""
TagKey = tuple[int, str, str, str, str, str]
"""(day, tag, tenant, model, route, cache)."""


def main_key(record: LedgerRecord) -> MainKey:
    return (
        day_of(record.time),
        record.tenant,
        record.model or "",
        record.route or "",
        record.cache,
    )


def tag_keys(record: LedgerRecord) -> Iterator[TagKey]:
    day, tenant, model, route, cache = main_key(record)
    for label in tag_labels(record.tags):
        yield (day, label, tenant, model, route, cache)
