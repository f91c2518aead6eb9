"""Redis for ledger tests: the shared one (a unique key prefix per test), or our own process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.servers import redis_up

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    if not redis_up(SHARED_REDIS):
        pytest.skip("no Redis on 127.0.0.1:6379 (scripts/test starts one)")
    return SHARED_REDIS


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"test:ledger:{uuid.uuid4().hex}:"
    yield value
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{value}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
