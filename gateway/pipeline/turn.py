"""One request on its way through the pipeline (a `Turn`), and what it ends as.

Every stage takes the turn: the request, the policy runtime it started with, the services and
its trace, plus what earlier stages found out (the cache outcome, the embedding, the
classifier's judgement). A stage reads what it needs and adds what it learns, so the stages'
signatures stay one argument wide however much the flow grows.

A turn ends as `Completed` (a whole answer's bytes) or `Streaming` (an answer's chunks, still
arriving): the pipeline's results, which a front door turns into its wire format.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from gateway.ml.classifier import Judgement
from gateway.ml.loader import Understanding
from gateway.pipeline.normalize import ChatRequest
from gateway.pipeline.services import Services
from gateway.runtime.store import Runtime
from gateway.telemetry import RequestTrace

CacheOutcome = Literal["miss", "bypass", "exact", "semantic"]
"""``x-gateway-cache``: what the caches did for the request."""


@dataclass(slots=True)
class Turn:
    request: ChatRequest
    runtime: Runtime
    """The policy in force when the request arrived; a reload meanwhile does not change it."""
    services: Services
    trace: RequestTrace
    cache: CacheOutcome = "bypass"
    cache_score: float | None = None
    """On a semantic hit: the similarity of the question to the cached one."""
    understanding: Understanding | None = None
    """The request's text and embedding, when the semantic cache or the classifier needs it."""
    judgement: Judgement | None = None
    """The classifier's difficulty and category, when it ran."""
    route: str | None = None
    model: str | None = None
    """The rule that chose the model, and the model, once routed (a failed request's ledger
    record names them)."""

    @property
    def difficulty(self) -> float | None:
        return None if self.judgement is None else self.judgement.difficulty


@dataclass(frozen=True, slots=True)
class Completed:
    request: ChatRequest
    route: str
    model: str
    """The policy model that answered (a fallback, perhaps) or whose cached answer was served."""
    body: bytes
    """A ``chat.completion`` object."""
    cost_usd: Decimal | None
    cache: CacheOutcome
    difficulty: float | None = None
    cache_score: float | None = None


@dataclass(frozen=True, slots=True)
class Streaming:
    request: ChatRequest
    route: str
    model: str
    chunks: AsyncGenerator[bytes, None]
    """The SSE ``data`` payloads the client gets (``chat.completion.chunk`` objects); from the
    pipeline, a `Chunks`, which a door can also read in batches."""
    cache: CacheOutcome
    cost_usd: Decimal | None = None
    """Known before the stream only for a cache hit (zero)."""
    difficulty: float | None = None
    cache_score: float | None = None


class Chunks(AsyncGenerator[bytes, None]):
    """A stream's chunks: one at a time, as from any async generator, or in the batches in
    which they arrived (`batches`), so that a door that passes them on unchanged can write
    all those already here to its client at once, instead of paying a write per chunk.

    Closing it closes the stream it reads.
    """

    __slots__ = ("_batch", "_batches", "_next", "whole")

    def __init__(self, batches: AsyncGenerator[list[bytes], None]) -> None:
        self._batches = batches
        """Never an empty batch."""
        self._batch: list[bytes] = []
        self._next = 0
        self.whole: list[bytes] | None = None
        """Every chunk, when all were known before the stream began (`known`)."""

    @classmethod
    def known(cls, chunks: list[bytes]) -> Chunks:
        """Chunks all known in advance (a cached answer's): one batch, and `whole`, so that a
        door can write them as one plain response instead of streaming them."""
        stream = cls(_at_once(chunks))
        stream.whole = chunks
        return stream

    async def batches(self) -> AsyncGenerator[list[bytes], None]:
        """The chunks not yet taken, in batches; closing this closes the stream."""
        try:
            if self._next < len(self._batch):
                yield self._batch[self._next :]
            async for batch in self._batches:
                yield batch
        finally:
            await self._batches.aclose()

    async def __anext__(self) -> bytes:
        if self._next == len(self._batch):
            self._batch, self._next = await anext(self._batches), 0
        self._next += 1
        return self._batch[self._next - 1]

    async def asend(self, value: None) -> bytes:
        return await self.__anext__()

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> bytes:
        self._batch, self._next = await self._batches.athrow(typ, val, tb), 1
        return self._batch[0]

    async def aclose(self) -> None:
        await self._batches.aclose()


async def _at_once(chunks: list[bytes]) -> AsyncGenerator[list[bytes], None]:
    yield chunks


def batches(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[list[bytes], None]:
    """The chunks in batches: those of a `Chunks` as they arrived, any others one a batch."""
    return chunks.batches() if isinstance(chunks, Chunks) else _alone(chunks)


async def _alone(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[list[bytes], None]:
    try:
        async for chunk in chunks:
            yield [chunk]
    finally:
        await chunks.aclose()
