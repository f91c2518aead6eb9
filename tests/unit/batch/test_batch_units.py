"""The Batch API's pure parts: reading an input file, the batch price, the ``when.batch``
condition, the report's batch groups, and live traffic's quiet time."""

from __future__ import annotations

import json
import time
from decimal import Decimal

from gateway.batch.wire import MAX_ERRORS, read_lines
from gateway.ledger.report import Group, batch_groups
from gateway.ledger.sums import Sums
from gateway.pipeline.cost import cost_usd
from gateway.policy.schema import Price
from gateway.providers import Usage
from gateway.runtime.live import LiveTraffic
from tests.unit.pipeline.test_route import make_policy, req, route_of

URL = "/v1/chat/completions"


def line(custom_id: str, url: str = URL, **extra: object) -> bytes:
    body = {"model": "auto", "messages": [{"role": "user", "content": custom_id}]}
    entry = {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}
    return json.dumps(entry).encode()


def test_a_good_file_reads_as_its_lines_in_order() -> None:
    data = b"\n".join([line("a"), b"", line("b"), line("c")]) + b"\n"
    lines, errors = read_lines(data, URL, max_lines=10)
    assert errors == []
    assert [(x.index, x.custom_id) for x in lines] == [(0, "a"), (1, "b"), (2, "c")]
    assert lines[1].body["messages"][0]["content"] == "b"


def test_every_bad_line_is_named_by_its_number() -> None:
    data = b"\n".join(
        [
            line("a"),
            line("a"),
            line("b", url="/v1/embeddings"),
            line("c", method="GET"),
            b'{"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"}',
            b"[1, 2]",
            line("e", body={"model": "auto", "messages": [], "stream": True}),
        ]
    )
    lines, errors = read_lines(data, URL, max_lines=10)
    assert lines == []
    assert [(e["code"], e["line"]) for e in errors] == [
        ("duplicate_custom_id", 2),
        ("mismatched_url", 3),
        ("invalid_method", 4),
        ("invalid_json_line", 5),
        ("invalid_json_line", 6),
        ("invalid_request", 7),
    ]


def test_too_many_lines_or_none_fail_the_file() -> None:
    _, errors = read_lines(b"\n".join(line(str(i)) for i in range(3)), URL, max_lines=2)
    assert [e["code"] for e in errors] == ["too_many_requests"]
    _, errors = read_lines(b"\n\n", URL, max_lines=2)
    assert [e["code"] for e in errors] == ["empty_file"]
    _, errors = read_lines(b"x\n" * (MAX_ERRORS + 50), URL, max_lines=1000)
    assert len(errors) == MAX_ERRORS


def test_a_batch_line_pays_the_batch_price() -> None:
    price = Price(
        input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal(10), batch_discount=Decimal("0.5")
    )
    usage = Usage(1_000_000, 100_000, 1_100_000)
    assert cost_usd(usage, price) == Decimal("3.5")
    assert cost_usd(usage, price, batch=True) == Decimal("1.75")
    undiscounted = Price(input_per_mtok=Decimal("2.50"), output_per_mtok=Decimal(10))
    assert cost_usd(usage, undiscounted, batch=True) == Decimal("3.5")


def test_when_batch_matches_only_batch_lines() -> None:
    policy = make_policy(
        [
            {"name": "batch-work", "when": {"batch": True}, "to": "b"},
            {"name": "live-only", "when": {"batch": False, "tenant": ["t"]}, "to": "c"},
            {"name": "rest", "to": "a"},
        ]
    )
    assert route_of(policy, req(tags="batch=batch_1")) == ("batch-work", "b")
    assert route_of(policy, req()) == ("live-only", "c")
    assert route_of(policy, req(tenant="other")) == ("rest", "a")


def test_the_report_keeps_the_batch_tag_groups_as_batches() -> None:
    groups = [
        Group(1, "batch=batch_1", "t", "m", "r", "miss", Sums(n=3)),
        Group(1, "team=x", "t", "m", "r", "miss", Sums(n=1)),
        Group(1, "", "t", "m", "r", "miss", Sums(n=2)),
        Group(1, None, "t", "m", "r", "miss", Sums(n=2)),
    ]
    assert [(g.tag, g.sums.n) for g in batch_groups(groups)] == [("batch_1", 3)]


def test_live_traffic_stays_busy_for_its_quiet_time() -> None:
    live = LiveTraffic()
    assert not live.busy(0.5)
    entered = live.enter()
    assert live.busy(0.0)
    live.leave(entered)
    assert live.busy(60.0)
    time.sleep(0.02)
    assert not live.busy(0.01)
