"""The pieces of upstream batches that need no server: the ``batch_api`` option and its
validation, and the batch store's upstream jobs and take-over of a stopped replica's lines, on
SQLite and on a real Redis (a prefix of the test's own)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest

from gateway.batch.redis_store import RedisBatchStore
from gateway.batch.store import BatchStore, SQLiteBatchStore
from gateway.policy.models import ModelConfig

OPENAI = {"provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9"}


def test_batch_api_true_is_its_defaults_and_false_is_none() -> None:
    on = ModelConfig.model_validate({**OPENAI, "batch_api": True}).batch_api
    assert on is not None and (on.flush_s, on.min_lines, on.max_lines) == (2.0, 1, 50_000)
    assert ModelConfig.model_validate({**OPENAI, "batch_api": False}).batch_api is None


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"provider": "azure_openai", "model": "m", "api_key": "k"}, "not azure_openai"),
        ({**OPENAI, "kind": "embeddings"}, "(embeddings)"),
        ({"provider": "bedrock", "model": "m", "aws": {"region": "us-east-1"}}, "s3_uri"),
    ],
)
def test_batch_api_is_refused_where_the_gateway_cannot_speak_it(
    model: dict[str, Any], says: str
) -> None:
    with pytest.raises(pydantic.ValidationError, match="batch_api") as caught:
        ModelConfig.model_validate({**model, "batch_api": True})
    assert says in str(caught.value)


def test_bedrock_batch_api_takes_its_bucket_and_role() -> None:
    options = {"s3_uri": "s3://bucket/prefix", "role_arn": "arn:aws:iam::1:role/r"}
    model = {"provider": "bedrock", "model": "m", "aws": {"region": "us-east-1"}}
    found = ModelConfig.model_validate({**model, "batch_api": options}).batch_api
    assert found is not None and found.s3_uri == "s3://bucket/prefix"


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BatchStore:
    if request.param == "sqlite":
        return SQLiteBatchStore(tmp_path / "state.sqlite3")
    return RedisBatchStore("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}:")


def test_upstream_jobs_are_kept_until_the_lines_are_forgotten(store: BatchStore) -> None:
    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        job = {"id": "ubatch_1", "indexes": [0, 2], "upstream_id": None}
        await store.put_job("batch_a", job)
        await store.put_job("batch_a", {**job, "upstream_id": "batch_up"})
        await store.put_job("batch_b", {**job, "id": "ubatch_2"})
        kept = await store.jobs("batch_a")
        await store.forget_lines("batch_a")
        gone = await store.jobs("batch_a")
        await store.forget_lines("batch_b")
        await store.aclose()
        return kept, gone

    kept, gone = asyncio.run(run())
    assert kept == [{"id": "ubatch_1", "indexes": [0, 2], "upstream_id": "batch_up"}]
    assert gone == []


def test_a_line_is_taken_over_only_from_its_owner_and_only_without_a_result(
    store: BatchStore,
) -> None:
    async def run() -> list[bool]:
        await store.claim("batch_c", 0, "dead")
        await store.claim("batch_c", 1, "dead")
        await store.finish("batch_c", 1, True, b"{}")
        taken = [
            await store.reclaim("batch_c", 0, "someone-else", "me"),
            await store.reclaim("batch_c", 0, "dead", "me"),
            await store.reclaim("batch_c", 0, "dead", "another"),  # already moved
            await store.reclaim("batch_c", 1, "dead", "me"),  # it has its result
        ]
        owners = {i: s.owner for i, s in (await store.lines("batch_c")).items()}
        await store.forget_lines("batch_c")
        await store.aclose()
        return [*taken, owners == {0: "me", 1: "dead"}]

    assert asyncio.run(run()) == [False, True, False, False, True]
