"""``--backend vllm``: the same engine over vLLM's `AsyncLLM` (GPU only).

vLLM does its own continuous batching and paged attention; this backend feeds it the
chat-templated token ids and reads cumulative token ids back, so templating, stop sequences,
detokenization, admission and metrics stay in `LocalEngine` and behave the same on both
backends. Closing `generate` early makes vLLM abort the request (its ``generate`` aborts on
``GeneratorExit``/``CancelledError``); we also abort explicitly, which is idempotent.

Written against vLLM 0.33 (``AsyncLLM.from_engine_args``, ``TokensPrompt``,
``SamplingParams(detokenize=False)``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from local_engine.backends import BackendError, GenParams, TokenEvent
from local_engine.errors import ModelLoadError
from local_engine.throughput import Throughput

# vllm and torch are imported inside the functions that use them: vllm is an optional GPU-only
# dependency, and this module is imported by the loader on every backend's path.


def require_vllm(device: str) -> None:
    """A clear `ModelLoadError` where vLLM cannot run: not installed, or no CUDA device."""
    if importlib.util.find_spec("vllm") is None:
        raise ModelLoadError("--backend vllm needs the 'vllm' package, which is not installed")
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        raise ModelLoadError("--backend vllm needs a CUDA GPU; none is available here")


NGRAM_DRAFT = {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_max": 3}
"""vLLM's own prompt-lookup speculation, with the transformers backend's settings."""


@dataclass(frozen=True, slots=True)
class VllmOptions:
    dtype: str
    max_batch_tokens: int | None
    max_running: int | None
    quantization: str
    """``none``, or ``fp8``: vLLM's online fp8 weight quantization (``int8``/``int4`` are the
    transformers backend's; for those with vLLM, serve a pre-quantized AWQ or GPTQ checkpoint,
    which vLLM recognises by itself)."""
    speculation: str  # prompt_lookup or off


class VllmBackend:
    def __init__(
        self, location: str, *, eos_token_ids: frozenset[int], options: VllmOptions
    ) -> None:
        self._location = location
        self._options = options
        self._engine: Any = None  # vllm's AsyncLLM (vllm ships no type information)
        self.eos_token_ids = eos_token_ids
        self.context_length = 0
        self.max_request_tokens = 0

    async def start(self) -> None:
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        options = self._options
        args = AsyncEngineArgs(
            model=self._location,
            dtype=options.dtype,
            max_num_batched_tokens=options.max_batch_tokens,
            max_num_seqs=options.max_running,
            quantization=None if options.quantization == "none" else options.quantization,
            speculative_config=NGRAM_DRAFT if options.speculation == "prompt_lookup" else None,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self.context_length = int(self._engine.model_config.max_model_len)
        self.max_request_tokens = self.context_length

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    def is_running(self) -> bool:
        return self._engine is not None and not getattr(self._engine, "errored", False)

    async def generate(
        self, request_id: str, prompt_ids: list[int], params: GenParams
    ) -> AsyncGenerator[TokenEvent, None]:
        from vllm import SamplingParams, TokensPrompt

        if self._engine is None:
            raise BackendError("the vLLM engine is not running")
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            detokenize=False,  # LocalEngine decodes, so stops and text match the other backend
        )
        finished = False
        try:
            async for output in self._engine.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id
            ):
                finished = bool(output.finished)
                cached = int(getattr(output, "num_cached_tokens", 0) or 0)
                yield TokenEvent(list(output.outputs[0].token_ids), finished, cached)
        except Exception as exc:  # vLLM's EngineDeadError, EngineGenerateError, ...
            finished = True
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if not finished and self._engine is not None:
                await self._engine.abort(request_id)

    def kv_cache_usage(self) -> float:
        return 0.0  # vLLM exports its own gauge (vllm:kv_cache_usage_perc) on its registry

    def throughput(self) -> Throughput:
        """Unmeasured: vLLM's scheduler steps are not visible here (it exports its own
        vllm:prompt_tokens and vllm:generation_tokens counters)."""
        return Throughput(None, None)
