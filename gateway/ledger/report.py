"""Cost reports: the stores' group sums folded into rows, as a table, CSV or JSON.

Definitions (per row, and for the totals):

- ``requests``: ledger records in the period (every status, cache hits included).
- ``input_tokens``, ``cached_input_tokens`` (a part of the input), ``output_tokens``.
- ``cost_usd``: the sum of the known costs. A request whose model has no price has a null
  cost: it is counted in ``unpriced_requests`` and never summed as zero. Null when no request
  of the row has a known cost.
- ``baseline_cost_usd``: the sum of the known baseline costs (the same tokens priced at the
  policy's ``baseline_model``; for a cache hit, the cost of the answer when it was first
  produced). Requests with a null baseline are counted in ``unpriced_baseline_requests``.
- ``savings_usd`` = baseline - cost, summed over the requests whose cost and baseline are both
  known (so it equals ``baseline_cost_usd - cost_usd`` exactly when both unpriced counts are 0).
  It splits exactly into:

  - ``cache_savings_usd``: over cache hits (``exact`` and ``semantic``), whose cost is 0, so
    it is the baseline of the hits;
  - ``routing_savings_usd``: over the other requests (misses and bypasses): what sending them
    to the routed model saved against the baseline model (negative when a route chose a model
    dearer than the baseline).

  Null when no request has both costs known.
- ``cache_hit_rate``: (exact + semantic hits) / requests, a number in [0, 1]; null for no requests.
- ``effective_usd_per_mtok``: ``cost_usd`` per million tokens (input + output) of the requests
  with a known cost, cache hits included (their tokens were served at no cost); rounded
  half-even to 1e-9; null when there are no such tokens.

Money is exact: stores sum integer nano-dollars (see `gateway.ledger.sums`) and JSON and CSV
carry it as decimal strings with 9 decimals. When a report is grouped by ``tag``, a record with
several tags is in several rows, and the totals still count it once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

import msgspec
from rich.table import Table

from gateway.ledger.sums import DAY_S, NANO, UNTAGGED, Sums, from_nanos
from gateway.policy.batch import BATCH_TAG
from gateway.policy.models import Price

HITS = frozenset({"exact", "semantic"})
METRICS = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
    "baseline_cost_usd",
    "savings_usd",
    "cache_savings_usd",
    "routing_savings_usd",
    "cache_hit_rate",
    "effective_usd_per_mtok",
    "unpriced_requests",
    "unpriced_baseline_requests",
)
_MILLION = Decimal(1_000_000)


class Group(NamedTuple):
    """One group's sums as a store returns them; ``tag`` is None from the main groups."""

    day: int
    tag: str | None
    tenant: str
    model: str
    route: str
    cache: str
    sums: Sums


@dataclass(slots=True)
class _Acc:
    sums: Sums = field(default_factory=Sums)
    hits: int = 0
    cache_save: int = 0

    def add(self, group: Group) -> None:
        self.sums.add(group.sums)
        if group.cache in HITS:
            self.hits += group.sums.n
            self.cache_save += group.sums.save


@dataclass(frozen=True, slots=True)
class Row:
    group: dict[str, str | None]
    """The values of the group-by columns, in the order of ``by``."""
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None
    savings_usd: Decimal | None
    cache_savings_usd: Decimal | None
    routing_savings_usd: Decimal | None
    cache_hit_rate: float | None
    effective_usd_per_mtok: Decimal | None
    unpriced_requests: int
    unpriced_baseline_requests: int

    @classmethod
    def of(cls, group: dict[str, str | None], acc: _Acc) -> Row:
        s = acc.sums
        compared = s.both > 0
        per_mtok = None
        if s.n > s.nocost and s.ptok:
            per_mtok = (Decimal(s.cost) * NANO * _MILLION / s.ptok).quantize(NANO, ROUND_HALF_EVEN)
        return cls(
            group=group,
            requests=s.n,
            input_tokens=s.input,
            cached_input_tokens=s.cached,
            output_tokens=s.output,
            cost_usd=from_nanos(s.cost) if s.n > s.nocost else None,
            baseline_cost_usd=from_nanos(s.base) if s.n > s.nobase else None,
            savings_usd=from_nanos(s.save) if compared else None,
            cache_savings_usd=from_nanos(acc.cache_save) if compared else None,
            routing_savings_usd=from_nanos(s.save - acc.cache_save) if compared else None,
            cache_hit_rate=round(acc.hits / s.n, 6) if s.n else None,
            effective_usd_per_mtok=per_mtok,
            unpriced_requests=s.nocost,
            unpriced_baseline_requests=s.nobase,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: group columns first, money as decimal strings."""
        out: dict[str, Any] = dict(self.group)
        for name in METRICS:
            value = getattr(self, name)
            out[name] = f"{value:f}" if isinstance(value, Decimal) else value
        return out


@dataclass(frozen=True, slots=True)
class Report:
    since: float
    until: float
    """The period actually covered, ``[since, until)``: whole UTC days on the Redis store."""
    by: tuple[str, ...]
    tenant: str | None
    tag: str | None
    totals: Row
    rows: list[Row]

    def to_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.as_dict(), "rows": [row.as_dict() for row in self.rows]}

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.to_dict())

    def to_csv(self) -> str:
        """One line per row; without ``by``, one line of totals.

        The group columns carry names from clients (``x-gateway-tags``) and from the policy
        (tenants, routes, models): one that a spreadsheet would read as a formula (starting
        with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a leading
        ``'``, as OWASP recommends against CSV injection. The metrics are the gateway's own
        numbers, left as they are (a negative saving stays a number). Lines end in CRLF, as
        RFC 4180 says, which also makes the writer quote a cell holding a lone CR.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([*self.by, *METRICS])
        for row in self.rows if self.by else [self.totals]:
            values = row.as_dict()
            writer.writerow(
                [_cell(values[k]) for k in self.by]
                + ["" if values[k] is None else values[k] for k in METRICS]
            )
        return buffer.getvalue()

    def table(self) -> Table:
        return render_table(self)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A group column's CSV cell, defused if a spreadsheet would take it for a formula."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def fold(
    rows: Iterable[Group],
    totals: Iterable[Group] | None,
    *,
    since: float,
    until: float,
    by: Sequence[str],
    tenant: str | None = None,
    tag: str | None = None,
) -> Report:
    """Fold group sums into rows keyed by ``by``; ``totals`` defaults to the sum of ``rows``.

    Pass separate ``totals`` groups (the main groups) when ``rows`` are tag groups grouped by
    tag, so that a record with several tags is counted once in the totals.
    """
    accs: dict[tuple[str | None, ...], _Acc] = {}
    total = _Acc()
    for group in rows:
        key = tuple(_column(group, name) for name in by)
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _Acc()
        acc.add(group)
        if totals is None:
            total.add(group)
    for group in totals or ():
        total.add(group)
    built = [Row.of(dict(zip(by, key, strict=True)), acc) for key, acc in accs.items()]
    built.sort(key=lambda row: _order(row, by))
    return Report(
        since=since,
        until=until,
        by=tuple(by),
        tenant=tenant,
        tag=tag,
        totals=Row.of({}, total),
        rows=built,
    )


def batch_groups(rows: Iterable[Group]) -> list[Group]:
    """The tag groups of batch lines (their reserved tag ``batch=<id>``), with the batch id as
    the group's tag: ``--by batch`` without a column of its own in any store, so existing
    ledgers report their batches as they are. Requests outside a batch are in the totals."""
    prefix = f"{BATCH_TAG}="
    return [
        group._replace(tag=group.tag.removeprefix(prefix))
        for group in rows
        if group.tag is not None and group.tag.startswith(prefix)
    ]


def _column(group: Group, name: str) -> str | None:
    if name == "day":
        return datetime.fromtimestamp(group.day * DAY_S, UTC).date().isoformat()
    if name in ("tag", "batch"):  # a batch's group carries its id as its tag (batch_groups)
        return None if group.tag in (None, UNTAGGED) else group.tag
    value: str = getattr(group, name)
    return value or None


def _order(row: Row, by: Sequence[str]) -> tuple[Any, ...]:
    """Days in order; within a day (or without days) the dearest first, then by name."""
    day = row.group.get("day") or ""
    cost = row.cost_usd if row.cost_usd is not None else Decimal(-1)
    names = tuple(row.group.get(name) or "" for name in by if name != "day")
    return (day, -cost, names)


def _money(value: Decimal | None) -> str:
    if value is None:
        return "-"
    text = f"{value:f}".rstrip("0")
    whole, _, frac = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${whole.lstrip('-')}.{frac.ljust(2, '0')}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_table(report: Report) -> Table:
    """A rich table: one line per row, then the totals."""
    title = f"Cost from {_when(report.since)} to {_when(report.until)}"
    if report.tenant:
        title += f", tenant {report.tenant}"
    if report.tag:
        title += f", tag {report.tag}"
    table = Table(title=title, show_footer=False, header_style="bold")
    for name in report.by:
        table.add_column(name, overflow="fold")
    for name, justify in (
        ("requests", "right"),
        ("input tok", "right"),
        ("cached", "right"),
        ("output tok", "right"),
        ("cost", "right"),
        ("baseline", "right"),
        ("savings", "right"),
        ("cache sav.", "right"),
        ("routing sav.", "right"),
        ("hit rate", "right"),
        ("$/Mtok", "right"),
        ("unpriced", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in report.rows:
        table.add_row(*[row.group.get(name) or "-" for name in report.by], *_cells(row))
    if report.rows:
        table.add_section()
    table.add_row(
        *(["TOTAL"] + [""] * (len(report.by) - 1) if report.by else []),
        *_cells(report.totals),
        style="bold",
    )
    return table


def _cells(row: Row) -> list[str]:
    return [
        f"{row.requests:,}",
        f"{row.input_tokens:,}",
        f"{row.cached_input_tokens:,}",
        f"{row.output_tokens:,}",
        _money(row.cost_usd),
        _money(row.baseline_cost_usd),
        _money(row.savings_usd),
        _money(row.cache_savings_usd),
        _money(row.routing_savings_usd),
        _rate(row.cache_hit_rate),
        _money(row.effective_usd_per_mtok),
        f"{row.unpriced_requests:,}"
        if not row.unpriced_baseline_requests
        else f"{row.unpriced_requests:,} ({row.unpriced_baseline_requests:,} baseline)",
    ]


def _when(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).strftime("%Y-%m-%d %H:%M UTC")


def gpu_hour_table(prices: dict[str, Price], by_model: Report) -> Table | None:
    """The models priced per GPU hour: the per-million rates their configured throughput
    gives, beside what the ledger charged per million tokens (with ``throughput: measured``,
    each request at its engine's measured throughput). None when no model is priced so."""
    if not prices:
        return None
    charged = {row.group.get("model"): row for row in by_model.rows}
    table = Table(title="Models priced per GPU hour", header_style="bold")
    for name in ("model", "$/GPU h", "throughput", "in tok/s", "out tok/s", "in $/Mtok"):
        table.add_column(name, justify="left" if name == "model" else "right")
    table.add_column("out $/Mtok", justify="right")
    table.add_column("charged $/Mtok (ledger)", justify="right")
    for model, price in sorted(prices.items()):
        row = charged.get(model)
        table.add_row(
            model,
            _money(price.gpu_hour_usd),
            price.throughput,
            f"{price.input_tokens_per_s:,}",
            f"{price.output_tokens_per_s:,}",
            _money(price.input_rate.quantize(NANO)),
            _money(price.output_rate.quantize(NANO)),
            _money(row.effective_usd_per_mtok) if row else "-",
        )
    return table
