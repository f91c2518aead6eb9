"""The cross-encoder verifier on ONNX Runtime: both texts read by one transformer at once.

The feature verifier of :mod:`~gateway.ml.verifier` sees two sentence vectors and a few
word statistics; a cross-encoder attends from every word of one text to every word of the
other, which is what QQP's "related but different" pairs need. It is all-MiniLM-L6-v2 (the
embedder's own weights) with its top layers fine-tuned on QQP's development half and a linear
head over the mean-pooled output (bench/cache/cross_train.py).

An experiment, not wired into the gateway: it missed the quality targets (bench/cache/RESULTS.md,
"Cross-encoder verifier"). Artifacts: the trained tensors only (a float16 delta over the
bundled model, ``.npz``, 9.9 MB with the top 3 layers trained); applying the delta and exporting
to ONNX needs torch once, like the embedder's export, and the ONNX file (90 MB) lands in the
given cache directory. Inference is onnxruntime, numpy and the Rust tokenizer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.ml.onnx_encoder import default_cache_dir, export_module, open_session

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
__all__ = ["CrossEncoder", "build_onnx"]


def _delta_key(delta: Path) -> str:
    import onnxruntime  # type: ignore[import-untyped]

    digest = hashlib.sha256(delta.read_bytes())
    digest.update(f"ort={onnxruntime.__version__}".encode())
    return digest.hexdigest()[:16]


def build_onnx(delta: Path, model_dir: Path, out: Path) -> Path:
    """Apply ``delta`` to the model at ``model_dir`` and export the pair classifier to ONNX at
    ``out`` (atomically; needs torch)."""
    import torch

    from bench.cache.cross_train import PairClassifier, apply_delta

    model = PairClassifier(model_dir)
    apply_delta(model, delta)
    model.eval()

    class _Probability(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return torch.sigmoid(self.inner(input_ids, attention_mask, token_type_ids))

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        path = Path(tmp) / "model.onnx"
        export_module(_Probability(model), path, "probability", {0: "batch"})
        os.replace(path, out)
    return out


class CrossEncoder:
    """P(same question) for text pairs; :meth:`probabilities` is thread-safe."""

    def __init__(self, session: Any, tokenizer: Any, meta: dict[str, Any], path: Path) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self.meta = meta
        self.path = path
        self.cutoff = float(meta.get("cutoff", 0.5))
        """Pairs whose probability is below this are refused."""

    @classmethod
    def load(cls, delta: Path, *, threads: int = 1, cache_dir: Path | None = None) -> CrossEncoder:
        """Load the classifier for ``delta``, exporting it to ONNX first when the cache has no
        copy (that step needs torch); blocking, call it at start."""
        from tokenizers import Tokenizer

        from bench.cache.cross_train import read_meta
        from gateway.ml.embedder import resolve_model

        meta = read_meta(delta)
        model_dir = Path(resolve_model(meta.get("model", "all-MiniLM-L6-v2")))
        path = (cache_dir or default_cache_dir()) / f"cross-encoder-{_delta_key(delta)}.onnx"
        if not path.is_file():
            log.info("exporting the cross-encoder verifier to ONNX at %s (once)", path)
            build_onnx(delta, model_dir, path)
        session = open_session(path, threads)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=int(meta["max_length"]))
        tokenizer.no_padding()
        return cls(session, tokenizer, meta, path)

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> F32:
        """P(same question) for each (query, stored) pair, one padded batch."""
        if not pairs:
            return np.empty(0, np.float32)
        from bench.cache.cross_train import batch_arrays, encode_pairs

        feeds = batch_arrays(encode_pairs(self._tokenizer, pairs))
        return np.asarray(self._session.run(None, feeds)[0], np.float32).reshape(-1)

    def probability(self, a: str, b: str) -> float:
        return float(self.probabilities([(a, b)])[0])
