"""The difficulty head: numpy-only inference over the shared embedding, a few text features and
the prompt's words.

A prompt goes to one of three groups by its format: **choice** (multiple-choice options, like
MMLU), **problem** (two or more numbers: word problems and calculations, like GSM8K) or
**open** (anything else: open-ended chat, like AlpacaEval's instructions). The groups fail the
small model for different reasons, and one head for all let the larger sets drown out what
predicts the others (cross-validated APGR on GSM8K 0.52 shared with MMLU, 0.60 separate; chat
0.56 and GSM8K 0.565 when chat shared GSM8K's group; bench/router/RESULTS.md). The groups read
only the text's format, never which data set a prompt came from.
Each group has its own parts, chosen by cross-validation on the training split (``train.py``;
bench/router/RESULTS.md has the measurements):

1. **linear**: two logistic regressions on ``[embedding, standardized features]``, one for
   "the small model answers correctly", one for "the large model does"; the part is the
   difference of their probabilities, the expected gain of sending the prompt to the large
   model. Each is trained on every row of the group (a 0/1 outcome per model), which uses more
   signal than one regression on the rarer ``needs_strong`` label (18% of rows).
2. **terms** (choice group): the same logistic pair over the TF-IDF of the prompt's words and
   bigrams (``gateway/router/text.py``). It adds what the embedding blurs: negations, the
   "Statement 1 | Statement 2" format, the names of a subject's hard topics. It replaced the
   earlier neighbour vote (kNN over the embedding), which adds nothing once it is there
   (MMLU 0.710 with or without it) and cost most of the head's time.
3. **stacker**: per group, a logistic regression over the parts' outputs, fitted on out-of-fold
   predictions, so that the difficulty is a calibrated probability that the small model falls
   short of the large one (ranking is what routing needs; calibration makes thresholds
   readable). A part a group does not use has a zero weight and is not computed.

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

from gateway.ml.terms import PROBLEM_FEATURES, problem_features, term_counts

FORMAT = 3
GROUPS = ("choice", "problem", "open")
PROBLEM_GROUP = 1
NUMBERS_FEATURE = 1  # index of ``log_numbers`` (``log1p(numbers)``) in ``Features.vector()``
MATH_FEATURE = 3  # index of ``has_math``
CHOICE_FEATURE = 4  # index of ``multiple_choice``
_ONE_NUMBER, _TWO_NUMBERS = float(np.log1p(1)) - 1e-6, float(np.log1p(2)) - 1e-6
F32 = npt.NDArray[np.float32]


def id_hashes(ids: Sequence[str]) -> npt.NDArray[np.uint64]:
    return np.array(
        [int.from_bytes(hashlib.sha256(i.encode()).digest()[:8], "big") for i in ids], np.uint64
    )


def groups_of(features: F32) -> npt.NDArray[np.int64]:
    """The group of each row of ``Features.vector()`` rows: 0 choice, 1 problem (two numbers,
    or one and a math word or sign), 2 open. In the data: 98% of GSM8K, 9% of chat."""
    features = np.asarray(features)
    numbers = features[:, NUMBERS_FEATURE]
    math = (numbers >= _TWO_NUMBERS) | ((numbers >= _ONE_NUMBER) & (features[:, MATH_FEATURE] > 0))
    problem = np.where(math, PROBLEM_GROUP, 2)
    return np.where(features[:, CHOICE_FEATURE] >= 0.5, 0, problem).astype(np.int64)


def dense_features(features: F32, texts: Sequence[str]) -> F32:
    """``Features.vector()`` rows followed by the texts' ``problem_features`` (zeros outside
    the problem group, which alone reads them: they cost up to 0.4 ms)."""
    features = np.asarray(features, np.float32)
    extra = np.zeros((len(features), len(PROBLEM_FEATURES)), np.float32)
    for i in np.flatnonzero(groups_of(features) == PROBLEM_GROUP).tolist():
        extra[i] = problem_features(texts[i])
    out: F32 = np.hstack([features, extra])
    return out


@dataclass(frozen=True)
class Head:
    meta: Mapping[str, Any]
    feature_mean: F32
    feature_std: F32
    """Divides the centred features; includes each feature's weight relative to the embedding."""
    linear_w: F32
    """(groups, dim + features, 2) weights of the logits of "small correct", "large correct"."""
    linear_b: F32
    """(groups, 2)"""
    vocabulary: npt.NDArray[np.uint32]
    """(terms,) sorted CRC-32 hashes of the words and bigrams the terms part knows."""
    idf: F32
    """(terms,) inverse document frequency of each term in the training rows."""
    terms_w: F32
    """(terms, 2) weights of the logits of "small correct", "large correct" over TF-IDF rows."""
    terms_b: F32
    """(2,)"""
    stack_w: F32
    """(groups, 2) weights of the parts (linear, terms) in each group's stacker."""
    stack_b: F32
    """(groups,)"""
    train_ids: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, np.uint64))
    """Hashes of the training rows' ids, so that ``eval`` can leave them out."""

    @property
    def embedder(self) -> Mapping[str, Any]:
        return dict(self.meta["embedder"])

    def check_embedder(self, signature: Mapping[str, Any]) -> None:
        want = self.embedder
        keys = ("model", "max_seq_length", "quantized", "dim")
        diff = [k for k in keys if str(signature.get(k)) != str(want.get(k))]
        if diff:
            raise ValueError(
                "the router head was trained on another embedder: "
                + ", ".join(f"{k} {signature.get(k)!r} (head: {want.get(k)!r})" for k in diff)
            )

    def linear_gain(self, vectors: F32, dense: F32, groups: npt.NDArray[np.int64]) -> F32:
        """The linear part: P(large correct) - P(small correct), each row in its group."""
        dim = vectors.shape[1]
        scaled = (dense - self.feature_mean) / self.feature_std
        w = self.linear_w[groups]  # (n, dim + features, 2)
        logits = (
            np.einsum("nd,ndk->nk", vectors, w[:, :dim])
            + np.einsum("nf,nfk->nk", scaled, w[:, dim:])
            + self.linear_b[groups]
        )
        p = 1.0 / (1.0 + np.exp(-logits))
        gain: F32 = (p[:, 1] - p[:, 0]).astype(np.float32)
        return gain

    def terms_gain(self, text: str) -> float:
        """The terms part for one text: P(large correct) - P(small correct)."""
        hashed, tf = term_counts(text)
        vocabulary = self.vocabulary
        logits = self.terms_b.astype(np.float64)
        if len(hashed) and len(vocabulary):
            at = np.searchsorted(vocabulary, hashed)
            at[at == len(vocabulary)] = 0
            known = vocabulary[at] == hashed
            at = at[known]
            weight = tf[known] * self.idf[at]
            norm = float(np.sqrt(weight @ weight))
            if norm > 0:
                logits = logits + (weight / norm) @ self.terms_w[at]
        p = 1.0 / (1.0 + np.exp(-logits))
        return float(p[1] - p[0])

    def parts(
        self,
        vectors: F32,
        features: F32 | None,
        texts: Sequence[str] | None,
        dense: F32 | None = None,
    ) -> F32:
        """(n, 2) inputs of the stackers: the linear gain, the terms gain (0 where the row's
        group does not use it). ``dense``: the rows' ``dense_features`` when already known (a
        request's, kept in the labels store without its text)."""
        vectors = np.asarray(vectors, np.float32)
        n = vectors.shape[0]
        if features is None:
            features = np.zeros((n, CHOICE_FEATURE + 1), np.float32)
        texts = [""] * n if texts is None else texts
        if len(texts) != n:
            raise ValueError(f"{n} vectors but {len(texts)} texts")
        groups = groups_of(features)
        if dense is None:
            dense = dense_features(features, texts)
        out = np.zeros((n, 2), np.float32)
        out[:, 0] = self.linear_gain(vectors, dense, groups)
        for i in np.flatnonzero(self.stack_w[groups, 1] != 0).tolist():
            out[i, 1] = self.terms_gain(texts[i])
        return out

    def difficulty(
        self,
        vectors: F32,
        features: F32 | None,
        texts: Sequence[str] | None = None,
        dense: F32 | None = None,
    ) -> F32:
        """Probability that the small model falls short, per row of ``vectors``.

        ``features`` are ``Features.vector()`` rows and ``texts`` the prompts (``Features.text``);
        without them the head judges by the embedding alone, less well. ``dense``: see
        ``parts``."""
        vectors = np.asarray(vectors, np.float32)
        if features is None:
            features = np.zeros((vectors.shape[0], CHOICE_FEATURE + 1), np.float32)
        groups = groups_of(features)
        parts = self.parts(vectors, features, texts, dense)
        z = (parts * self.stack_w[groups]).sum(axis=1) + self.stack_b[groups]
        probability: F32 = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return probability

    def trained_on(self, rows: Sequence[Any]) -> npt.NDArray[np.bool_]:
        """Which of these rows (anything with an ``id``) the head was trained on."""
        return np.isin(id_hashes([str(r.id) for r in rows]), self.train_ids)

    _ARRAYS = (
        "feature_mean",
        "feature_std",
        "linear_w",
        "linear_b",
        "vocabulary",
        "idf",
        "terms_w",
        "terms_b",
        "stack_w",
        "stack_b",
        "train_ids",
    )

    def save(self, path: Path) -> None:
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        arrays["meta"] = np.frombuffer(json.dumps(self.meta, sort_keys=True).encode(), np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise ValueError(
                    f"{path}: router head format {meta.get('format')}, not {FORMAT}; "
                    "retrain it with `gateway router train`"
                )
            arrays = {name: z[name] for name in cls._ARRAYS}
        arrays["terms_w"] = np.ascontiguousarray(arrays["terms_w"], np.float32)
        return cls(meta=meta, **arrays)
