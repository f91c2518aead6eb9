"""The difficulty head: numpy-only inference over the shared embedding and a few text features.

Three parts, each chosen by cross-validation on the training split (see ``train.py`` and
bench/router/RESULTS.md for the measurements):

1. **linear**: two logistic regressions on ``[embedding, standardized features]``, one for
   "the small model answers correctly", one for "the large model does"; the part is the
   difference of their probabilities, the expected gain of sending the prompt to the large
   model. Each is trained on every row (a 0/1 outcome per model), which uses more signal than
   one regression on the rarer ``needs_strong`` label (18% of rows): cross-validated APGR on
   MMLU 0.68 against 0.64-0.65.
2. **neighbours**: the ``k`` labelled training prompts nearest in embedding space (cosine)
   vote with their outcome (strong score minus weak score), an unweighted mean. MMLU subjects
   differ a lot in how often the small model falls short, and a prompt's neighbours mostly
   share its subject, so this carries what a linear head on the embedding misses. Keys are
   stored in a PCA-reduced space as float16 to keep the artifact small and the lookup well
   under a millisecond.
3. **stacker**: a logistic regression over the parts' outputs, fitted on out-of-fold
   predictions, so that the difficulty is a calibrated probability that the small model falls
   short of the large one (ranking is what routing needs; calibration makes thresholds
   readable).

The artifact is one ``.npz`` with a JSON ``meta`` entry (format version, the embedder it was
trained with, feature names, training summary) and the arrays below.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT = 1
F32 = npt.NDArray[np.float32]


def id_hashes(ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    return np.array(
        [int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") for i in ids], np.uint64
    )


@dataclass(frozen=True)
class Head:
    meta: Mapping[str, Any]
    feature_mean: F32
    feature_std: F32
    linear_w: F32
    """(dim + features, 2) weights of the logits of "small correct" and "large correct"."""
    linear_b: F32
    knn_projection: F32
    """(dim, reduced) PCA projection of the embedding for the neighbour lookup."""
    knn_keys: npt.NDArray[np.float16]
    """(examples, reduced) unit-length projected training embeddings."""
    knn_values: npt.NDArray[np.float16]
    """(examples,) outcome of each training prompt: strong score minus weak score."""
    stack_w: F32
    stack_b: float
    train_ids: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, np.uint64))
    """Hashes of the training rows' ids, so that ``eval`` can leave them out."""

    def __post_init__(self) -> None:
        # float32 copies of what every request reads: converting float16 keys per call would
        # cost more than the whole lookup
        object.__setattr__(self, "_keys", np.ascontiguousarray(self.knn_keys, np.float32))
        object.__setattr__(self, "_values", np.asarray(self.knn_values, np.float32))

    @property
    def embedder(self) -> Mapping[str, Any]:
        return dict(self.meta["embedder"])

    @property
    def knn_k(self) -> int:
        return int(self.meta["knn"]["k"])

    def check_embedder(self, signature: Mapping[str, Any]) -> None:
        want = self.embedder
        keys = ("model", "max_seq_length", "quantized", "dim")
        diff = [k for k in keys if str(signature.get(k)) != str(want.get(k))]
        if diff:
            raise ValueError(
                "the router head was trained on another embedder: "
                + ", ".join(f"{k} {signature.get(k)!r} (head: {want.get(k)!r})" for k in diff)
            )

    def parts(self, vectors: F32, features: F32 | None) -> F32:
        """(n, 2) inputs of the stacker: the linear expected gain, the neighbour vote."""
        vectors = np.asarray(vectors, np.float32)
        n = vectors.shape[0]
        if features is None:
            features = np.zeros((n, len(self.feature_mean)), np.float32)
        scaled = (np.asarray(features, np.float32) - self.feature_mean) / self.feature_std
        logits = (
            vectors @ self.linear_w[: vectors.shape[1]]
            + scaled @ self.linear_w[vectors.shape[1] :]
            + self.linear_b
        )
        p = 1.0 / (1.0 + np.exp(-logits))
        gain = p[:, 1] - p[:, 0]
        return np.stack([gain, self.neighbour_vote(vectors)], axis=1).astype(np.float32)

    def neighbour_vote(self, vectors: F32) -> F32:
        keys: F32 = self._keys  # type: ignore[attr-defined]
        values: F32 = self._values  # type: ignore[attr-defined]
        k = min(self.knn_k, keys.shape[0])
        reduced = vectors @ self.knn_projection
        reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        sims = reduced @ keys.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vote: F32 = values[top].mean(axis=1)
        return vote

    def difficulty(self, vectors: F32, features: F32 | None) -> F32:
        """Probability that the small model falls short, per row of ``vectors``."""
        z = self.parts(vectors, features) @ self.stack_w + self.stack_b
        probability: F32 = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return probability

    def trained_on(self, rows: Sequence[Any]) -> npt.NDArray[np.bool_]:
        """Which of these rows (anything with an ``id``) the head was trained on."""
        return np.isin(id_hashes([str(r.id) for r in rows]), self.train_ids)

    def save(self, path: Path) -> None:
        arrays = {
            "meta": np.frombuffer(json.dumps(self.meta, sort_keys=True).encode(), np.uint8),
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
            "linear_w": self.linear_w,
            "linear_b": self.linear_b,
            "knn_projection": self.knn_projection,
            "knn_keys": self.knn_keys,
            "knn_values": self.knn_values,
            "stack_w": self.stack_w,
            "stack_b": np.array([self.stack_b], np.float32),
            "train_ids": self.train_ids,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: router head format {meta.get('format')}, not {FORMAT}")
            return cls(
                meta=meta,
                feature_mean=z["feature_mean"],
                feature_std=z["feature_std"],
                linear_w=z["linear_w"],
                linear_b=z["linear_b"],
                knn_projection=z["knn_projection"],
                knn_keys=z["knn_keys"],
                knn_values=z["knn_values"],
                stack_w=z["stack_w"],
                stack_b=float(z["stack_b"][0]),
                train_ids=z["train_ids"],
            )
