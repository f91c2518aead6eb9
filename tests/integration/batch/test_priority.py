"""Batch lines carry the policy's priority to a model that schedules by it; live requests carry
none, and a client cannot set its own there."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream
from tests.integration.batch.conftest import batch_policy, chat_line, run_batch


def test_batch_lines_carry_the_policys_priority_and_live_requests_none(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    text = batch_policy(primary, backup).replace(
        "model: upstream-main\n", "model: upstream-main\n    priority_scheduling: true\n", 1
    )
    gateway = start_gateway(text.replace("batch: {", "batch: {priority: 3, ", 1))
    client = gateway.client()
    client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "live one"}],
        extra_body={"priority": -7},  # a tenant trying to go ahead of everyone
    )
    done = run_batch(
        client, [chat_line("a", "line a"), chat_line("b", "line b")], "/v1/chat/completions"
    )
    assert set(done.output) == {"a", "b"}

    bodies = {r.body["messages"][0]["content"]: r.body for r in primary.requests}
    assert "priority" not in bodies["live one"]
    assert bodies["line a"]["priority"] == bodies["line b"]["priority"] == 3


def test_a_model_that_does_not_schedule_by_priority_gets_the_body_unchanged(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    gateway = start_gateway(batch_policy(primary, backup))
    client = gateway.client()
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "live"}], extra_body={"priority": 2}
    )
    run_batch(client, [chat_line("a", "line a")], "/v1/chat/completions")
    bodies = {r.body["messages"][0]["content"]: r.body for r in primary.requests}
    assert bodies["live"]["priority"] == 2  # passed through, as every unknown field is
    assert "priority" not in bodies["line a"]
