"""The Batch API through the official openai SDK: 1,000 chat lines and 200 embedding lines
uploaded, run against the fake hosted model, polled and downloaded; every custom_id comes back
once with its own answer, each line is in the ledger under its batch at the batch price."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from tests.conftest import Gateway
from tests.fake_upstream import FakeUpstream, embeddings
from tests.integration.batch.conftest import (
    batch_policy,
    chat_line,
    embedding_line,
    responses_lines,
    run_batch,
)

CHAT_LINES = 1000
EMBEDDING_LINES = 200


def test_a_thousand_chat_lines_come_back_once_each(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    lines = [chat_line(f"chat-{i}", f"question number {i}") for i in range(CHAT_LINES)]
    done = run_batch(batch_gateway.client(), lines, "/v1/chat/completions")

    assert done.batch.status == "completed"
    assert done.batch.request_counts is not None
    assert done.batch.request_counts.model_dump() == {
        "total": CHAT_LINES,
        "completed": CHAT_LINES,
        "failed": 0,
    }
    assert done.batch.error_file_id is None
    assert sorted(done.custom_ids) == sorted(line["custom_id"] for line in lines)
    for i in range(CHAT_LINES):
        response = done.output[f"chat-{i}"]["response"]
        assert response["status_code"] == 200
        answer = response["body"]["choices"][0]["message"]["content"]
        assert answer == f"primary says: question number {i}"
    asked = sorted(r.body["messages"][0]["content"] for r in primary.requests)
    assert asked == sorted(f"question number {i}" for i in range(CHAT_LINES))

    records = [r for r in batch_gateway.records(CHAT_LINES) if r.batch_id == done.batch.id]
    assert len(records) == CHAT_LINES
    assert {r.request_id for r in records} == {
        done.output[f"chat-{i}"]["response"]["request_id"] for i in range(CHAT_LINES)
    }
    one = records[0]
    full = (one.input_tokens * Decimal("2.50") + one.output_tokens * Decimal(10)) / 1_000_000
    assert one.cost_usd == full / 2  # the main model's batch_discount: 0.5
    assert one.tags == {"batch": done.batch.id}


def test_two_hundred_embedding_lines_come_back_once_each(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    lines = [embedding_line(f"emb-{i}", f"text to embed {i}") for i in range(EMBEDDING_LINES)]
    done = run_batch(batch_gateway.client(), lines, "/v1/embeddings")

    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(line["custom_id"] for line in lines)
    for i in range(EMBEDDING_LINES):
        body = done.output[f"emb-{i}"]["response"]["body"]
        expected = embeddings({"input": [f"text to embed {i}"]})["data"][0]["embedding"]
        assert body["data"][0]["embedding"] == pytest.approx(expected, abs=1e-6)
    assert len(primary.requests) == EMBEDDING_LINES
    records = [r for r in batch_gateway.records(EMBEDDING_LINES) if r.batch_id == done.batch.id]
    assert len(records) == EMBEDDING_LINES
    assert all(r.model == "embed-small" for r in records)


def test_a_batch_repeating_a_live_request_is_answered_from_the_cache(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    client = batch_gateway.client()
    client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "asked before"}]
    )
    lines = [chat_line("again", "asked before"), chat_line("new", "never asked")]
    done = run_batch(client, lines, "/v1/chat/completions")

    assert done.output["again"]["response"]["body"]["choices"][0]["message"]["content"] == (
        "primary says: asked before"
    )
    assert [r.body["messages"][0]["content"] for r in primary.requests] == [
        "asked before",
        "never asked",
    ]
    records = {r.request_id: r for r in batch_gateway.records(3)}
    hit = records[done.output["again"]["response"]["request_id"]]
    assert (hit.cache, hit.cost_usd, hit.batch_id) == ("exact", Decimal(0), done.batch.id)


def test_a_line_the_model_refuses_goes_to_the_error_file(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    lines = [
        chat_line("fine", "hello"),
        chat_line("bad-role", "x", messages=[{"role": "wizard", "content": "hi"}]),
    ]
    done = run_batch(batch_gateway.client(), lines, "/v1/chat/completions")

    assert done.batch.status == "completed"
    assert done.batch.request_counts is not None
    assert (done.batch.request_counts.completed, done.batch.request_counts.failed) == (1, 1)
    assert set(done.output) == {"fine"}
    error = done.errors["bad-role"]["response"]
    assert error["status_code"] == 400
    assert error["body"]["error"]["type"] == "invalid_request_error"
    assert error["body"]["error"]["param"] == "messages[0].role"
    records = {r.request_id: r for r in batch_gateway.records(2)}
    assert records[error["request_id"]].batch_id == done.batch.id
    assert records[error["request_id"]].status == 400


def test_when_batch_sends_batch_lines_elsewhere(
    start_gateway: Callable[..., Gateway], primary: FakeUpstream, backup: FakeUpstream
) -> None:
    rule = "- {name: batch-work, when: {batch: true}, to: backup}\n"
    gateway = start_gateway(batch_policy(primary, backup, extra_routes=rule))
    client = gateway.client()
    live = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "live one"}]
    )
    assert live.headers["x-gateway-route"] == "default"
    done = run_batch(client, [chat_line("b", "batch one")], "/v1/chat/completions")

    answer = done.output["b"]["response"]["body"]["choices"][0]["message"]["content"]
    assert answer == "backup says: batch one"
    record = next(r for r in gateway.records(2) if r.batch_id == done.batch.id)
    assert (record.route, record.model) == ("batch-work", "backup")


LOCAL_MODEL = """\
  local-small:
    provider: local_engine
    model: smollm2-135m-instruct
    engine: {{device: cpu, cache_dir: "{cache_dir}"}}
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.02}}
"""


@pytest.mark.model
def test_a_batch_shared_by_the_hosted_model_and_the_local_engine(
    start_gateway: Callable[..., Gateway],
    primary: FakeUpstream,
    backup: FakeUpstream,
    request: pytest.FixtureRequest,
) -> None:
    """Most lines go to the (fake) hosted model; the lines that name the bundled SmolLM2 are
    generated by the real local engine, in the same batch."""
    local = LOCAL_MODEL.format(cache_dir=request.config.cache.mkdir("local-engine-models"))
    text = batch_policy(primary, backup).replace("models:\n", "models:\n" + local, 1)
    gateway = start_gateway(text)
    lines = [
        chat_line(f"local-{i}", f"Name a color ({i}).", model="local-small", max_tokens=8)
        if i % 10 == 0
        else chat_line(f"hosted-{i}", f"hosted question {i}")
        for i in range(40)
    ]
    done = run_batch(gateway.client(), lines, "/v1/chat/completions")

    assert done.batch.status == "completed"
    assert sorted(done.custom_ids) == sorted(line["custom_id"] for line in lines)
    for custom_id, entry in done.output.items():
        body = entry["response"]["body"]
        content = body["choices"][0]["message"]["content"]
        if custom_id.startswith("local-"):
            assert content.strip() and "says:" not in content
            assert 0 < body["usage"]["completion_tokens"] <= 8
        else:
            assert content == f"primary says: hosted question {custom_id.removeprefix('hosted-')}"
    assert len(primary.requests) == 36
    models = {r.request_id: r.model for r in gateway.records(40) if r.batch_id == done.batch.id}
    assert sorted(models.values()) == ["local-small"] * 4 + ["main"] * 36


def test_responses_lines_come_back_as_response_objects(
    batch_gateway: Gateway, primary: FakeUpstream
) -> None:
    lines = responses_lines(3)
    done = run_batch(batch_gateway.client(), lines, "/v1/responses")

    assert done.batch.status == "completed"
    for i in range(3):
        body = done.output[f"r{i}"]["response"]["body"]
        assert body["object"] == "response" and body["status"] == "completed"
        text = body["output"][0]["content"][0]["text"]
        assert text == f"primary says: responses question {i}"
    assert len(primary.requests) == 3
