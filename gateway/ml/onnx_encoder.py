"""The embedding model on ONNX Runtime: the fast path of :mod:`gateway.ml.embedder`.

Why: on the 2-core machines a single short query through sentence-transformers on torch took
25-40 ms, most of it framework overhead around a 22M-parameter model; ONNX Runtime runs the same
graph in a few milliseconds and releases the GIL for the whole forward pass. The vectors are the
same (fp32; cosine to sentence-transformers ≥ 0.99999 over QQP and the GPTCache paraphrases).

How: the model's transformer (a BERT-style Hugging Face model with mean pooling, as
sentence-transformers' all-MiniLM-L6-v2 is) is exported once with ``torch.onnx`` into a cache
directory (``$GATEWAY_DATA_DIR/models`` by default; never committed), keyed by a hash of the
weights, the sequence limit and the exporter's torch version; later starts load the file without
importing torch. Tokenising is the model's own ``tokenizer.json`` through the Rust ``tokenizers``
library, padded to the longest text of a batch; mean pooling and L2 normalisation are numpy.
Batches are sorted by length and cut where padding would waste work, so one long prompt does not
make 31 short ones pay for its length.

``quantize=True`` adds ONNX Runtime's dynamic int8 quantization (per-channel int8 weights of the
MatMul layers); it is faster still but its vectors drift from fp32 (cosine about 0.99 on
average, 0.98 at worst), so fp32 is the default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
_EXPORT_VERSION = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SPLIT_PADDING = 1.5
"""A sorted batch is cut where padding the rest to the current longest text would cost more
than this factor of real tokens."""


class Unsupported(Exception):
    """The model cannot run on this path (not a local mean-pooling BERT-style model, or
    ONNX Runtime is not installed); the caller falls back to torch."""


def default_cache_dir() -> Path:
    """``$GATEWAY_DATA_DIR/models`` (``./.gateway/models`` by default), read at call time."""
    return Path(os.environ.get("GATEWAY_DATA_DIR") or ".gateway") / "models"


def _pooling(model_dir: Path) -> tuple[bool, int]:
    """Whether the model L2-normalises, and its embedding size; raises :class:`Unsupported`
    unless the sentence-transformers modules are transformer → mean pooling (→ normalise)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file() or not (model_dir / "tokenizer.json").is_file():
        raise Unsupported(f"{model_dir}: not a local sentence-transformers model directory")
    entries = json.loads(modules_file.read_text())
    modules = [m["type"].rsplit(".", 1)[-1] for m in entries]
    if modules[:2] != ["Transformer", "Pooling"] or modules[2:] not in ([], ["Normalize"]):
        raise Unsupported(f"{model_dir}: modules {modules}")
    pooling_dir = model_dir / next(m["path"] for m in entries if m["type"].endswith("Pooling"))
    pooling = json.loads((pooling_dir / "config.json").read_text())
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if others != ["pooling_mode_mean_tokens"]:
        raise Unsupported(f"{model_dir}: pooling {others}")
    return modules[2:] == ["Normalize"], int(pooling["word_embedding_dimension"])


def _weights_key(model_dir: Path, quantize: bool) -> str:
    import onnxruntime  # type: ignore[import-untyped]

    digest = hashlib.sha256()
    for name in sorted(("config.json", "model.safetensors", "pytorch_model.bin")):
        path = model_dir / name
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    digest.update(f"v{_EXPORT_VERSION} int8={quantize} ort={onnxruntime.__version__}".encode())
    return digest.hexdigest()[:16]


def export(model_dir: Path, out: Path, *, quantize: bool = False) -> Path:
    """Export the model's transformer to ONNX at ``out`` (atomically; needs torch), optionally
    int8-quantized. Returns ``out``."""
    import torch
    from transformers import AutoModel

    out.parent.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir)).eval()

    class _LastHidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        plain = Path(tmp) / "model.onnx"
        export_module(_LastHidden(model), plain, "last_hidden_state", {0: "batch", 1: "tokens"})
        final = plain
        if quantize:
            from onnxruntime.quantization import (  # type: ignore[import-untyped]
                QuantType,
                quantize_dynamic,
            )

            final = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(
                plain, final, weight_type=QuantType.QInt8, per_channel=True,
                op_types_to_quantize=["MatMul"],
            )  # fmt: skip
        os.replace(final, out)
    return out


def export_module(module: Any, path: Path, output: str, output_axes: dict[int, str]) -> None:
    """``torch.onnx.export`` of a module that takes a BERT tokenizer's three inputs (batch and
    token axes dynamic) and returns one tensor named ``output``; needs torch."""
    import warnings

    import torch

    sample = torch.ones((2, 16), dtype=torch.long)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    axes[output] = output_axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (sample, torch.ones_like(sample), torch.zeros_like(sample)),
            str(path),
            input_names=list(_INPUTS),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def open_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session for ``path``: ``threads`` intra-op threads that do not spin
    while idle (spinning workers steal the core from the event loop), graph optimisations on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """A sentence-embedding model on ONNX Runtime; :meth:`encode` is thread-safe."""

    def __init__(
        self, session: Any, tokenizer: Any, *, dim: int, normalize: bool, path: Path
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.dim = dim
        self.normalize = normalize
        self.path = path
        self._inputs = {i.name for i in session.get_inputs()}

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        max_seq_length: int,
        threads: int,
        quantize: bool = False,
        cache_dir: Path | None = None,
    ) -> OnnxEncoder:
        """Load (exporting first when the cache has no copy); raises :class:`Unsupported`."""
        try:
            import onnxruntime  # noqa: F401  (present, or this path is unsupported)
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise Unsupported(f"onnxruntime is not installed: {exc}") from exc
        model_dir = Path(model_dir)
        normalize, dim = _pooling(model_dir)
        cache = cache_dir or default_cache_dir()
        path = cache / f"{model_dir.name}-{_weights_key(model_dir, quantize)}.onnx"
        if not path.is_file():
            log.info("exporting %s to ONNX at %s (once)", model_dir, path)
            export(model_dir, path, quantize=quantize)
        session = open_session(path, threads)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_seq_length)
        tokenizer.no_padding()
        return cls(session, tokenizer, dim=dim, normalize=normalize, path=path)

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-length (when the model normalises) float32 rows, in the order of ``texts``."""
        if not texts:
            return np.empty((0, self.dim), np.float32)
        encodings = self._tokenizer.encode_batch([t.strip() for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        start = 0
        while start < len(order):
            # Longest first: extend the group while padding to its first (longest) text costs
            # at most _SPLIT_PADDING times the real tokens.
            longest, real, end = lengths[order[start]], 0, start
            while end < len(order) and longest * (end - start + 1) <= _SPLIT_PADDING * (
                real + lengths[order[end]]
            ):
                real += lengths[order[end]]
                end += 1
            group = order[start : max(end, start + 1)]
            out[group] = self._forward([encodings[i] for i in group], int(longest))
            start = max(end, start + 1)
        return out

    def _forward(self, encodings: list[Any], width: int) -> Vectors:
        ids = np.zeros((len(encodings), width), np.int64)
        mask = np.zeros((len(encodings), width), np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(pooled, dtype=np.float32)
