"""Generation backends: token ids in, cumulative token ids out, one request at a time.

A backend knows nothing of chat, text or HTTP; `LocalEngine` does all of that once for every
backend. `transformers_cb` (the default) wraps transformers' continuous batching manager;
`vllm` wraps vLLM's async engine on a GPU.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from local_engine.throughput import Throughput


@dataclass(frozen=True, slots=True)
class GenParams:
    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """A request's progress: every token generated so far, and counts so far (cumulative)."""

    tokens: Sequence[int]
    finished: bool
    cached_tokens: int = 0
    """Prompt tokens whose keys and values were reused from the cache, not computed."""
    drafted: int = 0
    """Speculative draft tokens proposed for this request."""
    accepted: int = 0
    """Of those, the ones the model confirmed."""


class BackendError(Exception):
    """Generation failed inside the backend."""


class Backend(Protocol):
    context_length: int  # the model's context window
    max_request_tokens: int  # prompt + completion that one request may use (cache, context)
    eos_token_ids: frozenset[int]

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def generate(
        self, request_id: str, prompt_ids: list[int], params: GenParams
    ) -> AsyncGenerator[TokenEvent, None]:
        """Yields until an event with ``finished``; closing it early cancels the request."""
        ...

    def kv_cache_usage(self) -> float:
        """Share of the KV cache in use, 0..1."""
        ...

    def is_running(self) -> bool: ...

    def throughput(self) -> Throughput:
        """Recent prefill and decode tokens per second of busy time (`local_engine.throughput`)."""
        ...
