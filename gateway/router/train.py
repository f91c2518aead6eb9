"""Training the difficulty head (``gateway router train``): numpy only, deterministic.

The label: ``needs_strong = strong_score > weak_score``, the event routing exists to catch.
The neighbour vote uses the signed outcome ``strong - weak`` instead, because a prompt the
small model gets right and the large one wrong (5-7% of rows) is evidence *against* sending
its neighbours to the large model, which a 0/1 label would call neutral.

The linear part models each model's correctness (two logistic regressions) rather than the
label itself; see ``head.py`` for why.

Overfitting guards: strong L2 on the linear part, hyperparameters chosen once by 5-fold
cross-validation inside the training split (the validation split is never read here), and a
stacker fitted on out-of-fold predictions only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.classify import FEATURE_NAMES, features_of_text
from gateway.router.data import LabelledRow, id_hash
from gateway.router.head import FORMAT, Head, id_hashes

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Chosen by 5-fold cross-validation on the training split (bench/router/RESULTS.md).
LINEAR_L2 = 10.0
KNN_DIMS = 64  # 128 cross-validates the same (MMLU 0.690 vs 0.688) at twice the lookup time
KNN_K = 100
STACK_L2 = 1.0
FOLDS = 5


def logistic_fit(
    x: npt.ArrayLike, y: npt.ArrayLike, l2: float, *, iterations: int = 50
) -> tuple[F64, float]:
    """L2-regularized logistic regression (the intercept unpenalized) by Newton's method;
    exact and deterministic for the few hundred features here."""
    a = np.hstack([np.asarray(x, np.float64), np.ones((len(np.asarray(y)), 1))])
    target = np.asarray(y, np.float64)
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    beta = np.zeros(a.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a @ beta)))
        gradient = a.T @ (p - target) + penalty * beta
        hessian = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return beta[:-1], float(beta[-1])


def pca(x: F32, dims: int) -> F32:
    """(dim, dims) projection onto the top principal directions (uncentred: the embeddings
    are compared by cosine, which centring would change)."""
    _, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    return vt[:dims].T.astype(np.float32)


def _unit(x: F32) -> F32:
    unit: F32 = (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return unit


def neighbour_vote(query: F32, keys: F32, values: F32, k: int) -> F32:
    """Mean of ``values`` over the ``k`` most similar ``keys`` (unit rows)."""
    out = np.empty(len(query), np.float32)
    k = min(k, len(keys))
    for start in range(0, len(query), 512):
        sims = query[start : start + 512] @ keys.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start : start + 512] = values[top].mean(axis=1)
    return out


def _gain(z: F32, wt: tuple[F64, float], ws: tuple[F64, float]) -> F64:
    """Expected gain of the large model: P(large correct) - P(small correct)."""
    small = 1.0 / (1.0 + np.exp(-(z @ wt[0] + wt[1])))
    large = 1.0 / (1.0 + np.exp(-(z @ ws[0] + ws[1])))
    out: F64 = large - small
    return out


def fit(
    rows: Sequence[LabelledRow],
    vectors: F32,
    embedder: Mapping[str, Any],
    *,
    progress: bool = False,
) -> Head:
    """Train a head on labelled rows and their embeddings (unit rows)."""
    if len(rows) < FOLDS * 10:
        raise ValueError(f"too few rows to train on: {len(rows)}")
    x = np.asarray(vectors, np.float32)
    features = np.stack([features_of_text(r.prompt).vector() for r in rows])
    mean = features.mean(axis=0).astype(np.float32)
    std = np.maximum(features.std(axis=0), 1e-6).astype(np.float32)
    z = np.hstack([x, (features - mean) / std])
    needs = np.array([r.needs_strong for r in rows], np.float64)
    weak = np.array([r.weak_score > 0.5 for r in rows], np.float64)
    strong = np.array([r.strong_score > 0.5 for r in rows], np.float64)
    gain = np.array([r.strong_score - r.weak_score for r in rows], np.float32)
    fold = np.array([id_hash(f"fold:{r.id}") % FOLDS for r in rows])
    projection = pca(x, min(KNN_DIMS, x.shape[1]))
    keys = _unit(x @ projection)

    steps = FOLDS + 2
    with _steps(progress, steps) as advance:
        # out-of-fold parts, for the stacker
        parts = np.zeros((len(rows), 2), np.float64)
        for k in range(FOLDS):
            train, held = fold != k, fold == k
            small = logistic_fit(z[train], weak[train], LINEAR_L2)
            large = logistic_fit(z[train], strong[train], LINEAR_L2)
            parts[held, 0] = _gain(z[held], small, large)
            parts[held, 1] = neighbour_vote(keys[held], keys[train], gain[train], KNN_K)
            advance()
        stack_w, stack_b = logistic_fit(parts, needs, STACK_L2)
        advance()
        small = logistic_fit(z, weak, LINEAR_L2)
        large = logistic_fit(z, strong, LINEAR_L2)
        advance()

    def oof_apgr(column: int) -> dict[str, float]:
        from gateway.router import metrics

        out = {}
        for name in sorted({r.benchmark for r in rows}):
            m = np.array([r.benchmark == name for r in rows])
            weak = [r.weak_score for r in rows if r.benchmark == name]
            strong = [r.strong_score for r in rows if r.benchmark == name]
            score = parts[m, column] if column >= 0 else parts[m] @ stack_w
            out[name] = round(metrics.report(score, weak, strong).apgr, 4)
        return out

    meta = {
        "format": FORMAT,
        "embedder": dict(embedder),
        "features": list(FEATURE_NAMES),
        "label": "needs_strong = strong_score > weak_score",
        "knn": {"k": KNN_K, "dims": int(projection.shape[1])},
        "linear_l2": LINEAR_L2,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(rows),
        "cross_validated_apgr": {
            "linear": oof_apgr(0),
            "neighbours": oof_apgr(1),
            "stacked": oof_apgr(-1),
        },
    }
    return Head(
        meta=meta,
        feature_mean=mean,
        feature_std=std,
        linear_w=np.stack([small[0], large[0]], axis=1).astype(np.float32),
        linear_b=np.array([small[1], large[1]], np.float32),
        knn_projection=projection,
        knn_keys=keys.astype(np.float16),
        knn_values=gain.astype(np.float16),
        stack_w=stack_w.astype(np.float32),
        stack_b=stack_b,
        train_ids=id_hashes([r.id for r in rows]),
    )


class _steps:
    """A rich progress bar over the training steps (or nothing)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._bar.__enter__()
        task = self._bar.add_task("training", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
