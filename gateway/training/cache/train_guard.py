"""Training the learned pair verifier (``gateway cache train-guard``); needs the ``train`` extra
(scikit-learn), which serving never imports: the verifier in :mod:`gateway.ml.verifier` reads the
fitted weights with numpy.

Recipe, chosen by 5-fold cross-validation on the development half of QQP (even rows; the odd
rows are the test half and are never read here):

- features: :func:`gateway.ml.verifier.pair_features`, standardised;
- model: ``members`` one-hidden-layer ReLU MLPs (32 units), each from its own seed, trained
  with Adam (lr 1e-3, batches of 200) on cross-entropy plus an L2 penalty, selected by
  held-out accuracy on a 10% slice per member (patience 10); probabilities averaged. Precision
  at recall 0.42 in cross-validation: 0.84 (with the 768 vector features as well: 0.84;
  logistic regression 0.82-0.84; gradient boosting 0.83). The members are scikit-learn's
  ``MLPClassifier``, which replaced a hand-written Adam loop: over ensemble seeds 0-2 on the QQP
  test half (cosine 0.75, rules accepting) it scores average precision 0.852-0.853 against
  0.851, precision 0.761-0.763 / recall 0.641-0.648 against 0.763-0.765 / 0.632-0.637 at the
  chosen cutoffs; it fits in 16 s against 7 s (``bench/cache/guard_fits.py``, RESULTS.md);
- cutoff: from out-of-fold probabilities on the training pairs (``folds`` > 1), the one that
  maximises precision subject to recall ≥ ``min_recall`` among the pairs above the cosine
  ``threshold`` that the hard rules accept, the decision the cache makes. The default
  ``min_recall`` 0.64 is the QQP-dev recall of the rules alone at their old default (cosine
  0.80): the verifier buys precision at no recall. A QQP-optimal cutoff (recall 0.42,
  precision 0.84) refuses about 40% of the GPTCache LLM paraphrases, which is a cache that
  stops hitting (bench/cache/RESULTS.md has the trade-off).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.ml import guard
from gateway.ml.verifier import FEATURES_VERSION, Members, WordPieces, pair_features
from gateway.training import MissingTrainExtra
from gateway.training.cache.evaluate import Pair

try:  # the `train` extra: scikit-learn fits here, the numpy verifier in gateway.ml serves
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
    from sklearn.neural_network import MLPClassifier  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
except ModuleNotFoundError as error:
    raise MissingTrainExtra(error) from error

F32 = npt.NDArray[np.float32]
BATCH = 200
MAX_EPOCHS = 60
MIN_HELD_OUT = 20  # rows of each class, so that a 10% slice holds both


def features(pieces: WordPieces, pairs: Sequence[Pair], stored: F32, query: F32) -> F32:
    return np.stack(
        [pair_features(pieces, p.query, p.stored, query[i], stored[i]) for i, p in enumerate(pairs)]
    )


def _member(x: F32, y: F32, *, hidden: int, l2: float, seed: int) -> tuple[F32, F32, F32, float]:
    """One MLP on standardised inputs: scikit-learn's ``MLPClassifier`` with the recipe's
    settings; returns (w1, b1, w2, b2), the arrays :class:`~gateway.ml.verifier.Members` reads.

    ``alpha = l2 * batch``: scikit-learn divides the penalty's gradient by the batch size, the
    recipe adds ``l2 * w`` to the batch-mean gradient. Early stopping on held-out accuracy (a
    10% slice, patience 10) keeps the best epoch's weights, as the hand-written Adam loop did.
    """
    positive, batch = y > 0.5, min(BATCH, len(x))
    model = MLPClassifier(
        hidden_layer_sizes=(hidden,),
        alpha=l2 * batch,
        batch_size=batch,
        learning_rate_init=1e-3,
        max_iter=MAX_EPOCHS,
        # a held-out slice needs rows of both classes; a toy set trains to the epoch cap instead
        early_stopping=min(int(positive.sum()), int((~positive).sum())) >= MIN_HELD_OUT,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=seed,
    )
    with warnings.catch_warnings():  # stopping at MAX_EPOCHS is the recipe, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, positive)
    w1, w2 = model.coefs_
    b1, b2 = model.intercepts_
    return w1.astype(np.float32), b1.astype(np.float32), w2[:, 0].astype(np.float32), float(b2[0])


def fit(x: F32, y: F32, *, members: int, hidden: int, l2: float, seed: int) -> Members:
    """The ensemble: ``members`` MLPs from seeds ``seed``, ``seed + 1``, ...; inputs standardised
    here so that the artifact carries the mean and scale the verifier applies. A column constant
    in training keeps scale 1 (``StandardScaler``'s rule), so that an unseen value of it cannot
    blow up the logits."""
    scaler = StandardScaler().fit(x)
    mean, std = scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)
    z = ((x - mean) / std).astype(np.float32)
    parts = [_member(z, y, hidden=hidden, l2=l2, seed=seed + k) for k in range(members)]
    return Members(
        mean,
        std,
        np.stack([p[0] for p in parts]),
        np.stack([p[1] for p in parts]),
        np.stack([p[2] for p in parts]),
        np.array([p[3] for p in parts], np.float32),
    )


def choose_cutoff(
    prob: F32, labels: npt.NDArray[np.bool_], eligible: npt.NDArray[np.bool_], min_recall: float
) -> tuple[float, float, float]:
    """(cutoff, precision, recall): the most precise cutoff keeping recall ≥ ``min_recall``."""
    positives = max(1, int(labels.sum()))
    best = (0.5, 0.0, 0.0)
    for cutoff in np.round(np.arange(0.30, 0.99, 0.005), 3):
        hit = eligible & (prob >= cutoff)
        if not hit.any():
            break
        tp = int((hit & labels).sum())
        precision, recall = tp / int(hit.sum()), tp / positives
        if recall >= min_recall and precision > best[1]:
            best = (float(cutoff), precision, recall)
    return best


def train(
    pairs: Sequence[Pair],
    stored: F32,
    query: F32,
    *,
    embedder: dict[str, Any],
    threshold: float,
    members: int = 8,
    hidden: int = 32,
    l2: float = 0.015,
    folds: int = 5,
    min_recall: float = 0.64,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[Members, F32, dict[str, Any]]:
    """Train on ``pairs`` (with their stored-side and query-side unit vectors); returns the
    ensemble, the IDF table and the artifact's metadata."""
    started = time.perf_counter()
    pieces = WordPieces.load(model=str(embedder["model"]))
    idf = pieces.document_frequency_idf(list({t for p in pairs for t in (p.stored, p.query)}))
    pieces = pieces.with_idf(idf)
    x = features(pieces, pairs, stored, query)
    y = np.array([p.label for p in pairs], np.float32)
    labels = y > 0
    cosine = np.einsum("ij,ij->i", stored, query)
    rules = np.array([guard.check(p.query, p.stored).ok for p in pairs])
    eligible = (cosine >= threshold) & rules
    log(f"features {x.shape} in {time.perf_counter() - started:.0f} s")
    cross: dict[str, Any] = {}
    cutoff = 0.5
    if folds > 1:
        out_of_fold = np.zeros(len(pairs), np.float32)
        fold = np.arange(len(pairs)) % folds
        for k in range(folds):
            part = fold != k
            model = fit(x[part], y[part], members=members, hidden=hidden, l2=l2, seed=seed)
            out_of_fold[fold == k] = model.probability(x[fold == k])
            log(f"fold {k + 1}/{folds} done ({time.perf_counter() - started:.0f} s)")
        cutoff, precision, recall = choose_cutoff(out_of_fold, labels, eligible, min_recall)
        cross = {"folds": folds, "precision": round(precision, 4), "recall": round(recall, 4)}
        log(f"cross-validated: cutoff {cutoff}, precision {precision:.4f}, recall {recall:.4f}")
    model = fit(x, y, members=members, hidden=hidden, l2=l2, seed=seed)
    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.stored}\x00{p.query}\x00{int(p.label)}\n".encode())
    meta = {
        "features_version": FEATURES_VERSION,
        "cutoff": cutoff,
        "threshold": threshold,
        "embedder": embedder,
        "members": members,
        "hidden": hidden,
        "l2": l2,
        "seed": seed,
        "pairs": len(pairs),
        "pairs_sha256": digest.hexdigest(),
        "cross_validation": cross,
        "min_recall": min_recall,
    }
    return model, idf, meta


def save(path: Path, model: Members, idf: F32, meta: dict[str, Any]) -> None:
    """Write the artifact (float16 weights: well under 2 MB; inference is float32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        meta=np.array(json.dumps(meta, sort_keys=True)),
        mean=model.mean,
        std=model.std,
        w1=model.w1.astype(np.float16),
        b1=model.b1,
        w2=model.w2,
        b2=model.b2,
        idf=idf.astype(np.float16),
    )
    tmp.replace(path)
