"""Fitting the head with scikit-learn: the solvers agree, the training TF-IDF is the one the
numpy head computes at serving time, and a fitted head round-trips through its artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix

from gateway.ml.classifier import Classifier, features_of_text
from gateway.ml.terms import tfidf_rows
from gateway.training.router import metrics
from gateway.training.router.data import LabelledRow
from gateway.training.router.train import _Terms, fit, logistic_fit

SIGNATURE = {"model": "fake", "max_seq_length": 8, "quantized": False, "dim": 16}


def test_logistic_fit_separates() -> None:
    x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    w, b = logistic_fit(x, [0, 0, 1, 1], l2=0.1)
    assert w[0] > 0 and abs(b) < 1e-6


def test_one_class_gives_no_weights_and_a_smoothed_rate() -> None:
    w, b = logistic_fit(np.ones((3, 2)), [1, 1, 1], l2=1.0)
    assert w.tolist() == [0.0, 0.0] and b == np.log(3.5 / 0.5)


def test_sparse_logistic_fit_matches_the_dense_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) * (rng.random((60, 4)) < 0.5)
    y = (x[:, 0] + rng.normal(size=60) > 0).astype(float)
    w, b = logistic_fit(csr_matrix(x), y, 1.0)
    dense_w, dense_b = logistic_fit(x, y, 1.0)
    assert np.allclose(w, dense_w, atol=1e-4) and abs(b - dense_b) < 1e-4


def test_training_tfidf_is_the_one_the_head_computes() -> None:
    """The terms part is fitted on scikit-learn's TF-IDF and served by numpy's: the same rows."""
    texts = ["the cat sat on the mat", "the cat the cat", "a dog sat", "dogs and cats", "the mat"]
    fitted = _Terms(texts, np.array([0, 1, 0, 1, 0.0]), np.array([1, 1, 0, 1, 1.0]))
    assert (np.diff(fitted.vocabulary.astype(np.int64)) > 0).all()
    rows, cols, vals = tfidf_rows(texts, fitted.vocabulary, fitted.idf)
    served = csr_matrix((vals, (rows, cols)), shape=(len(texts), len(fitted.vocabulary)))
    assert np.allclose(served.toarray(), fitted._tfidf.transform(texts).toarray(), atol=1e-6)


def _choice_rows(n: int) -> tuple[list[LabelledRow], np.ndarray]:
    """Multiple-choice prompts whose word "tricky" marks the ones the weak model fails;
    embeddings are noise, so only the terms part can find them."""
    rng = np.random.default_rng(1)
    hard = rng.random(n) < 0.4
    rows = []
    for i in range(n):
        word = "tricky" if hard[i] else "plain"
        options = "A. one\nB. two\nC. three\nD. four\nAnswer:"
        prompt = f"Question {i} is {word} topic {i % 7}?\n{options}"
        weak = float(rng.random() < (0.2 if hard[i] else 0.9))
        rows.append(LabelledRow(f"c{i}", "mmlu", "s", prompt, weak, float(rng.random() < 0.9)))
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    return rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_the_terms_part_learns_a_word_and_round_trips(tmp_path: Path) -> None:
    rows, vectors = _choice_rows(500)
    head = fit(rows[:400], vectors[:400], SIGNATURE)
    assert head.stack_w[0, 1] > 0  # the choice group uses the terms part
    assert head.meta["cross_validated_apgr"]["stacked"]["mmlu"] > 0.7
    held = rows[400:]
    features = [features_of_text(r.prompt) for r in held]
    path = tmp_path / "head.npz"
    head.save(path)
    classifier = Classifier.load(path)
    scores = np.array([j.difficulty for j in classifier.classify_many(vectors[400:], features)])
    one = classifier.classify(vectors[400], features[0]).difficulty
    assert abs(one - scores[0]) < 1e-6
    report = metrics.report(scores, [r.weak_score for r in held], [r.strong_score for r in held])
    assert report.apgr > 0.7
