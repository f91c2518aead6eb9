"""``gateway report --by batch``: each batch's lines, cost and savings in one row, from the
ledger the running gateway writes (requests outside a batch are in the totals only)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

from typer.testing import CliRunner

from gateway.cli import app
from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream
from tests.integration.batch.conftest import batch_policy, chat_line, run_batch


def test_report_by_batch_shows_each_batchs_cost_and_savings(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    rule = "- {name: batch-work, when: {batch: true}, to: backup}\n"
    gateway = start_gateway(batch_policy(primary, backup, extra_routes=rule))
    client = gateway.client()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "live"}])
    first = run_batch(
        client, [chat_line(f"a{i}", f"first {i}") for i in range(3)], "/v1/chat/completions"
    )
    second = run_batch(
        client, [chat_line(f"b{i}", f"second {i}") for i in range(5)], "/v1/chat/completions"
    )
    records = gateway.records(9)
    assert len(records) == 9

    result = CliRunner().invoke(
        app,
        ["report", "--by", "batch", "--since", "1h", "--format", "json"],
        env={"GATEWAY_DATA_DIR": str(gateway.data_dir), "GATEWAY_REDIS_URL": ""},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {row["batch"]: row for row in report["rows"]}
    assert set(rows) == {first.batch.id, second.batch.id}
    for batch, lines in ((first.batch, 3), (second.batch, 5)):
        row, mine = rows[batch.id], [r for r in records if r.batch_id == batch.id]
        assert row["requests"] == lines == len(mine)
        assert Decimal(row["cost_usd"]) == sum((r.cost_usd or Decimal(0)) for r in mine)
        assert Decimal(row["baseline_cost_usd"]) > Decimal(row["cost_usd"]) > 0
    assert report["totals"]["requests"] == 9  # the live request too


def test_batch_and_tag_are_not_grouped_together(batch_gateway: Gateway) -> None:
    result = CliRunner().invoke(
        app,
        ["report", "--by", "batch,tag"],
        env={"GATEWAY_DATA_DIR": str(batch_gateway.data_dir), "GATEWAY_REDIS_URL": ""},
    )
    assert result.exit_code == 2
    assert "group by batch or by tag" in result.output
