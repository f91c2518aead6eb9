"""The default backend: transformers' continuous batching (`ContinuousBatchingManager`).

NOTE on scheduling. The manager owns a paged KV cache and a background thread that loops:
take new and cancelled requests from its queues, let the FIFO scheduler pick the next batch
under a token budget (``max_batch_tokens``: prefill chunks of waiting requests plus one decode
token per running request), run one forward pass over that ragged batch, append one token to
each request. A request therefore joins the running batch at the next token boundary after it
is added, and leaves it (its cache blocks freed) as soon as it finishes or is cancelled. This
module adds only what serving needs around it:

* every request is added with ``streaming=True`` and a result handler that the manager calls on
  the event loop (``call_soon_threadsafe``) after each step; `generate` turns those outputs
  into `TokenEvent`s;
* closing `generate` early (a client disconnected, a stop sequence matched) cancels the
  request in the manager, which frees its slot and cache blocks at the next step;
* per-request sampling (temperature, top_p, seed) is done by the processors of
  `local_engine.sampling`, installed on the manager before its batch processor is built;
* while the batch is small (at most ``solo_max_batch`` requests), a new unseeded request that
  finds the solo lane free is decoded there instead, with speculative decoding (`solo`); it
  moves into the batch at a step boundary once the batch grows past that;
* the prefix cache's matches are counted per request (reported as cached prompt tokens) and
  every batch step's time and tokens go to the `ThroughputMeter`, by wrapping the scheduler's
  ``schedule_batch``, the cache's ``search_prefix_match`` and the processor's
  ``_generation_step`` on their instances.

Written against transformers 5.24 (``manager.logit_processor``, ``output_router`` and
``batch_processor.cache`` are internals of that version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from typing import Any

import psutil
import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.model_runner import (
    infer_max_single_request_tokens,
)

from local_engine.backends import BackendError, GenParams, TokenEvent
from local_engine.backends.cpu_attention import NAME as CPU_ATTENTION
from local_engine.backends.solo import Handoff, SoloLane
from local_engine.sampling import sampling_processors
from local_engine.speculative import PromptLookup
from local_engine.throughput import Throughput, ThroughputMeter

log = logging.getLogger("local_engine")

GPU_PAGE_SIZE = 256  # tokens per cache page (transformers' default)
CPU_PAGE_SIZE = 16
"""On the CPU, small pages keep the running requests' cached keys close together, so the
per-step reads of the cache stay in the processor's caches: about 10% more tokens/s at 32
concurrent requests than with 256-token pages (bench/engine/RESULTS.md). Requests with a
common prefix (a shared system prompt) also share its complete pages sooner."""
CPU_KV_CACHE_BYTES = 2 * 1024**3  # default KV cache budget on a CPU (the RAM is shared)
CPU_KV_CACHE_SHARE = 0.25
"""At most this share of the memory the process could still take (the machine's total less
what it holds), so that a small machine, or a process already holding models, still starts:
transformers refuses a cache beyond 0.6 of it on a CPU."""
CPU_MAX_KV_CACHE_TOKENS = 65536
CPU_MAX_BATCH_TOKENS = 1024  # default token budget of one step on a CPU


class TransformersBackend:
    """``max_batch_tokens`` and ``kv_cache_tokens`` left as None are sized for a CPU here (the
    ``CPU_*`` values) and by transformers from the free memory on a GPU. ``speculation``
    ``"off"`` keeps the solo lane but drafts nothing; ``solo_max_batch`` -1 turns the lane off."""

    def __init__(
        self,
        model: Any,
        *,
        eos_token_ids: frozenset[int],
        max_batch_tokens: int | None,
        max_running: int,
        kv_cache_tokens: int | None,
        speculation: str,
        solo_max_batch: int,
    ) -> None:
        self._model = model
        self.eos_token_ids = eos_token_ids
        self.meter = ThroughputMeter()
        self._solo_max_batch = solo_max_batch
        self._lane: SoloLane | None = None
        if solo_max_batch >= 0:
            lookup = PromptLookup() if speculation == "prompt_lookup" else None
            self._lane = SoloLane(model, eos_token_ids, self.meter, lookup)
        self._prefix_hits: dict[str, int] = {}
        self.handoffs = 0  # requests that left the lane for the batch
        self._scheduled: list[Any] = []
        config = model.config.get_text_config()
        self.context_length: int = int(getattr(config, "max_position_embeddings", 2048))
        self.max_request_tokens = self.context_length
        on_cpu = model.device.type == "cpu"
        if on_cpu and kv_cache_tokens is None:
            kv_cache_tokens = min(CPU_MAX_KV_CACHE_TOKENS, _cpu_kv_budget() // _kv_bytes(model))
        if on_cpu and max_batch_tokens is None:
            max_batch_tokens = CPU_MAX_BATCH_TOKENS
        self._page_size = page = CPU_PAGE_SIZE if on_cpu else GPU_PAGE_SIZE
        self._cb_config = ContinuousBatchingConfig(
            page_size=page,
            num_blocks=None if kv_cache_tokens is None else math.ceil(kv_cache_tokens / page),
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=max_running,
        )
        self._manager: Any = None

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False,  # sampling is done by our processors, see local_engine.sampling
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=min(self.eos_token_ids) if self.eos_token_ids else None,
        )
        if self._model.config._attn_implementation == CPU_ATTENTION:  # a restart
            self._model.set_attn_implementation("sdpa")
        manager = self._model.init_continuous_batching(
            generation_config=generation_config,
            continuous_batching_config=self._cb_config,
        )
        manager.logit_processor = sampling_processors()
        if self._model.device.type == "cpu":
            # After init (which insists on an implementation it knows), before the batch
            # processor is built (which then builds no mask for it): see cpu_attention.
            self._model.set_attn_implementation(CPU_ATTENTION)
        manager.warmup()  # builds the batch processor and its cache now, not in the thread
        self._instrument(manager.batch_processor)
        cache = manager.batch_processor.cache
        self.max_request_tokens = min(self.context_length, infer_max_single_request_tokens(cache))
        log.info(
            "continuous batching ready: cache %d blocks of %d tokens, max_batch_tokens %d",
            cache.num_blocks,
            self._page_size,
            cache.max_batch_tokens,
        )
        with torch.inference_mode():
            manager.start()
        self._manager = manager

    def _instrument(self, processor: Any) -> None:
        """Count prefix-cache matches per request and time every batch step (on the batching
        thread; the dict and the meter are safe to use from there)."""
        cache, scheduler = processor.cache, processor.scheduler
        search, schedule, step = (
            cache.search_prefix_match,
            scheduler.schedule_batch,
            processor._generation_step,
        )

        def search_prefix_match(request_id: str, prompt_ids: list[int]) -> int:
            matched = int(search(request_id, prompt_ids))
            if matched:
                self._prefix_hits[request_id] = matched
            return matched

        def schedule_batch(*args: Any, **kwargs: Any) -> Any:
            result = schedule(*args, **kwargs)
            self._scheduled = result[0] or []
            return result

        def generation_step(model: Any) -> None:
            started = time.perf_counter()
            step(model)
            decode = sum(1 for r in self._scheduled if r.query_length == 1)
            prefill = sum(r.query_length for r in self._scheduled) - decode
            self.meter.record(time.perf_counter() - started, prefill, decode)

        cache.search_prefix_match = search_prefix_match
        scheduler.schedule_batch = schedule_batch
        processor._generation_step = generation_step

    async def aclose(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            await asyncio.to_thread(manager.stop, block=True, timeout=60, hard_stop=True)
            await asyncio.to_thread(manager.destroy)
        if self._lane is not None:
            await asyncio.to_thread(self._lane.close)

    def is_running(self) -> bool:
        return self._manager is not None and bool(self._manager.is_running())

    # ---------------------------------------------------------------------------- requests

    async def generate(
        self, request_id: str, prompt_ids: list[int], params: GenParams
    ) -> AsyncGenerator[TokenEvent, None]:
        manager = self._manager
        if manager is None or not manager.is_running():
            raise BackendError("the generation loop is not running")
        lane = self._claim_lane(params)
        if lane is None:
            async for event in self._batched(manager, request_id, prompt_ids, params):
                yield event
            return
        handoff = None
        async with contextlib.aclosing(lane.generate(prompt_ids, params, self._crowded)) as solo:
            async for step in solo:
                if isinstance(step, Handoff):
                    handoff = step
                else:
                    yield step
        if handoff is None:
            return
        self.handoffs += 1
        # The batch grew: the rest of the answer is generated there, after what the lane made.
        done, rest = handoff.tokens, params.max_tokens - len(handoff.tokens)
        more = GenParams(rest, params.temperature, params.top_p, params.seed)
        async for event in self._batched(manager, request_id, prompt_ids + done, more):
            # Its prompt's cached tokens are now those the batch's prefix cache matched.
            cached = min(event.cached_tokens, len(prompt_ids))
            tokens = [*done, *event.tokens]
            yield TokenEvent(tokens, event.finished, cached, handoff.drafted, handoff.accepted)

    def _claim_lane(self, params: GenParams) -> SoloLane | None:
        """The lane, taken, if the batch is small and the lane free. Seeded requests stay in
        the batch: its sampler gives a seed the same tokens whatever runs beside it, which a
        request that could move between two samplers mid-answer would not keep."""
        lane = self._lane
        if lane is None or params.seed is not None or self._crowded() or not lane.claim():
            return None
        return lane

    def _crowded(self) -> bool:
        return self.active_requests() > self._solo_max_batch

    async def _batched(
        self, manager: Any, request_id: str, prompt_ids: list[int], params: GenParams
    ) -> AsyncGenerator[TokenEvent, None]:
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        manager.register_result_handler(request_id, outputs.put_nowait)
        kwargs: dict[str, Any] = {"temperature": float(params.temperature), "top_p": params.top_p}
        if params.seed is not None:
            kwargs["seed"] = int(params.seed)
        added = manager.add_request(
            prompt_ids,
            request_id=request_id,
            max_new_tokens=params.max_tokens,
            streaming=True,
            eos_token_id=sorted(self.eos_token_ids),
            **kwargs,
        )
        finished = added is None
        try:
            if added is None:
                raise BackendError("the generation loop is not accepting requests")
            while True:
                output = await self._next_output(manager, outputs)
                if output.error is not None:
                    finished = True
                    raise BackendError(output.error)
                finished = output.is_finished()
                cached = self._prefix_hits.get(request_id, 0)
                yield TokenEvent(output.generated_tokens, finished, cached)
                if finished:
                    return
        finally:
            if not finished:
                manager.cancel_request(request_id)  # frees its slot and blocks at the next step
            with manager.output_router._lock:
                manager.output_router.result_handlers.pop(request_id, None)
            self._prefix_hits.pop(request_id, None)

    @staticmethod
    async def _next_output(manager: Any, outputs: asyncio.Queue[Any]) -> Any:
        """The newest output (they are cumulative), waiting while the loop is alive."""
        while True:
            try:
                output = await asyncio.wait_for(outputs.get(), timeout=1.0)
            except TimeoutError:
                if not manager.is_running():
                    raise BackendError("the generation loop stopped") from None
                continue
            while not outputs.empty() and not output.is_finished():
                output = outputs.get_nowait()
            return output

    def kv_cache_usage(self) -> float:
        manager = self._manager
        processor = getattr(manager, "batch_processor", None)
        if processor is None:
            return 0.0
        with contextlib.suppress(Exception):  # read from another thread: best effort
            return float(1.0 - processor.cache.compute_free_capacity())
        return 0.0

    def throughput(self) -> Throughput:
        return self.meter.rates()

    def active_requests(self) -> int:
        """Requests the scheduler holds (running or waiting inside the manager)."""
        processor = getattr(self._manager, "batch_processor", None)
        if processor is None:
            return 0
        scheduler = processor.scheduler
        return len(scheduler.active_requests) + len(scheduler.waiting_requests)


def _cpu_kv_budget() -> int:
    """`CPU_KV_CACHE_BYTES`, or `CPU_KV_CACHE_SHARE` of the memory this process could still
    take when that is less (as transformers counts it: the machine's total less our RSS)."""
    room = psutil.virtual_memory().total - psutil.Process().memory_info().rss
    budget = min(CPU_KV_CACHE_BYTES, int(room * CPU_KV_CACHE_SHARE))
    if budget < CPU_KV_CACHE_BYTES:
        log.warning("KV cache limited to %d MiB by the memory left", budget // 2**20)
    return max(budget, 32 * 2**20)


def _kv_bytes(model: Any) -> int:
    """Bytes of KV cache per token."""
    config = model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize)
