"""The text the head reads: hashed terms, word-problem facts, and the two groups."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix

from gateway.ml.classifier import Classifier, features_of, features_of_text
from gateway.ml.head import groups_of
from gateway.ml.terms import (
    PROBLEM_FEATURES,
    problem_features,
    term_counts,
    terms,
    tfidf_rows,
)
from gateway.training.router import metrics
from gateway.training.router.data import LabelledRow
from gateway.training.router.train import _Terms, fit, logistic_fit

SIGNATURE = {"model": "fake", "max_seq_length": 8, "quantized": False, "dim": 16}


def test_terms_are_words_and_bigrams_hashed_stably() -> None:
    hashed = terms("The cat, the CAT! a")
    assert len(hashed) == 4 + 3  # "a" is too short, as in scikit-learn
    assert hashed[0] == zlib.crc32(b"the") and hashed[1] == zlib.crc32(b"cat")
    assert hashed[4] == hashed[6]  # "the cat" twice
    distinct, tf = term_counts("the cat the cat")
    # the, cat, "the cat" twice each; "cat the" once
    assert len(distinct) == 4 and np.allclose(
        sorted(tf), [1, 1 + np.log(2), 1 + np.log(2), 1 + np.log(2)]
    )
    assert len(terms("")) == 0


def test_problem_features_count_the_facts_of_a_word_problem() -> None:
    text = (
        "Tom buys 3 apples at $1.50 each. He eats half of them. "
        "If he sells the rest for 20% more, how much does he earn?"
    )
    f = dict(zip(PROBLEM_FEATURES, problem_features(text).tolist(), strict=True))
    assert f["log_sentences"] == np.float32(np.log1p(3))
    assert f["log_distinct_numbers"] == np.float32(np.log1p(3))
    assert (f["decimals"], f["fraction"], f["percent"], f["money"], f["each"], f["if"]) == (
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
    )
    assert f["time"] == 0.0
    assert problem_features("").shape == (len(PROBLEM_FEATURES),)


def test_multiple_choice_prompts_form_their_own_group() -> None:
    choice = features_of_text("Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:").vector()
    open_ = features_of_text("Tom has 3 apples and buys 4 more. How many?").vector()
    assert groups_of(np.stack([choice, open_])).tolist() == [0, 1]


def test_features_carry_the_text_but_compare_without_it() -> None:
    f = features_of([{"role": "user", "content": "x" * 5000}])
    assert len(f.text) == 4000
    assert f == features_of([{"role": "user", "content": "x" * 4999 + "y"}])


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
