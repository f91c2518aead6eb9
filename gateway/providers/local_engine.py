"""The bundled local engine in the gateway's own process (``provider: local_engine``).

So that ``gateway serve`` answers offline with no second service, the policy can name a local
model that the gateway loads itself (transformers' continuous batching, in `local_engine`). The
engine's chunks are the same OpenAI objects its HTTP server sends, so the pipeline cannot tell
the two apart; production deployments run ``local-engine serve`` (or vLLM) as a separate
service and use ``openai_compatible``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.policy.schema import ModelConfig
from gateway.providers import AttemptFailed, Embedded, Reply, unsupported

if TYPE_CHECKING:
    from local_engine import EngineError, LocalEngine


class InProcessEngine:
    def __init__(self, engine: LocalEngine) -> None:
        self._engine = engine

    @classmethod
    async def start(cls, config: ModelConfig, cache_dir: Path) -> InProcessEngine:
        """Load the model (in a thread: it takes seconds) and start its batching loop."""
        from local_engine import LocalEngine

        options = config.engine
        engine = await asyncio.to_thread(
            LocalEngine.load,
            config.model,
            device=options.device,
            dtype=options.dtype,
            max_batch_tokens=options.max_batch_tokens,
            max_queue=options.max_queue,
            cache_dir=cache_dir,
            quantization=options.quantization,
            speculation=options.speculation,
            solo_max_batch=options.solo_max_batch,
        )
        await engine.start()
        return cls(engine)

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self._engine.model_name}

    async def complete(self, body: dict[str, Any]) -> Reply:
        from local_engine import EngineError

        try:
            answer = await self._engine.chat(self._body(body))
        except EngineError as exc:
            raise _failed(exc) from exc
        return Reply(msgspec.json.encode(answer))

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[list[bytes], None]:
        from local_engine import EngineError

        try:
            async for chunk in self._engine.chat_stream(self._body(body)):
                yield [msgspec.json.encode(chunk)]
        except EngineError as exc:
            raise _failed(exc) from exc

    async def embed(self, body: dict[str, Any]) -> Embedded:
        raise unsupported("embeddings")

    def throughput(self) -> tuple[float | None, float | None]:
        """Prefill and decode tokens/s the engine measured over the last minute (for a price
        with ``throughput: measured``)."""
        rates = self._engine.backend.throughput()
        return rates.prefill_tokens_per_s, rates.decode_tokens_per_s

    async def aclose(self) -> None:
        await self._engine.aclose()


def _failed(exc: EngineError) -> AttemptFailed:
    return AttemptFailed(
        "status",
        f"HTTP {exc.status}: {exc.message}",
        status=exc.status,
        retry_after=exc.retry_after,
        body=exc.body(),
    )
