"""The learned pair verifier: the second half of the meaning guard.

The hand-written checks of :mod:`~gateway.ml.rules` catch the differences that a rule can
name (numbers, negation, entities, direction); the verifier judges the rest: "How do I learn
Java?" and "How do I learn Java quickly?" score 0.9 in cosine and are different questions in
Quora's labels, as are most "related but different" pairs. It is a small ensemble of one-layer
MLPs over 19 features of the pair:

- the cosine of the two all-MiniLM-L6-v2 vectors;
- the guard's analyses: word Jaccard, number / negation / entity / direction / question-word
  mismatches, lengths;
- a word-piece alignment over the model's own input embeddings (so no extra model): how well
  each word piece of one text is matched by some word piece of the other, weighted by inverse
  document frequency, and how much unmatched weight each side carries.

Why not the vectors themselves (``|u - v|``, ``u * v``, 768 more inputs)? Measured by 5-fold
cross-validation on QQP-dev they add nothing (precision 0.84 at recall 0.42 with or without
them), and out of QQP's domain they hurt: on the GPTCache paraphrases, at equal QQP precision,
the vector model refused 3-7 points more real paraphrases. Every feature is symmetric in the
two texts. Inference is numpy only: the tokenizer is the
model's ``tokenizer.json`` (Rust ``tokenizers``), the word-piece embeddings are read once from
the model's safetensors file. Like the rules it reads only the first ``rules.MAX_CHARS``
characters of a text (and of those the first 256 word pieces), so the tokenizer never sees a
whole pasted document. Per-text work is memoised by a digest of that prefix, bounded in entries
and bytes, so a stored entry is analysed once while it stays in the memo; a pair costs a few
tens of microseconds.

The weights are a committed artifact (``gateway/data/semantic_verifier.npz``), trained only on
the development half (even rows) of the QQP pairs by ``gateway cache train-guard``
(:mod:`~gateway.training.cache.train_guard`); the artifact records its cutoff, the embedder it was
trained on and its development figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.ml import rules
from gateway.ml.memo import TextMemo

__all__ = ["DEFAULT_VERIFIER", "FEATURES_VERSION", "Verifier", "WordPieces", "pair_features"]

F32 = npt.NDArray[np.float32]
DEFAULT_VERIFIER = Path(__file__).resolve().parent.parent / "data" / "semantic_verifier.npz"
FEATURES_VERSION = 2
_MATCHED = 0.6
"""Cosine between word-piece input embeddings above which a piece counts as matched."""
_STOP = (
    "a an the and or of to in on for is are was what how why which do does can i my you your "
    "it be with by that this at from as"
)


class WordPieces:
    """The model's tokenizer and (unit-length) input embeddings, plus per-piece IDF weights."""

    def __init__(self, tokenizer: Any, embeddings: F32, idf: F32) -> None:
        self._tokenizer = tokenizer
        self.embeddings = embeddings
        self.idf = idf
        self._stop = frozenset(tokenizer.encode(_STOP, add_special_tokens=False).ids)
        self._memo = TextMemo(
            self._pieces, lambda ids: 112 + ids.nbytes, max_entries=8192, max_bytes=16 << 20
        )

    @classmethod
    def load(cls, idf: F32 | None = None, model: str = "all-MiniLM-L6-v2") -> WordPieces:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        from gateway.ml.embedder import resolve_model

        model_dir = Path(resolve_model(model))
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        weights = load_file(str(model_dir / "model.safetensors"))
        table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))
        table = np.asarray(table, np.float32)
        table /= np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
        if idf is None:
            idf = np.ones(len(table), np.float32)
        return cls(tokenizer, table, np.asarray(idf, np.float32))

    def with_idf(self, idf: F32) -> WordPieces:
        return WordPieces(self._tokenizer, self.embeddings, idf)

    def pieces(self, text: str) -> npt.NDArray[np.int64]:
        """Distinct word-piece ids of ``text``'s first ``rules.MAX_CHARS`` characters (the
        first 256 of them), function words left out; memoised."""
        return self._memo(text[: rules.MAX_CHARS])

    def _pieces(self, text: str) -> npt.NDArray[np.int64]:
        ids = self._tokenizer.encode(text[: rules.MAX_CHARS], add_special_tokens=False).ids[:256]
        return np.array(sorted(set(ids) - self._stop), np.int64)

    def document_frequency_idf(self, texts: list[str]) -> F32:
        """IDF of every word piece over ``texts`` (for training)."""
        df = np.zeros(len(self.embeddings), np.float64)
        for text in texts:
            df[self._pieces(text)] += 1
        return np.log((len(texts) + 1) / (df + 1)).astype(np.float32)


_LEXICAL = 8
_ALIGN = 10


def _lexical(a: str, b: str) -> list[float]:
    x, y = rules.analyse(a), rules.analyse(b)
    union = len(x.words | y.words) or 1
    numbers = x.numbers != y.numbers and (x.digits or y.digits or bool(x.numbers and y.numbers))
    missing = len(rules.missing_entities(x, y)) + len(rules.missing_entities(y, x))
    short, long = sorted((x.length, y.length))
    return [
        len(x.words & y.words) / union,
        float(numbers),
        float(x.negated != y.negated),
        min(missing, 3) / 3,
        float(rules.reversed_pair(x, y) is not None),
        float(x.wh != y.wh and x.wh is not None and y.wh is not None),
        short / max(1, long),
        len(x.entities ^ y.entities) / (1 + len(x.entities | y.entities)),
    ]


def _align(pieces: WordPieces, a: str, b: str) -> list[float]:
    pa, pb = pieces.pieces(a), pieces.pieces(b)
    if len(pa) == 0 or len(pb) == 0:
        return [0.0] * _ALIGN
    sim = pieces.embeddings[pa] @ pieces.embeddings[pb].T
    best_a, best_b = sim.max(axis=1), sim.max(axis=0)
    wa, wb = pieces.idf[pa], pieces.idf[pb]
    p = float((best_a * wa).sum() / max(wa.sum(), 1e-6))
    r = float((best_b * wb).sum() / max(wb.sum(), 1e-6))
    ua, ub = float(wa[best_a < _MATCHED].sum()), float(wb[best_b < _MATCHED].sum())
    ia, ib = wa[best_a < 0.99], wb[best_b < 0.99]
    top_a, top_b = float(ia.max()) if len(ia) else 0.0, float(ib.max()) if len(ib) else 0.0
    shared = len(np.intersect1d(pa, pb, assume_unique=True))
    return [
        min(p, r),
        max(p, r),
        ua + ub,
        max(ua, ub),
        float((best_a < _MATCHED).sum() + (best_b < _MATCHED).sum()),
        max(top_a, top_b),
        min(top_a, top_b),
        float(min(best_a.min(), best_b.min())),
        float(max(best_a.min(), best_b.min())),
        shared / (len(pa) + len(pb) - shared),
    ]


def pair_features(pieces: WordPieces, a: str, b: str, u: F32, v: F32) -> F32:
    """The verifier's input for one pair (symmetric in a/u and b/v)."""
    cosine = float(np.asarray(u, np.float32).reshape(-1) @ np.asarray(v, np.float32).reshape(-1))
    return np.asarray([cosine, *_lexical(a, b), *_align(pieces, a, b)], np.float32)


FEATURES = 1 + _LEXICAL + _ALIGN


@dataclass(frozen=True, slots=True)
class Members:
    """An ensemble of one-hidden-layer MLPs over standardised features; the probabilities are
    averaged."""

    mean: F32
    std: F32
    w1: F32  # (members, features, hidden)
    b1: F32  # (members, hidden)
    w2: F32  # (members, hidden)
    b2: F32  # (members,)

    def probability(self, features: F32) -> F32:
        """P(same question) for each row of ``features`` (n, d)."""
        z = (np.atleast_2d(features) - self.mean) / self.std
        hidden = np.maximum(np.einsum("nd,mdh->mnh", z, self.w1) + self.b1[:, None, :], 0.0)
        logits = np.einsum("mnh,mh->mn", hidden, self.w2) + self.b2[:, None]
        return np.asarray((1.0 / (1.0 + np.exp(-logits))).mean(axis=0), np.float32)


class Verifier:
    """The trained verifier; build with :meth:`load`."""

    def __init__(self, members: Members, pieces: WordPieces, meta: dict[str, Any]) -> None:
        self.members = members
        self.pieces = pieces
        self.meta = meta
        self.cutoff = float(meta["cutoff"])
        """Pairs whose probability is below this are refused."""

    @classmethod
    def load(cls, path: Path | None = None) -> Verifier:
        """Load an artifact (default: the committed ``gateway/data/semantic_verifier.npz``);
        blocking (reads the embedding model's word-piece table), call it at start."""
        with np.load(path or DEFAULT_VERIFIER, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("features_version") != FEATURES_VERSION:
                raise ValueError(
                    f"verifier artifact has features version {meta.get('features_version')}, "
                    f"this code computes {FEATURES_VERSION}; retrain with gateway cache train-guard"
                )
            members = Members(
                *(np.asarray(data[k], np.float32) for k in ("mean", "std", "w1", "b1", "w2", "b2"))
            )
            idf = np.asarray(data["idf"], np.float32)
        pieces = WordPieces.load(idf, meta["embedder"]["model"])
        return cls(members, pieces, meta)

    def probability(self, a: str, b: str, u: F32, v: F32) -> float:
        """P(``a`` and ``b`` are the same question), given their unit vectors."""
        return float(self.members.probability(pair_features(self.pieces, a, b, u, v))[0])

    def accepts(self, a: str, b: str, u: F32, v: F32) -> bool:
        return self.probability(a, b, u, v) >= self.cutoff
