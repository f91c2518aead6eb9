"""Fixtures for the semantic cache against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pytest
import redis.asyncio as aioredis

REDIS_URL = "redis://127.0.0.1:6379/0"
DIM = 384


def unit(seed: int) -> npt.NDArray[np.float32]:
    row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return row / np.linalg.norm(row)


def near(vector: npt.NDArray[np.float32], seed: int, noise: float = 0.1) -> npt.NDArray[np.float32]:
    """A vector at cosine ~0.99 from ``vector``."""
    row = vector + noise * unit(seed) / np.sqrt(2)
    return (row / np.linalg.norm(row)).astype(np.float32)


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        pytest.skip(f"no Redis on 127.0.0.1:6379: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def namespace(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix unique to the test; its keys are deleted afterwards."""
    ns = f"test-semantic-{uuid.uuid4().hex[:12]}"
    yield ns
    keys = [k async for k in redis_client.scan_iter(match=f"{ns}:*")]
    if keys:
        await redis_client.delete(*keys)


class TcpProxy:
    """A TCP proxy to Redis that a test can stop, restart or slow down."""

    def __init__(self, target_port: int = 6379) -> None:
        self.target_port = target_port
        self.port = 0
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)
        self._tasks.difference_update(pumps)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    p = await TcpProxy().start()
    yield p
    await p.stop()
