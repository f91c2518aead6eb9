"""Batch lines sent to a provider's own batch API (``batch_api`` on the model), through the
official openai SDK: one upstream batch per gateway batch holding every line the caches did not
answer, each custom_id back once with its answer, the ledger at the batch price; cancel and an
upstream batch that fails or expires; a group too small for the model's minimum called line by
line. OpenAI's Batch API, Anthropic's Message Batches and Bedrock's batch inference, each on
the fake of `tests.fake_batch_upstream`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from tests.conftest import Gateway
from tests.fake_batch_upstream import FakeBatches
from tests.fake_upstream import FakeUpstream
from tests.integration.batch.conftest import (
    chat_line,
    create,
    responses_lines,
    results,
    run_batch,
    wait,
)
from tests.integration.batch.upstream import upstream_policy
from tests.servers import module_fixtures

_fake_batches, fake_batches = module_fixtures("fake_batches", FakeBatches)
APIS = ["openai", "anthropic", "bedrock"]
LINES = 40


@pytest.mark.parametrize("api", APIS)
def test_the_lines_the_caches_do_not_answer_go_upstream_as_one_batch(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
    api: str,
) -> None:
    gateway = start_gateway(upstream_policy(primary, backup, fake_batches, api))
    client = gateway.client()
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "seen"}])
    lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(LINES)]
    lines += [chat_line("cached", "seen"), chat_line("refused", "REFUSE this")]
    done = run_batch(client, lines, "/v1/chat/completions")

    assert fake_batches.problems == []
    assert [s.api for s in fake_batches.requests] == [api]  # one upstream batch
    assert sorted(fake_batches.prompts()) == sorted(
        [f"prompt {i}" for i in range(LINES)] + ["REFUSE this"]
    )
    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(line["custom_id"] for line in lines)
    for i in range(LINES):
        body = done.output[f"line-{i}"]["response"]["body"]
        assert body["choices"][0]["message"]["content"] == f"batchy says: prompt {i}"
    cached = done.output["cached"]["response"]["body"]["choices"][0]["message"]["content"]
    assert cached == "primary says: seen"
    refused = done.errors["refused"]["response"]
    assert refused["status_code"] == 400
    assert refused["body"]["error"]["type"] == "invalid_request_error"
    assert [r.body["messages"][0]["content"] for r in primary.requests] == ["seen"]

    records = [r for r in gateway.records(len(lines) + 1) if r.batch_id == done.batch.id]
    assert len(records) == len(lines)
    sent = [r for r in records if r.model == "bulk" and r.status == 200]
    assert len(sent) == LINES
    for record in sent:
        full = (record.input_tokens * 2 + record.output_tokens * 8) / Decimal(1_000_000)
        assert record.input_tokens > 0 and record.cost_usd == full / 2

    report = CliRunner().invoke(
        app,
        ["report", "--by", "batch", "--since", "1h", "--format", "json"],
        env={"GATEWAY_DATA_DIR": str(gateway.data_dir), "GATEWAY_REDIS_URL": ""},
    )
    assert report.exit_code == 0, report.output
    (row,) = json.loads(report.output)["rows"]
    assert row["batch"] == done.batch.id and row["requests"] == len(lines)
    assert Decimal(row["cost_usd"]) == sum((r.cost_usd or Decimal(0)) for r in records)


@pytest.mark.parametrize("api", APIS)
def test_cancelling_a_batch_cancels_its_upstream_batch(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
    api: str,
) -> None:
    fake_batches.hold = True
    gateway = start_gateway(upstream_policy(primary, backup, fake_batches, api))
    client = gateway.client()
    lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(10)]
    batch = create(client, lines, "/v1/chat/completions")
    deadline = time.monotonic() + 30
    while not fake_batches.requests:
        assert time.monotonic() < deadline, "nothing was sent upstream"
        time.sleep(0.05)
    client.batches.cancel(batch.id)
    done = results(client, wait(client, batch.id))

    assert fake_batches.cancels == [fake_batches.requests[0].id]
    assert done.batch.status == "cancelled"
    assert done.output == {}
    assert {cid: e["response"]["body"]["error"]["code"] for cid, e in done.errors.items()} == {
        f"line-{i}": "batch_cancelled" for i in range(10)
    }


@pytest.mark.parametrize(
    ("api", "end_as"),
    [
        ("openai", "failed"),
        ("openai", "expired"),
        ("anthropic", "expired"),
        ("bedrock", "failed"),
        ("bedrock", "expired"),
    ],
)
def test_an_upstream_batch_that_fails_or_expires_puts_its_lines_in_the_error_file(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
    api: str,
    end_as: str,
) -> None:
    fake_batches.end_as = end_as
    gateway = start_gateway(upstream_policy(primary, backup, fake_batches, api))
    lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(6)]
    done = run_batch(gateway.client(), lines, "/v1/chat/completions")

    assert len(fake_batches.requests) == 1
    assert done.batch.status == "completed"  # the gateway batch ran; its lines failed
    assert done.output == {}
    code = "batch_expired" if end_as == "expired" else "upstream_batch_failed"
    for i in range(6):
        response = done.errors[f"line-{i}"]["response"]
        assert (response["status_code"], response["body"]["error"]["code"]) == (502, code)
    assert primary.requests == [] and backup.requests == []


def test_a_group_under_the_models_minimum_is_called_line_by_line(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
) -> None:
    policy = upstream_policy(primary, backup, fake_batches, "openai", min_lines=10)
    gateway = start_gateway(policy)
    lines = [chat_line(f"line-{i}", f"prompt {i}") for i in range(3)]
    done = run_batch(gateway.client(), lines, "/v1/chat/completions")

    assert fake_batches.requests == []
    assert sorted(b["messages"][0]["content"] for b in fake_batches.live) == [
        f"prompt {i}" for i in range(3)
    ]
    assert {cid: e["response"]["status_code"] for cid, e in done.output.items()} == {
        f"line-{i}": 200 for i in range(3)
    }


def test_responses_lines_go_upstream_too(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    fake_batches: FakeBatches,
) -> None:
    gateway = start_gateway(upstream_policy(primary, backup, fake_batches, "anthropic"))
    lines = responses_lines(3)
    done = run_batch(gateway.client(), lines, "/v1/responses")

    assert len(fake_batches.requests) == 1
    for i in range(3):
        body = done.output[f"r{i}"]["response"]["body"]
        assert body["object"] == "response" and body["status"] == "completed"
        assert body["output"][0]["content"][0]["text"] == f"batchy says: responses question {i}"
    assert primary.requests == []
