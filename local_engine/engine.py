"""`LocalEngine`: OpenAI chat completions over a batching backend, for the server or in-process.

One request's path::

    body ─► parse_chat_request ─► model check ─► chat template (worker thread) ─► length checks
         ─► admission: a free batch slot, or a place in the bounded queue, or 503 + Retry-After
         ─► backend.generate (joins the running batch at the next token boundary)
         ─► IncrementalDecoder ─► StopMatcher ─► text deltas ─► chat.completion / chunks

Admission is ours, not the backend's: at most ``max_running`` requests are handed to the
backend at once (each holds a slot until it ends), at most ``max_queue`` more wait for a slot,
and anything beyond is refused at once with 503 and a Retry-After estimated from recent request
durations. A stream that is closed early (client gone, `aclose`) and a stop sequence both
cancel the backend request, which frees its slot and its KV cache blocks.

Usage counts are the tokenizer's: ``prompt_tokens`` is the length of the chat-templated prompt,
``completion_tokens`` the number of tokens the model generated (the end-of-sequence token
included, as `generate()` returns it; with a stop sequence, up to the token that completed it),
``prompt_tokens_details.cached_tokens`` the prompt tokens whose keys and values the backend
reused from its prefix cache instead of computing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Unpack

from local_engine import errors, loader
from local_engine.backends import Backend, BackendError, GenParams
from local_engine.errors import EngineError, bad_request
from local_engine.loader import EngineParts, LoadOptions, Sizing
from local_engine.metrics import EngineMetrics
from local_engine.models import DEFAULT_MODEL
from local_engine.protocol import (
    OPENAI_SAMPLING,
    ChatRequest,
    ChunkFactory,
    SamplingDefaults,
    completion,
    parse_chat_request,
)
from local_engine.textstream import IncrementalDecoder, StopMatcher


@dataclass
class _Progress:
    """What one request has done so far; filled in by `LocalEngine._generate`."""

    admitted_at: float
    finish_reason: str | None = None
    completion_tokens: int = 0
    cached_tokens: int = 0
    drafted: int = 0
    accepted: int = 0


@dataclass(frozen=True)
class EngineStats:
    waiting: int
    running: int


class LocalEngine:
    """Serve one chat model with continuous batching (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        tokenizer: Any,
        model_name: str,
        *,
        aliases: Iterable[str] = (),
        max_running: int = 64,
        max_queue: int = 256,
        sampling: SamplingDefaults = OPENAI_SAMPLING,
    ) -> None:
        if max_running < 1 or max_queue < 0:
            raise ValueError("max_running must be >= 1 and max_queue >= 0")
        self.model_name = model_name
        self.max_running = max_running
        self.max_queue = max_queue
        self.backend = backend
        self.sampling = sampling
        self.metrics = EngineMetrics(model_name)
        self._tokenizer = tokenizer
        self._names = {model_name.lower(), *(a.lower() for a in aliases)}
        self._slots = asyncio.Semaphore(max_running)
        self._waiting = 0
        self._running = 0
        self._mean_duration_s = 5.0  # moving average, for Retry-After
        self.metrics.kv_cache_usage.set_function(backend.kv_cache_usage)
        self.metrics.watch_throughput(backend.throughput)

    # ---------------------------------------------------------------------------- building

    @classmethod
    def load(
        cls, model: str = DEFAULT_MODEL, *, max_queue: int = 256, **options: Unpack[LoadOptions]
    ) -> LocalEngine:
        """Resolve, convert if needed, and load ``model`` (`loader.load`). Blocking: run it in a
        thread. Raises `ModelLoadError` with a one-line message when it cannot be loaded."""
        return cls.over(loader.load(model, **options), max_queue=max_queue)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        model_name: str,
        aliases: Iterable[str] = (),
        max_queue: int = 256,
        sampling: SamplingDefaults = OPENAI_SAMPLING,
        **sizing: Unpack[Sizing],
    ) -> LocalEngine:
        """An engine over an already loaded transformers model (tests share one model).
        ``sampling`` applies where the model's generation config names no temperature or top_p."""
        parts = loader.over_model(
            model, tokenizer, model_name=model_name, aliases=aliases, sampling=sampling, **sizing
        )
        return cls.over(parts, max_queue=max_queue)

    @classmethod
    def over(cls, parts: EngineParts, *, max_queue: int = 256) -> LocalEngine:
        """An engine over the parts that `loader` built."""
        return cls(
            parts.backend,
            parts.tokenizer,
            parts.model_name,
            aliases=parts.aliases,
            max_running=parts.max_running,
            max_queue=max_queue,
            sampling=parts.sampling,
        )

    # --------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.backend.start()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def __aenter__(self) -> LocalEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def is_running(self) -> bool:
        return self.backend.is_running()

    def stats(self) -> EngineStats:
        return EngineStats(waiting=self._waiting, running=self._running)

    def models(self) -> dict[str, Any]:
        """The ``GET /v1/models`` list."""
        return {
            "object": "list",
            "data": [
                {"id": self.model_name, "object": "model", "created": 0, "owned_by": "local-engine"}
            ],
        }

    # ------------------------------------------------------------------------ chat surface

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` for a non-streaming body (``stream`` is ignored)."""
        request, prompt_ids, params = await self._prepare(body)
        async with self._slot() as progress:
            parts = []
            async with contextlib.aclosing(
                self._generate(request, prompt_ids, params, progress)
            ) as pieces:
                async for text in pieces:
                    parts.append(text)
        return completion(
            completion_id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.model_name,
            content="".join(parts),
            finish_reason=progress.finish_reason or "stop",
            prompt_tokens=len(prompt_ids),
            completion_tokens=progress.completion_tokens,
            cached_tokens=progress.cached_tokens,
        )

    async def chat_stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """``chat.completion.chunk`` objects: role, content..., finish, then usage if asked.

        Bad input and a full queue raise `EngineError` from the first ``__anext__``, before any
        chunk; closing the iterator early cancels the request and frees its slot.
        """
        request, prompt_ids, params = await self._prepare(body)
        async with self._slot() as progress:
            chunks = ChunkFactory.new(self.model_name, request.include_usage)
            yield chunks.role()
            async with contextlib.aclosing(
                self._generate(request, prompt_ids, params, progress)
            ) as pieces:
                async for text in pieces:
                    yield chunks.content(text)
            yield chunks.finish(progress.finish_reason or "stop")
            if request.include_usage:
                yield chunks.usage(
                    len(prompt_ids), progress.completion_tokens, progress.cached_tokens
                )

    # ---------------------------------------------------------------------------- internals

    async def _prepare(self, body: Any) -> tuple[ChatRequest, list[int], GenParams]:
        request = parse_chat_request(body, self.sampling)
        if not self.backend.is_running():
            raise errors.unavailable()
        if request.model is not None and request.model.lower() not in self._names:
            raise errors.model_not_found(request.model, self.model_name)
        prompt_ids = await asyncio.to_thread(self._apply_template, request)
        limit, size = self.backend.max_request_tokens, len(prompt_ids)
        if size >= limit:
            raise bad_request(
                f"The prompt is {size} tokens; this engine's context is {limit} tokens.",
                "messages",
                "context_length_exceeded",
            )
        if request.max_tokens is not None and size + request.max_tokens > limit:
            raise bad_request(
                f"max_tokens is {request.max_tokens} but the prompt is {size} tokens and the "
                f"context is {limit} tokens; ask for at most {limit - size}.",
                "max_tokens",
                "context_length_exceeded",
            )
        params = GenParams(
            max_tokens=request.max_tokens or limit - size,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
        )
        return request, prompt_ids, params

    def _apply_template(self, request: ChatRequest) -> list[int]:
        try:
            ids = self._tokenizer.apply_chat_template(
                [dict(m) for m in request.messages],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        except Exception as exc:  # jinja's TemplateError from raise_exception(), mostly
            raise bad_request(
                f"The chat template rejected the messages: {exc}", "messages"
            ) from exc
        return list(ids)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[_Progress]:
        """Hold a batch slot for the block; wait in the bounded queue, or refuse with 503."""
        if self._slots.locked() and self._waiting >= self.max_queue:
            self.metrics.request_done("rejected")
            raise errors.overloaded(self._retry_after())
        progress = _Progress(admitted_at=time.perf_counter())
        self._waiting += 1
        self.metrics.queue_depth.set(self._waiting)
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
            self.metrics.queue_depth.set(self._waiting)
        self._running += 1
        self.metrics.running.set(self._running)
        try:
            yield progress
        finally:
            self._running -= 1
            self.metrics.running.set(self._running)
            self._slots.release()
            elapsed = time.perf_counter() - progress.admitted_at
            self._mean_duration_s += 0.2 * (elapsed - self._mean_duration_s)
            self.metrics.duration.observe(elapsed)

    def _retry_after(self) -> float:
        """Seconds until a queue place is likely free: the queue drains max_running at a time."""
        rounds = (self._waiting + 1) / self.max_running
        return float(min(60, max(1, math.ceil(rounds * self._mean_duration_s))))

    async def _generate(
        self, request: ChatRequest, prompt_ids: list[int], params: GenParams, progress: _Progress
    ) -> AsyncGenerator[str, None]:
        """Text deltas of one request; fills ``progress``. Closing it cancels the request."""
        self.metrics.prompt_tokens.inc(len(prompt_ids))
        decoder, stops = IncrementalDecoder(self._tokenizer), StopMatcher(request.stop)
        outcome = "cancelled"
        events = self.backend.generate(f"req-{uuid.uuid4().hex}", prompt_ids, params)
        try:
            async for event in events:
                if progress.completion_tokens == 0 and event.tokens:
                    self.metrics.ttft.observe(time.perf_counter() - progress.admitted_at)
                self.metrics.tokens_generated(len(event.tokens) - progress.completion_tokens)
                progress.completion_tokens = len(event.tokens)
                progress.cached_tokens = event.cached_tokens
                progress.drafted, progress.accepted = event.drafted, event.accepted
                text = stops.feed(decoder.push(event.tokens, final=event.finished))
                if stops.stopped:
                    progress.finish_reason = "stop"
                elif event.finished:
                    text += stops.flush()
                    ended_on_eos = (
                        bool(event.tokens) and event.tokens[-1] in self.backend.eos_token_ids
                    )
                    progress.finish_reason = "stop" if ended_on_eos else "length"
                if text:
                    yield text
                if progress.finish_reason is not None:
                    outcome = progress.finish_reason
                    break
        except BackendError as exc:
            outcome = "error"
            raise errors.internal(f"Generation failed: {exc}") from exc
        finally:
            await events.aclose()  # cancels the backend request if it has not finished
            self.metrics.request_done(outcome)
            self.metrics.prompt_served(len(prompt_ids), progress.cached_tokens)
            self.metrics.speculated(progress.drafted, progress.accepted)


__all__ = ["EngineError", "EngineStats", "LocalEngine"]
