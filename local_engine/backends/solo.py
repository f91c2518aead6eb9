"""The solo lane: a request decoded on its own, with speculative decoding, while the batch is small.

Why a lane beside the continuous batch: a batch step pays for scheduling, packing a ragged batch
and reading a paged cache, which a lone request does not need (at one request the batch ran at
0.55x of a bare ``generate()`` on an H200); and speculative verification needs several query
positions per request, which transformers' batch loop does not offer. A lone request is
therefore decoded here, as ``generate()`` would: one model, a contiguous `DynamicCache`, one
forward pass per step, with prompt-lookup drafts verified in that pass (`local_engine.speculative`).

At most one request is in the lane. It is taken only when the lane is free and the batch is
small (`TransformersBackend`); when the batch grows past that while a request is here, the
request leaves at the next step boundary (`Handoff`) and continues in the batch from the tokens
it has, so speculation is on while the batch is small and off when it is large.

The lane keeps the keys and values of its last request: a new request that starts with the same
tokens (a shared system prompt, the previous turn of a conversation) prefills only the rest, and
those tokens are reported as cached.

Every step runs on one dedicated thread, so steps of a request that was cancelled mid-step and of
the next request never overlap, and the lane's cache is touched by that thread only.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from local_engine.backends import GenParams, TokenEvent
from local_engine.speculative import (
    MAX_DRAFT,
    PromptLookup,
    accept_greedy,
    accept_sampled,
    target_probs,
)
from local_engine.throughput import ThroughputMeter


@dataclass(frozen=True, slots=True)
class Handoff:
    """The lane gave the request up (the batch grew); ``tokens`` are what it generated."""

    tokens: list[int]
    drafted: int
    accepted: int


@dataclass
class _Run:
    """One request's state in the lane; read and written on the lane's thread only."""

    params: GenParams
    ids: array[int]  # prompt + generated
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    cached_tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    finished: bool = False
    draft_len: int = MAX_DRAFT
    """How many tokens to draft next: +2 after a draft kept whole (as transformers' "heuristic"
    schedule for assisted generation), halved after one rejected from its first token, so a
    request whose drafts keep failing stops paying for long verification passes while one
    that copies in runs keeps its long drafts."""


class SoloLane:
    def __init__(
        self,
        model: Any,
        eos_token_ids: frozenset[int],
        meter: ThroughputMeter,
        lookup: PromptLookup | None,
    ) -> None:
        """``lookup`` None: no speculation, plain one-token steps."""
        self._model = model
        self._eos = eos_token_ids
        self._meter = meter
        self._lookup = lookup
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="local-engine-solo")
        self._busy = False
        self._cache: Any = None
        self._cached_ids: list[int] = []  # the tokens whose keys and values the cache holds

    @property
    def busy(self) -> bool:
        return self._busy

    def claim(self) -> bool:
        """Take the lane for one request, if it is free (on the event loop: no race)."""
        if self._busy:
            return False
        self._busy = True
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._cache, self._cached_ids = None, []

    async def generate(
        self, prompt_ids: list[int], params: GenParams, crowded: Callable[[], bool]
    ) -> AsyncGenerator[TokenEvent | Handoff, None]:
        """Cumulative `TokenEvent`s, or a final `Handoff` once ``crowded()`` says the batch has
        grown. The caller must have `claim`ed the lane; it is released when this ends."""
        loop = asyncio.get_running_loop()
        seed = secrets.randbits(63) if params.seed is None else params.seed
        generator = None
        if params.temperature > 0:
            generator = torch.Generator(device=self._model.device).manual_seed(seed)
        run = _Run(params, array("i", prompt_ids), generator)
        try:
            await loop.run_in_executor(self._executor, self._prefill, run, prompt_ids)
            while True:
                yield TokenEvent(
                    list(run.generated), run.finished, run.cached_tokens, run.drafted, run.accepted
                )
                if run.finished:
                    return
                if crowded():
                    yield Handoff(list(run.generated), run.drafted, run.accepted)
                    return
                await loop.run_in_executor(self._executor, self._step, run)
        finally:
            self._busy = False

    # ------------------------------------------------------------------ on the lane's thread

    def _prefill(self, run: _Run, prompt_ids: list[int]) -> None:
        reused = _common_prefix(self._cached_ids, prompt_ids, len(prompt_ids) - 1)
        intact = self._cache is not None and self._cache.get_seq_length() == len(self._cached_ids)
        if reused == 0 or not intact:  # (not intact: a step failed half-way)
            self._cache = DynamicCache(config=self._model.config)
        else:
            self._cache.crop(reused - len(self._cached_ids))  # a negative count: drop the rest
        self._cached_ids = prompt_ids[:reused]
        started = time.perf_counter()
        scores = self._forward(prompt_ids[reused:])[-1:]
        first = self._choose(run, scores, [])
        self._meter.record(time.perf_counter() - started, len(prompt_ids) - reused, 0)
        self._cached_ids = list(prompt_ids)
        run.cached_tokens = reused
        self._emit(run, first)

    def _step(self, run: _Run) -> None:
        """One forward pass over the newest token and a draft; emits 1 to len(draft)+1 tokens."""
        last = run.generated[-1]
        left = run.params.max_tokens - len(run.generated)
        limit = min(left - 1, run.draft_len)
        draft = self._lookup.propose(run.ids, limit) if self._lookup else []
        started = time.perf_counter()
        scores = self._forward([last, *draft])
        tokens = self._choose(run, scores, draft)
        kept = len(tokens) - 1
        self._cache.crop(kept - len(draft))  # forget the rejected draft tokens' keys
        self._cached_ids += [last, *draft[:kept]]
        self._meter.record(time.perf_counter() - started, 0, len(tokens))
        run.drafted += len(draft)
        run.accepted += kept
        if kept == len(draft):
            run.draft_len = min(MAX_DRAFT, run.draft_len + 2)
        elif kept == 0:
            run.draft_len = max(1, run.draft_len // 2)
        self._emit(run, tokens)

    def _forward(self, ids: list[int]) -> torch.Tensor:
        """Scores ``[len(ids), vocab]`` for ``ids`` appended to the cache."""
        with torch.inference_mode():
            out = self._model(
                input_ids=torch.tensor([ids], device=self._model.device),
                cache=self._cache,
                use_cache=True,
            )
        scores: torch.Tensor = out.logits[0]
        return scores

    def _choose(self, run: _Run, scores: torch.Tensor, draft: list[int]) -> list[int]:
        params = run.params
        if params.temperature <= 0:
            return accept_greedy(scores, draft)
        probs = target_probs(scores, params.temperature, params.top_p)
        return accept_sampled(probs, draft, run.generator)

    def _emit(self, run: _Run, tokens: list[int]) -> None:
        """Append ``tokens``, up to an end-of-sequence token or ``max_tokens``."""
        for token in tokens:
            run.generated.append(token)
            run.ids.append(token)
            if token in self._eos or len(run.generated) >= run.params.max_tokens:
                run.finished = True
                return


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
