"""The embedder with the real all-MiniLM-L6-v2: vectors, and micro-batching of concurrent
calls into one forward pass off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.ml.embedder import Embedder

pytestmark = pytest.mark.model

TEXTS = [
    "How do I reverse a list in Python?",
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain the difference between TCP and UDP in detail, with examples of when to use each.",
    "hi",
    "Solve 3x + 5 = 20 for x.",
]


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    loaded = Embedder.load(threads=0, batch_window_s=0.05, max_batch=32)
    yield loaded
    loaded._executor.shutdown(wait=True)


def test_vectors_are_unit_rows(embedder: Embedder) -> None:
    vectors = embedder.embed_sync(TEXTS, batch_size=4)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    similar = embedder.embed_sync(["How can I reverse a Python list?"])[0]
    assert similar @ vectors[0] > 0.8 > similar @ vectors[2]


async def test_concurrent_calls_share_one_forward_pass(embedder: Embedder) -> None:
    expected = embedder.embed_sync(TEXTS)
    before = embedder.forward_passes
    results = await asyncio.gather(*(embedder.embed([t]) for t in TEXTS))
    assert embedder.forward_passes == before + 1
    for got, want in zip(results, expected, strict=True):
        assert got.shape == (1, 384)
        assert np.allclose(got[0], want, atol=1e-4)


async def test_a_full_batch_goes_without_waiting(embedder: Embedder) -> None:
    embedder.max_batch = 4
    try:
        before = embedder.forward_passes
        results = await asyncio.gather(*(embedder.embed([t]) for t in TEXTS))
        assert embedder.forward_passes == before + 2  # 4 texts, then the other 2
        assert [r.shape[0] for r in results] == [1] * len(TEXTS)
    finally:
        embedder.max_batch = 32


async def test_the_event_loop_keeps_running_during_a_forward_pass(embedder: Embedder) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await embedder.embed(["a long text " * 40] * 16)
    ticker.cancel()
    assert ticks > 1


async def test_aclose_fails_later_calls() -> None:
    embedder = Embedder.load(threads=0)
    assert (await embedder.embed(["x"])).shape == (1, 384)
    await embedder.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await embedder.embed(["x"])
