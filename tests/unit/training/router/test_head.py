"""Training and loading the head on small synthetic data (no embedding model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.ml.classifier import Classifier, features_of_text
from gateway.training.router import metrics
from gateway.training.router.data import LabelledRow, cached_embeddings
from gateway.training.router.train import fit

SIGNATURE = {"model": "fake", "max_seq_length": 8, "quantized": False, "dim": 16}


def _data(n: int = 400) -> tuple[list[LabelledRow], np.ndarray]:
    """Two clusters: prompts near the first direction are hard for the weak model."""
    rng = np.random.default_rng(0)
    hard = rng.random(n) < 0.5
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors[:, 0] += np.where(hard, 3, -3)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weak = np.where(hard, rng.random(n) < 0.3, rng.random(n) < 0.9).astype(float)
    strong = np.where(hard, rng.random(n) < 0.9, rng.random(n) < 0.9).astype(float)
    rows = [
        LabelledRow(f"r{i}", "mmlu", "s", f"question {i}?", weak[i], strong[i]) for i in range(n)
    ]
    return rows, vectors


def test_fit_learns_the_hard_cluster_and_round_trips(tmp_path: Path) -> None:
    rows, vectors = _data()
    head = fit(rows[:300], vectors[:300], SIGNATURE)
    held, held_vectors = rows[300:], vectors[300:]
    features = np.stack([features_of_text(r.prompt).vector() for r in held])
    texts = [r.prompt for r in held]
    scores = head.difficulty(held_vectors, features, texts)
    assert ((scores >= 0) & (scores <= 1)).all()
    report = metrics.report(scores, [r.weak_score for r in held], [r.strong_score for r in held])
    assert report.apgr > 0.65

    path = tmp_path / "head.npz"
    head.save(path)
    classifier = Classifier.load(path)
    assert np.array_equal(classifier.head.difficulty(held_vectors, features, texts), scores)
    judgement = classifier.classify(held_vectors[0], features_of_text(held[0].prompt))
    assert judgement.difficulty == pytest.approx(float(scores[0]))
    assert classifier.head.trained_on(rows).tolist() == [True] * 300 + [False] * 100


def test_a_head_refuses_another_embedder() -> None:
    rows, vectors = _data(100)
    head = fit(rows, vectors, SIGNATURE)
    head.check_embedder(SIGNATURE)
    with pytest.raises(ValueError, match="quantized"):
        head.check_embedder({**SIGNATURE, "quantized": True})


class _FakeEmbedder:
    dim = 3
    signature: dict[str, Any] = {"model": "fake", "dim": 3}  # noqa: RUF012

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_sync(self, texts: list[str], progress: bool = False) -> np.ndarray:
        self.embedded += texts
        return np.array([[len(t), 0, 1] for t in texts], np.float32)


def test_embeddings_are_cached_per_text(tmp_path: Path) -> None:
    fake = _FakeEmbedder()
    first = cached_embeddings(fake, ["a", "bb"], tmp_path)  # type: ignore[arg-type]
    again = cached_embeddings(fake, ["bb", "ccc", "a", "ccc"], tmp_path)  # type: ignore[arg-type]
    assert fake.embedded == ["a", "bb", "ccc"]
    assert first[:, 0].tolist() == [1, 2]
    assert again[:, 0].tolist() == [2, 3, 1, 3]
    assert cached_embeddings(fake, ["ccc"], tmp_path)[0, 0] == 3  # type: ignore[arg-type]
    assert len(fake.embedded) == 3
