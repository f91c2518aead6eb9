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
import dataclasses
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from local_engine import errors, loader
from local_engine.backends import Backend, BackendError, GenParams, TokenEvent
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
from local_engine.scheduling import PriorityGate
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
    holding: bool = False
    """It holds a batch slot (it gives it back while paused for a better priority)."""


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
        self._gate = PriorityGate(max_running, on_change=self._show_slots)
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
        return EngineStats(waiting=self._gate.waiting, running=self._gate.running)

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
        async with self._slot(request.priority) as progress:
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
        async with self._slot(request.priority) as progress:
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
    async def _slot(self, priority: int) -> AsyncIterator[_Progress]:
        """Hold a batch slot for the block (`PriorityGate`); wait in the bounded queue, or
        refuse with 503."""
        if self._gate.full() and self._gate.waiting >= self.max_queue:
            self.metrics.request_done("rejected")
            raise errors.overloaded(self._retry_after())
        progress = _Progress(admitted_at=time.perf_counter())
        await self._take_slot(priority, progress)
        try:
            yield progress
        finally:
            if progress.holding:
                self._gate.release(priority)
            elapsed = time.perf_counter() - progress.admitted_at
            self._mean_duration_s += 0.2 * (elapsed - self._mean_duration_s)
            self.metrics.duration.observe(elapsed)

    async def _take_slot(self, priority: int, progress: _Progress) -> None:
        await self._gate.acquire(priority)
        progress.holding = True

    async def _pause(self, priority: int, progress: _Progress) -> None:
        """Give the slot to better-priority requests; take one again once they are done."""
        self._gate.release(priority)
        progress.holding = False
        self.metrics.preemptions.inc()
        await self._take_slot(priority, progress)

    def _show_slots(self) -> None:
        self.metrics.queue_depth.set(self._gate.waiting)
        self.metrics.running.set(self._gate.running)

    def _retry_after(self) -> float:
        """Seconds until a queue place is likely free: the queue drains max_running at a time."""
        rounds = (self._gate.waiting + 1) / self.max_running
        return float(min(60, max(1, math.ceil(rounds * self._mean_duration_s))))

    async def _generate(
        self, request: ChatRequest, prompt_ids: list[int], params: GenParams, progress: _Progress
    ) -> AsyncGenerator[str, None]:
        """Text deltas of one request; fills ``progress``. Closing it cancels the request.
        Outranked (`local_engine.scheduling`), it pauses, then goes on from its tokens so far."""
        self.metrics.prompt_tokens.inc(len(prompt_ids))
        decoder, stops = IncrementalDecoder(self._tokenizer), StopMatcher(request.stop)
        outcome = "cancelled"
        before: list[int] = []  # the tokens of the parts run before a pause
        try:
            while True:
                part = self._part(prompt_ids, before, params)
                async with contextlib.aclosing(part) as events:  # closing cancels it
                    async for event in events:
                        tokens = [*before, *event.tokens] if before else event.tokens
                        text = self._advance(tokens, event, progress, decoder, stops, bool(before))
                        if text:
                            yield text
                        if progress.finish_reason is not None:
                            outcome = progress.finish_reason
                            return
                        if self._gate.outranked(request.priority):
                            before = list(tokens)
                            break
                    else:
                        raise BackendError("the backend ended a request before it finished")
                await self._pause(request.priority, progress)
        except BackendError as exc:
            outcome = "error"
            raise errors.internal(f"Generation failed: {exc}") from exc
        finally:
            self.metrics.request_done(outcome)
            self.metrics.prompt_served(len(prompt_ids), progress.cached_tokens)
            self.metrics.speculated(progress.drafted, progress.accepted)

    def _part(
        self, prompt_ids: list[int], before: list[int], params: GenParams
    ) -> AsyncGenerator[TokenEvent, None]:
        """The backend request that goes on from ``before``, the tokens generated so far."""
        if before:
            prompt_ids = [*prompt_ids, *before]
            params = dataclasses.replace(params, max_tokens=params.max_tokens - len(before))
        return self.backend.generate(f"req-{uuid.uuid4().hex}", prompt_ids, params)

    def _advance(
        self,
        tokens: Sequence[int],
        event: TokenEvent,
        progress: _Progress,
        decoder: IncrementalDecoder,
        stops: StopMatcher,
        resumed: bool,
    ) -> str:
        """The text that ``tokens`` (all generated so far) add; fills ``progress``."""
        if progress.completion_tokens == 0 and tokens:
            self.metrics.ttft.observe(time.perf_counter() - progress.admitted_at)
        self.metrics.tokens_generated(len(tokens) - progress.completion_tokens)
        progress.completion_tokens = len(tokens)
        if not resumed:  # a resumed part's cache hits are its own earlier tokens, not the prompt
            progress.cached_tokens = event.cached_tokens
            progress.drafted, progress.accepted = event.drafted, event.accepted
        text = stops.feed(decoder.push(tokens, final=event.finished))
        if stops.stopped:
            progress.finish_reason = "stop"
        elif event.finished:
            text += stops.flush()
            ended_on_eos = bool(tokens) and tokens[-1] in self.backend.eos_token_ids
            progress.finish_reason = "stop" if ended_on_eos else "length"
        return text


__all__ = ["EngineError", "EngineStats", "LocalEngine"]
