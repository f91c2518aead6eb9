"""The serving models, loaded once and run off the event loop: what the embed and classify
stages ask of them.

A request is embedded once (the text of its last user message, all-MiniLM-L6-v2); the same
vector serves the semantic cache and the difficulty classifier. Both models run off the event
loop: the embedder in its micro-batching worker thread, the classifier head in a one-thread
executor of its own (the text features' regular expressions and the head: 0.1-0.5 ms, too long
to hold the loop for).

The models load at start when the policy uses them, and otherwise on the first request that
needs them (after a reload turned the semantic cache or a difficulty rule on), once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.ml.classifier import Classifier, Judgement, features_of
from gateway.ml.embedder import Embedder, Vectors

__all__ = ["Models", "Understanding"]


@dataclass(frozen=True, slots=True)
class Understanding:
    """The request's cache text and its embedding (a unit-length float32 row)."""

    text: str
    vector: Vectors


def _judge(
    classifier: Classifier, messages: Sequence[Mapping[str, Any]], has_tools: bool, vector: Vectors
) -> Judgement:
    """In the classify worker: the text features (regular expressions) and the head."""
    return classifier.classify(vector, features_of(messages, has_tools))


class Models:
    """The embedder and the classifier, loaded on first need and shared by all requests."""

    def __init__(self, cache_dir: Path, data_dir: Path | None = None) -> None:
        """``data_dir``: where a head retrained on this deployment's traffic may be
        (``Classifier.for_deployment``); None: the shipped head."""
        self._cache_dir = cache_dir
        self._data_dir = data_dir
        self._embedder: Embedder | None = None
        self._classifier: Classifier | None = None
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify")

    async def prepare(self, *, embedder: bool, classifier: bool) -> None:
        """Load the models a policy uses now rather than on the first request (blocking work,
        in a thread)."""
        if embedder:
            await self._embedding_model()
        if classifier:
            await self._classifier_model()

    async def understand(self, text: str) -> Understanding:
        embedder = self._embedder or await self._embedding_model()
        vectors = await embedder.embed([text])
        return Understanding(text, vectors[0])

    async def classify(
        self, messages: Sequence[Mapping[str, Any]], has_tools: bool, vector: Vectors
    ) -> Judgement:
        classifier = self._classifier or await self._classifier_model()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, _judge, classifier, messages, has_tools, vector
        )

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()
        self._executor.shutdown(wait=False)

    async def _embedding_model(self) -> Embedder:
        async with self._lock:
            if self._embedder is None:
                self._embedder = await asyncio.to_thread(Embedder.load, cache_dir=self._cache_dir)
                if self._classifier is not None:
                    self._classifier.check_embedder(self._embedder.signature)
            return self._embedder

    async def _classifier_model(self) -> Classifier:
        async with self._lock:
            if self._classifier is None:
                classifier = await asyncio.to_thread(
                    Classifier.load
                    if self._data_dir is None
                    else lambda: Classifier.for_deployment(self._data_dir)  # type: ignore[arg-type]
                )
                if self._embedder is not None:
                    classifier.check_embedder(self._embedder.signature)
                self._classifier = classifier
            return self._classifier
