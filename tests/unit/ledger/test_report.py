"""Report math: savings split, unpriced requests, exact decimals, JSON and CSV shapes."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from decimal import Decimal

import pytest
from rich.console import Console

from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import METRICS, Group, Report, fold
from gateway.ledger.sums import Sums, from_nanos, main_key, tag_keys, to_nanos
from gateway.ledger.window import parse_by, parse_when
from tests.unit.ledger.helpers import DAY, T0, rec


def main_groups(records: Iterable[LedgerRecord]) -> list[Group]:
    groups: dict[tuple[object, ...], Sums] = {}
    for r in records:
        groups.setdefault(main_key(r), Sums()).add(Sums.of(r))
    return [Group(k[0], None, k[1], k[2], k[3], k[4], s) for k, s in groups.items()]


def tag_groups(records: Iterable[LedgerRecord]) -> list[Group]:
    groups: dict[tuple[object, ...], Sums] = {}
    for r in records:
        for key in tag_keys(r):
            groups.setdefault(key, Sums()).add(Sums.of(r))
    return [Group(*k, s) for k, s in groups.items()]  # type: ignore[arg-type]


def report_of(records: list[LedgerRecord], by: tuple[str, ...] = ()) -> Report:
    if "tag" in by:
        return fold(tag_groups(records), main_groups(records), since=0, until=1, by=by)
    return fold(main_groups(records), None, since=0, until=1, by=by)


MIX = [
    rec(cost="0.001", baseline="0.004"),  # routed to a cheaper model: saves 0.003
    rec(cost="0", baseline="0.004", cache="exact", model="large"),  # cache: saves 0.004
    rec(cost="0", baseline="0.0025", cache="semantic"),  # cache: saves 0.0025
    rec(cost="0.005", baseline="0.004", model="large"),  # dearer than the baseline: -0.001
    rec(cost=None, baseline="0.004", model="unpriced"),  # no price: never a zero
    rec(cost="0.002", baseline=None),  # no baseline price
]


def test_savings_split_into_cache_and_routing_and_unpriced_counted_apart() -> None:
    t = report_of(MIX).totals
    assert t.requests == 6
    assert t.cost_usd == Decimal("0.008")
    assert t.baseline_cost_usd == Decimal("0.0185")
    assert t.savings_usd == Decimal("0.0085")
    assert t.cache_savings_usd == Decimal("0.0065")
    assert t.routing_savings_usd == Decimal("0.002")
    assert t.cache_savings_usd + t.routing_savings_usd == t.savings_usd
    assert t.unpriced_requests == 1
    assert t.unpriced_baseline_requests == 1
    assert t.cache_hit_rate == pytest.approx(2 / 6, abs=1e-6)
    # $0.008 over the 5 priced requests' 6000 tokens
    assert t.effective_usd_per_mtok == Decimal("1.333333333")
    assert t.input_tokens == 6000 and t.output_tokens == 1200


def test_rows_by_model_and_a_row_with_only_unpriced_requests_has_null_money() -> None:
    report = report_of(MIX, ("model",))
    rows = {row.group["model"]: row for row in report.rows}
    assert set(rows) == {"small", "large", "unpriced"}
    unpriced = rows["unpriced"]
    assert unpriced.cost_usd is None
    assert unpriced.savings_usd is None and unpriced.effective_usd_per_mtok is None
    assert unpriced.baseline_cost_usd == Decimal("0.004")
    assert unpriced.unpriced_requests == 1
    large = rows["large"]
    assert large.cache_savings_usd == Decimal("0.004")
    assert large.routing_savings_usd == Decimal("-0.001")
    assert sum(r.requests for r in report.rows) == report.totals.requests
    # the dearest first
    assert [r.group["model"] for r in report.rows] == ["large", "small", "unpriced"]


def test_money_is_exact_to_a_nano_dollar() -> None:
    records = [rec(cost="0.1", baseline="0.3") for _ in range(10)]
    records += [rec(cost="0.000000001", baseline="0.000000003") for _ in range(3)]
    t = report_of(records).totals
    assert t.cost_usd == Decimal("1.000000003")
    assert t.savings_usd == Decimal("2.000000006")
    assert f"{t.cost_usd:f}" == "1.000000003"
    # one rounding, half-even, when a record is written; then every sum is exact
    assert to_nanos(Decimal("0.0000000015")) == 2
    assert to_nanos(Decimal("0.0000000025")) == 2
    assert from_nanos(to_nanos(Decimal("2.50"))) == Decimal("2.5")


def test_json_shape_matches_the_issue() -> None:
    body = json.loads(report_of(MIX, ("model", "cache")).to_json())
    assert set(body) == {"totals", "rows"}
    assert list(body["totals"]) == list(METRICS)
    for row in body["rows"]:
        assert list(row) == ["model", "cache", *METRICS]
    totals = body["totals"]
    assert totals["cost_usd"] == "0.008000000"
    assert totals["savings_usd"] == "0.008500000"
    assert isinstance(totals["requests"], int)
    assert isinstance(totals["cache_hit_rate"], float)
    for key in ("cost_usd", "baseline_cost_usd", "savings_usd", "effective_usd_per_mtok"):
        assert Decimal(totals[key]).as_tuple().exponent == -9
    unpriced = next(r for r in body["rows"] if r["model"] == "unpriced")
    assert unpriced["cost_usd"] is None


def test_csv_has_a_header_and_one_line_per_row_or_the_totals() -> None:
    report = report_of(MIX, ("model",))
    lines = list(csv.reader(io.StringIO(report.to_csv())))
    assert lines[0] == ["model", *METRICS]
    assert len(lines) == 1 + len(report.rows)
    first = dict(zip(lines[0], lines[1], strict=True))
    assert first["model"] == "large" and first["cost_usd"] == "0.005000000"
    totals_only = list(csv.reader(io.StringIO(report_of(MIX).to_csv())))
    assert len(totals_only) == 2 and totals_only[1][0] == "6"
    unpriced = next(line for line in lines if line[0] == "unpriced")
    assert unpriced[lines[0].index("cost_usd")] == ""  # null, not 0


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_defuses_cells_a_spreadsheet_would_run_as_formulas(start: str) -> None:
    evil = start + 'HYPERLINK("http://x.test","y")'
    records = [
        rec(tenant=evil, model=evil, route=evil, tags={evil: "1"}),
        rec(cost="0.005", baseline="0.004", tenant="team-b", tags={"app": start + "1"}),
    ]
    report = report_of(records, ("tenant", "model", "route", "tag"))
    lines = list(csv.reader(io.StringIO(report.to_csv(), newline="")))
    header = lines[0]
    rows = [dict(zip(header, line, strict=True)) for line in lines[1:]]
    first = next(r for r in rows if r["tenant"] != "team-b")
    for column in ("tenant", "model", "route"):
        assert first[column] == "'" + evil
    assert first["tag"] == "'" + evil + "=1"
    other = next(r for r in rows if r["tenant"] == "team-b")
    assert other["tag"] == f"app={start}1"  # starts with a letter: left as it is
    assert other["routing_savings_usd"] == "-0.001000000"  # the gateway's numbers stay numbers
    assert all(not line[0].startswith(("=", "+", "-", "@", "\t", "\r")) for line in lines)


def test_by_tag_counts_a_record_with_two_tags_in_two_rows_and_once_in_totals() -> None:
    records = [
        rec(tags={"team": "x", "env": "prod"}),
        rec(tags={"team": "y"}),
        rec(),
    ]
    report = report_of(records, ("tag",))
    rows = {row.group["tag"]: row.requests for row in report.rows}
    assert rows == {"env=prod": 1, "team=x": 1, "team=y": 1, None: 1}
    assert report.totals.requests == 3
    assert report.totals.cost_usd == Decimal("0.003")


def test_rows_by_day_are_in_order() -> None:
    records = [rec(T0 + 2 * DAY), rec(T0), rec(T0 + DAY, cost="0.5")]
    days = [row.group["day"] for row in report_of(records, ("day",)).rows]
    assert days == ["2025-06-15", "2025-06-16", "2025-06-17"]


def test_table_renders_totals() -> None:
    console = Console(width=250, record=True)
    console.print(report_of(MIX, ("model",)).table())
    text = console.export_text()
    assert "TOTAL" in text and "$0.008" in text and "$0.0085" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 1_000_000.0 - 7 * 86_400),
        ("24h", 1_000_000.0 - 86_400),
        ("90s", 1_000_000.0 - 90),
        ("2w", 1_000_000.0 - 14 * 86_400),
        ("now", 1_000_000.0),
        ("1700000000", 1_700_000_000.0),
        ("2025-06-15", T0),
        ("2025-06-15T01:00:00", T0 + 3600),
        ("2025-06-15T03:00:00+02:00", T0 + 3600),
        ("2025-06-15T01:00:00Z", T0 + 3600),
    ],
)
def test_parse_when(text: str, expected: float) -> None:
    assert parse_when(text, now=1_000_000.0) == expected


def test_parse_when_and_by_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_when("last tuesday", now=0)
    with pytest.raises(ValueError, match="cannot group by 'colour'"):
        parse_by("model,colour")
    assert parse_by("Model, route,model") == ("model", "route")
    assert parse_by(["day", "cache,tag"]) == ("day", "cache", "tag")
