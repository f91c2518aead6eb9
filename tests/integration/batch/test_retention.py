"""Retention: the stores delete files and finished batches older than the policy's
``batch.retention``, never a batch still running (on SQLite and on a real Redis)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.batch.redis_store import RedisBatchStore
from gateway.batch.store import BatchStore, SQLiteBatchStore
from gateway.batch.wire import batch_object, file_object
from gateway.policy.batch import BatchConfig


def _batch(batch_id: str, status: str, created_at: int) -> dict[str, Any]:
    batch = batch_object(batch_id, "file-old", "/v1/embeddings", 0, None)
    return {**batch, "status": status, "created_at": created_at}


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_purge_deletes_what_is_old_and_finished(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    store: BatchStore = (
        SQLiteBatchStore(tmp_path / "state.sqlite3")
        if backend == "sqlite"
        else RedisBatchStore(request.getfixturevalue("own_redis").url)
    )
    now = int(time.time())
    try:
        await store.put("file", "t", file_object("file-old", 1, "a.jsonl", "batch", now - 1000))
        await store.put("file", "t", file_object("file-new", 1, "b.jsonl", "batch", now))
        await store.put("batch", "t", _batch("batch_done", "completed", now - 1000))
        await store.put("batch", "t", _batch("batch_running", "in_progress", now - 1000))
        await store.put("batch", "u", _batch("batch_other", "failed", now - 1000))

        assert await store.purge(now - 500) == ["file-old"]

        assert [f["id"] for f in await store.listing("file", "t")] == ["file-new"]
        assert [b["id"] for b in await store.listing("batch", "t")] == ["batch_running"]
        assert await store.listing("batch", "u") == []
        assert await store.unfinished() == [("t", "batch_running")]
        assert await store.purge(now - 500) == []
    finally:
        await store.aclose()


def test_retention_is_at_least_past_a_batchs_window() -> None:
    assert BatchConfig().retention == 30 * 86400
    assert BatchConfig.model_validate({"retention": "7d"}).retention == 7 * 86400
    with pytest.raises(ValueError, match="greater than or equal"):
        BatchConfig.model_validate({"retention": "1d"})
