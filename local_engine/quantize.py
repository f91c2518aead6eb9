"""Quantized weights: ``--quantization`` / the policy's ``engine.quantization``.

* ``int8``: int8 weight-only linear layers (torchao's ``Int8WeightOnlyConfig``, per output
  channel), on a CPU or a GPU. Activations stay in the model's dtype, so the answers stay close
  to the unquantized model's: on SmolLM2-135M the mean log-likelihood of the fp32 answers moved
  from -0.608 to -0.614 per token (bench/engine/RESULTS.md). On the CPU it pays at c=32 (2.7x
  fp32), not at c=1 (0.74x).
* ``int8_dynamic``: int8 weights *and* int8 activations, quantized per batch (on a CPU torch's
  own ``quantize_dynamic`` with fbgemm's int8 matrix products; on a GPU torchao's
  ``Int8DynamicActivationInt8WeightConfig``). 1.3x (c=1) to 4x (c=32) the CPU throughput of
  fp32, but on SmolLM2-135M it cost too much quality (log-likelihood -1.97, no greedy answer
  unchanged): measure it on your model before you use it.
* ``int4`` (GPU): torchao's int4 weight-only, in groups of 128, with its tinygemm kernel.
* ``fp8`` with ``--backend vllm``: vLLM's own online fp8 weights (`backends.vllm`).

The output projection (``lm_head``) keeps the model's dtype: its errors go straight into the
scores of the whole vocabulary, and it is one layer of many. Embeddings and the KV cache keep
the model's dtype too; only ``nn.Linear`` layers change, so the continuous batching, the CPU
attention and the solo lane run unchanged.
"""

from __future__ import annotations

import warnings
from typing import Any

from local_engine.errors import ModelLoadError

QUANTIZATIONS = ("none", "int8", "int8_dynamic", "int4", "fp8")
"""fp8 is vLLM's online quantization (``--backend vllm``), checked in `loader`."""
KEPT = "lm_head"


def quantize(model: Any, method: str) -> Any:
    """``model`` with its linear layers quantized by ``method`` (in place); ``none`` returns it
    unchanged. Raises `ModelLoadError` for a method the device or the install cannot run."""
    if method not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization '{method}' ({', '.join(QUANTIZATIONS)})")
    if method == "none":
        return model
    if method == "fp8":
        raise ModelLoadError("quantization 'fp8' is vLLM's: use it with --backend vllm")
    on_cpu = model.device.type == "cpu"
    if method == "int4" and on_cpu:
        raise ModelLoadError("quantization 'int4' needs a GPU; on a CPU use int8")
    if method == "int8_dynamic" and on_cpu:
        return _cpu_dynamic_int8(model)
    return _torchao(model, method)


def _torchao(model: Any, method: str) -> Any:
    try:
        import torchao.quantization as ao  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ModelLoadError(
            f"quantization '{method}' needs torchao (pip install torchao)"
        ) from exc
    import torch

    configs = {
        "int8": ao.Int8WeightOnlyConfig,
        "int8_dynamic": ao.Int8DynamicActivationInt8WeightConfig,
        "int4": lambda: ao.Int4WeightOnlyConfig(group_size=128),
    }

    def linear_but_the_head(module: Any, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and name != KEPT

    ao.quantize_(model, configs[method](), filter_fn=linear_but_the_head)
    return model


def _cpu_dynamic_int8(model: Any) -> Any:
    import torch

    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != KEPT}
    with warnings.catch_warnings():
        # The module, and the quantized tensors it makes, announce their deprecation.
        warnings.filterwarnings("ignore", "torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", ".*quantized tensor creation functions.*")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(  # type: ignore[no-untyped-call]
            model,
            dict.fromkeys(names, per_channel_dynamic_qconfig),
            dtype=torch.qint8,
            inplace=True,
        )
