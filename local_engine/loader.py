"""From a model name to the parts `LocalEngine` serves: a started-to-be backend, its tokenizer,
the served names and the sampling defaults.

`load` resolves the name (`models`), converts a GGUF file once, and builds the chosen backend:
transformers' continuous batching (the default, sized for the device) or vLLM (GPU only).
`LocalEngine.load` and `LocalEngine.from_model` call this module and hand its `EngineParts` to
the engine, so the engine never depends on a particular backend or on how models are found.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from local_engine import models
from local_engine.backends import Backend
from local_engine.backends.vllm import VllmBackend, VllmOptions, require_vllm
from local_engine.errors import ModelLoadError
from local_engine.protocol import OPENAI_SAMPLING, SamplingDefaults
from local_engine.quantize import quantize

BACKENDS = ("transformers", "vllm")
SOLO_MAX_BATCH = 1
"""A request takes the solo lane (`backends.solo`) while the batch holds at most this many
others, and leaves it when the batch grows past that: on a CPU a lane beside a larger batch only
takes processor time from it."""
DEFAULT_MAX_RUNNING = 256
CPU_MAX_RUNNING = 64


@dataclass(frozen=True, slots=True)
class EngineParts:
    """What a `LocalEngine` is built from."""

    backend: Backend  # not started yet
    tokenizer: Any  # transformers' tokenizer: the chat template and decoding
    model_name: str
    aliases: tuple[str, ...]
    max_running: int  # requests handed to the backend at once
    sampling: SamplingDefaults  # for requests without temperature or top_p


class Sizing(TypedDict, total=False):
    """How much one engine takes on; ``None`` (the default) picks a value for the device."""

    max_batch_tokens: int | None  # tokens in one forward pass (prefill chunks + decodes)
    max_running: int | None  # requests in the running batch (64 on a CPU, 256 on a GPU)
    kv_cache_tokens: int | None  # KV cache size (2 GiB worth on a CPU; transformers only)
    speculation: str  # prompt_lookup (the default) or off
    solo_max_batch: int  # the solo lane's limit on the batch (`transformers_cb`); -1: no lane


class LoadOptions(Sizing, total=False):
    """`load`'s keyword arguments, for callers that pass them on (`LocalEngine.load`)."""

    device: str  # auto, cpu, cuda, cuda:N
    dtype: str  # auto, bfloat16, float16, float32
    cache_dir: Path | None  # converted models (default: `models.default_cache_dir`)
    backend: str  # one of BACKENDS
    quantization: str  # one of `quantize.QUANTIZATIONS`


def load(
    model: str = models.DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_batch_tokens: int | None = None,
    max_running: int | None = None,
    kv_cache_tokens: int | None = None,
    cache_dir: Path | None = None,
    backend: str = "transformers",
    quantization: str = "none",
    speculation: str = "prompt_lookup",
    solo_max_batch: int = SOLO_MAX_BATCH,
) -> EngineParts:
    """Resolve, convert if needed, and load ``model``. Blocking: run it in a thread.

    Raises `ModelLoadError` with a one-line message when the model cannot be loaded.
    """
    source = models.resolve(model)
    if backend not in BACKENDS:
        raise ModelLoadError(f"unknown backend '{backend}' ({', '.join(BACKENDS)})")
    if backend == "vllm":
        require_vllm(device)  # before a conversion that would be of no use
        if quantization not in ("none", "fp8"):
            raise ModelLoadError(
                f"--backend vllm quantizes to fp8 only, not '{quantization}' (or serve a "
                "pre-quantized AWQ/GPTQ checkpoint)"
            )
    location = models.local_path(source, cache_dir)
    if backend == "vllm":
        vllm = VllmOptions(dtype, max_batch_tokens, max_running, quantization, speculation)
        return _vllm_parts(source, location, vllm)
    torch_device = models.pick_device(device)
    model_obj, tokenizer = models.load_pretrained(
        location, torch_device, models.pick_dtype(dtype, torch_device)
    )
    return over_model(
        quantize(model_obj, quantization),
        tokenizer,
        model_name=source.served_name,
        aliases=source.aliases,
        sampling=source.sampling,
        max_batch_tokens=max_batch_tokens,
        max_running=max_running,
        kv_cache_tokens=kv_cache_tokens,
        speculation=speculation,
        solo_max_batch=solo_max_batch,
    )


def over_model(
    model: Any,
    tokenizer: Any,
    *,
    model_name: str,
    aliases: Iterable[str] = (),
    sampling: SamplingDefaults = OPENAI_SAMPLING,
    max_batch_tokens: int | None = None,
    max_running: int | None = None,
    kv_cache_tokens: int | None = None,
    speculation: str = "prompt_lookup",
    solo_max_batch: int = SOLO_MAX_BATCH,
) -> EngineParts:
    """Parts over an already loaded transformers model (tests share one model).
    ``sampling`` applies where the model's generation config names no temperature or top_p."""
    # Imported here: torch and transformers' batching internals load only when this backend is
    # built, not for --backend vllm or for an engine over a test backend.
    from local_engine.backends.transformers_cb import TransformersBackend

    if max_running is None:
        max_running = CPU_MAX_RUNNING if model.device.type == "cpu" else DEFAULT_MAX_RUNNING
    backend = TransformersBackend(
        model,
        eos_token_ids=models.eos_token_ids(model.generation_config, tokenizer.eos_token_id),
        max_batch_tokens=max_batch_tokens,
        max_running=max_running,
        kv_cache_tokens=kv_cache_tokens,
        speculation=speculation,
        solo_max_batch=solo_max_batch,
    )
    return EngineParts(
        backend,
        tokenizer,
        model_name,
        tuple(aliases),
        max_running,
        models.sampling_defaults(model.generation_config, sampling),
    )


def _vllm_parts(source: models.ModelSource, location: str, options: VllmOptions) -> EngineParts:
    tokenizer = models.load_tokenizer(location)
    generation_config = models.load_generation_config(location)  # vLLM stops on its eos too
    running = options.max_running or DEFAULT_MAX_RUNNING
    backend = VllmBackend(
        location,
        eos_token_ids=models.eos_token_ids(generation_config, tokenizer.eos_token_id),
        options=options,
    )
    return EngineParts(
        backend,
        tokenizer,
        source.served_name,
        source.aliases,
        running,
        models.sampling_defaults(generation_config, source.sampling),
    )
