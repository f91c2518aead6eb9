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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_engine.backends import BackendError, GenParams, TokenEvent
from local_engine.errors import ModelLoadError

if TYPE_CHECKING:
    from local_engine.engine import LocalEngine
    from local_engine.models import ModelSource


class VllmBackend:
    def __init__(self, engine_args: Any, eos_token_ids: frozenset[int]) -> None:
        self._engine_args = engine_args
        self._engine: Any = None
        self.eos_token_ids = eos_token_ids
        self.context_length = 0
        self.max_request_tokens = 0

    async def start(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM  # type: ignore[import-not-found, unused-ignore]

        self._engine = AsyncLLM.from_engine_args(self._engine_args)
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
        from vllm import SamplingParams, TokensPrompt  # type: ignore[import-not-found, unused-ignore]

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
                yield TokenEvent(list(output.outputs[0].token_ids), finished)
        except Exception as exc:  # vLLM's EngineDeadError, EngineGenerateError, ...
            finished = True
            raise BackendError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if not finished and self._engine is not None:
                await self._engine.abort(request_id)

    def kv_cache_usage(self) -> float:
        return 0.0  # vLLM exports its own gauge (vllm:kv_cache_usage_perc) on its registry


def load_vllm_engine(
    engine_cls: type[LocalEngine],
    source: ModelSource,
    device: str,
    dtype: str,
    max_batch_tokens: int | None,
    max_running: int | None,
    max_queue: int,
    cache_dir: Path | None,
) -> LocalEngine:
    """A `LocalEngine` over vLLM; a clear `ModelLoadError` where vLLM cannot run."""
    if importlib.util.find_spec("vllm") is None:
        raise ModelLoadError("--backend vllm needs the 'vllm' package, which is not installed")
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        raise ModelLoadError("--backend vllm needs a CUDA GPU; none is available here")
    from transformers import AutoTokenizer, GenerationConfig
    from vllm import AsyncEngineArgs  # type: ignore[import-not-found, unused-ignore]

    from local_engine import models

    location = models.local_path(source, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as exc:
        raise ModelLoadError(f"could not load the tokenizer of '{location}': {exc}") from exc
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:  # vLLM also stops on the generation config's end tokens
        generation_config = GenerationConfig.from_pretrained(location)
    except OSError:
        generation_config = None
    configured = getattr(generation_config, "eos_token_id", None)
    eos.update([configured] if isinstance(configured, int) else configured or [])
    args = AsyncEngineArgs(
        model=location,
        dtype=dtype,
        max_num_batched_tokens=max_batch_tokens,
        max_num_seqs=max_running or 256,
    )
    backend = VllmBackend(args, frozenset(eos))
    return engine_cls(
        backend,
        tokenizer,
        source.served_name,
        aliases=source.aliases,
        max_running=max_running or 256,
        max_queue=max_queue,
        sampling=models.sampling_defaults(generation_config, source.sampling),
    )
