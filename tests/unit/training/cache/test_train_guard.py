"""Fitting the verifier's ensemble with scikit-learn: the artifact it writes is the one the numpy
verifier loads, and it scores with the fitted members' probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gateway.ml.verifier import FEATURES_VERSION, Verifier
from gateway.training.cache.train_guard import choose_cutoff, fit, save


def _data(n: int = 2500) -> tuple[np.ndarray, np.ndarray]:
    """19 features; the label is mostly the sign of a mix of the first two."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 19)).astype(np.float32) * 3 + 1
    y = ((x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n)) > 0).astype(np.float32)
    return x, y


def test_a_tiny_fit_writes_an_artifact_the_verifier_loads_and_scores_with(tmp_path: Path) -> None:
    x, y = _data()
    model = fit(x[:2000], y[:2000], members=2, hidden=8, l2=0.015, seed=0)
    assert model.w1.shape == (2, 19, 8) and model.w2.shape == (2, 8) and model.b2.shape == (2,)
    prob = model.probability(x[2000:])
    assert ((prob >= 0) & (prob <= 1)).all()
    assert np.mean((prob > 0.5) == (y[2000:] > 0.5)) > 0.8

    meta = {"features_version": FEATURES_VERSION, "cutoff": 0.5, "embedder": {"model": "x"}}
    meta["embedder"]["model"] = "all-MiniLM-L6-v2"
    path = tmp_path / "verifier.npz"
    save(path, model, np.ones(30522, np.float32), meta)
    loaded = Verifier.load(path)
    assert json.loads(json.dumps(loaded.meta)) == meta
    # float16 first-layer weights in the artifact: close to the fitted members, not equal
    assert np.allclose(loaded.members.probability(x[2000:]), prob, atol=2e-3)
    u = np.ones(384, np.float32) / np.sqrt(384)
    assert 0.0 <= loaded.probability("How do I learn Java?", "How to learn Java?", u, u) <= 1.0


def test_the_same_seed_fits_the_same_members() -> None:
    x, y = _data(300)
    first = fit(x, y, members=2, hidden=4, l2=0.015, seed=3)
    again = fit(x, y, members=2, hidden=4, l2=0.015, seed=3)
    assert np.array_equal(first.w1, again.w1) and not np.array_equal(first.w1[0], first.w1[1])


def test_the_cutoff_keeps_the_recall_asked_for() -> None:
    labels = np.array([True, True, True, False, False, True])
    prob = np.array([0.9, 0.8, 0.6, 0.7, 0.4, 0.35], np.float32)
    cutoff, precision, recall = choose_cutoff(prob, labels, np.ones(6, bool), min_recall=0.75)
    assert recall >= 0.75 and precision == 0.75 and 0.4 < cutoff <= 0.6
