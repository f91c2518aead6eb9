"""Training the difficulty head (``gateway router train``): deterministic; needs the ``train``
extra (scikit-learn), which serving never imports.

The fitting is scikit-learn's (``LogisticRegression``, ``TfidfVectorizer``) rather than the
hand-written Newton / Newton-CG solvers and TF-IDF this module had before: on the same split
both give validation APGR MMLU 0.680, GSM8K 0.636 (difficulties within 1.3e-4 of each other)
and scikit-learn fits in 7.2 s against 8.1 s (``bench/router/fits.py``, RESULTS.md). The
artifact is unchanged: weights, intercepts, the term vocabulary and idf as arrays that
:mod:`gateway.ml.head` reads with numpy.

The label: ``needs_strong = strong_score > weak_score``, the event routing exists to catch.
The linear and terms parts model each model's correctness (two logistic regressions each)
rather than the label itself; see ``head.py`` for why and for the groups (choice, open).

Overfitting guards: L2 on every part, hyperparameters chosen once by 5-fold cross-validation
inside the training split (the validation split is never read here), and stackers fitted on
out-of-fold predictions only. The out-of-fold APGR per benchmark is kept in the artifact's
``meta["cross_validated_apgr"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.ml.classifier import FEATURE_NAMES, features_of_text
from gateway.ml.head import FORMAT, GROUPS, Head, dense_features, groups_of, id_hashes
from gateway.ml.terms import PROBLEM_FEATURES, terms
from gateway.training import MissingTrainExtra
from gateway.training.router.data import LabelledRow, id_hash

try:  # the `train` extra: scikit-learn fits here, the numpy head in gateway.ml serves
    from scipy import sparse as scipy_sparse  # type: ignore[import-untyped]
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
except ModuleNotFoundError as error:
    raise MissingTrainExtra(error) from error

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

# Chosen by 5-fold cross-validation on the training split (bench/router/RESULTS.md).
# open (chat): cross-validated chat APGR 0.607 at 1, 0.604 at 3, 0.593 at 10, 0.566 at 30
LINEAR_L2 = {"choice": 10.0, "problem": 10.0, "open": 1.0}
FEATURE_WEIGHT = 0.3  # standardized features enter at this scale beside the unit embedding
TERMS_L2 = 1.0  # scikit-learn's C = 1
TERMS_MIN_ROWS = 2  # a term must occur in this many training rows to be kept
STACK_L2 = 1.0
# the terms part helps neither word problems nor chat (chat CV 0.55-0.57 alone, no gain mixed)
STACK_PARTS = {"choice": (0, 1), "problem": (0,), "open": (0,)}
# The word-problem features help the problem group (GSM8K 0.57-0.59 against 0.52-0.56 without)
# and cost the choice group (MMLU 0.670-0.682 against 0.684-0.689): it reads the first five.
GROUP_FEATURES = {
    "choice": len(FEATURE_NAMES),
    "problem": len(FEATURE_NAMES) + len(PROBLEM_FEATURES),
    "open": len(FEATURE_NAMES),
}
FOLDS = 5


def logistic_fit(x: npt.ArrayLike, y: npt.ArrayLike, l2: float) -> tuple[F64, float]:
    """L2-regularized logistic regression, the intercept unpenalized: scikit-learn's
    ``LogisticRegression`` with ``C = 1 / l2`` (its objective is ``C`` times the summed loss plus
    half the squared weights). Dense inputs take ``newton-cholesky`` (exact, as the Newton
    iteration it replaced); sparse ones (the terms part, ~50k columns) ``newton-cg`` (the
    Hessian is never formed). Returns (weights, intercept), the arrays the numpy head reads."""
    sparse = hasattr(x, "tocsr")  # a scipy matrix: the terms part
    data: Any = x if sparse else np.asarray(x, np.float64)
    target = np.asarray(y, np.float64)
    if len(np.unique(target > 0.5)) < 2:  # one class (a tiny group): no weights, a smoothed rate
        rate = (target.sum() + 0.5) / (len(target) + 1.0)
        return np.zeros(data.shape[1]), float(np.log(rate / (1.0 - rate)))
    model = LogisticRegression(
        C=1.0 / l2, solver="newton-cg" if sparse else "newton-cholesky", tol=1e-6, max_iter=200
    )
    model.fit(*_soft(data, target, sparse))
    return np.asarray(model.coef_[0], np.float64), float(model.intercept_[0])


def _soft(data: Any, target: F64, sparse: bool) -> tuple[Any, F64, F64 | None]:
    """A fractional target ``p`` (a chat row's share of a tier's models that won) as two
    weighted rows, ``1`` with weight ``p`` and ``0`` with ``1 - p``: the same log-loss as the
    soft label, in the form scikit-learn fits. 0/1 targets pass unchanged, unweighted."""
    soft = np.flatnonzero((target > 0) & (target < 1))
    if not len(soft):
        return data, target, None
    rows = (scipy_sparse.vstack if sparse else np.vstack)([data, data[soft]])
    weights = np.r_[np.ones(len(target)), 1.0 - target[soft]]
    weights[soft] = target[soft]
    labels = np.r_[np.round(target), np.zeros(len(soft))]
    labels[soft] = 1.0
    return rows, labels, weights


def _sigmoid(x: F64) -> F64:
    out: F64 = 1.0 / (1.0 + np.exp(-x))
    return out


def _vectorizer() -> Any:
    """TF-IDF over the hashed terms of :func:`gateway.ml.terms.terms`, as the head computes it at
    serving time (:func:`gateway.ml.terms.tfidf_rows`): sublinear term frequency, smoothed idf
    ``ln((1 + n) / (1 + df)) + 1``, L2-normalized rows, terms seen in ``TERMS_MIN_ROWS`` rows."""
    return TfidfVectorizer(
        analyzer=_term_list, min_df=TERMS_MIN_ROWS, sublinear_tf=True, dtype=np.float64
    )


def _term_list(text: str) -> list[int]:
    out: list[int] = terms(text).tolist()
    return out


class _Terms:
    """The terms part fitted on some rows: vocabulary (sorted term hashes), idf, a logistic
    pair."""

    def __init__(self, texts: Sequence[str], weak: F64, strong: F64) -> None:
        if not texts:  # no choice rows: an empty part that adds nothing
            self.vocabulary, self.idf = np.empty(0, np.uint32), np.empty(0, np.float32)
            self.small = self.large = (np.zeros(0), 0.0)
            return
        self._tfidf = _vectorizer()
        x = self._tfidf.fit_transform(texts)
        self.vocabulary = np.asarray(self._tfidf.get_feature_names_out(), np.uint32)
        self.idf = np.asarray(self._tfidf.idf_, np.float32)
        self.small = logistic_fit(x, weak, TERMS_L2)
        self.large = logistic_fit(x, strong, TERMS_L2)

    def gain(self, texts: Sequence[str]) -> F64:
        x = self._tfidf.transform(texts)

        def p(model: tuple[F64, float]) -> F64:
            return _sigmoid(np.asarray(x @ model[0], np.float64) + model[1])

        return p(self.large) - p(self.small)


def _linear(
    z: F64, weak: F64, strong: F64, l2: float
) -> tuple[tuple[F64, float], tuple[F64, float]]:
    return logistic_fit(z, weak, l2), logistic_fit(z, strong, l2)


def _linear_gain(z: F64, small: tuple[F64, float], large: tuple[F64, float]) -> F64:
    return _sigmoid(z @ large[0] + large[1]) - _sigmoid(z @ small[0] + small[1])


def prompt_dense(texts: Sequence[str]) -> F32:
    """The dense features the head reads for these prompts."""
    if not texts:
        return np.empty((0, len(FEATURE_NAMES) + len(PROBLEM_FEATURES)), np.float32)
    return dense_features(np.stack([features_of_text(t).vector() for t in texts]), texts)


def fit(
    rows: Sequence[LabelledRow],
    vectors: F32,
    embedder: Mapping[str, Any],
    *,
    dense: F32 | None = None,
    progress: bool = False,
) -> Head:
    """Train a head on labelled rows and their embeddings (unit rows). ``dense``: the rows'
    ``dense_features`` when they cannot be computed from a prompt (labels from the gateway's
    traffic keep features, never text; such rows have an empty ``prompt``)."""
    if len(rows) < FOLDS * 10:
        raise ValueError(f"too few rows to train on: {len(rows)}")
    x = np.asarray(vectors, np.float64)
    texts = [r.prompt for r in rows]
    dense = np.asarray(prompt_dense(texts) if dense is None else dense, np.float64)
    group = groups_of(dense[:, : len(FEATURE_NAMES)])
    # each column standardized over the rows of the groups that read it
    mean, std = np.zeros(dense.shape[1]), np.ones(dense.shape[1])
    for g, name in enumerate(GROUPS):
        m = group == g if g else np.ones(len(rows), bool)
        if m.sum() >= 2:
            cols = slice(0 if g == 0 else len(FEATURE_NAMES), GROUP_FEATURES[name])
            mean[cols] = dense[m, cols].mean(axis=0)
            std[cols] = dense[m, cols].std(axis=0)
    std = np.maximum(std, 1e-6) / FEATURE_WEIGHT
    z = np.hstack([x, (dense - mean) / std])
    dim = x.shape[1]
    # per group, the features it does not read are zero, so their weights come out zero
    zs = []
    for name in GROUPS:
        zg = z.copy()
        zg[:, dim + GROUP_FEATURES[name] :] = 0.0
        zs.append(zg)
    # scores in [0, 1]: 0/1 for the benchmarks, a tier's share of wins for chat rows
    weak = np.clip([r.weak_score for r in rows], 0.0, 1.0)
    strong = np.clip([r.strong_score for r in rows], 0.0, 1.0)
    needs = np.clip(strong - weak, 0.0, 1.0)
    fold = np.array([id_hash(f"fold:{r.id}") % FOLDS for r in rows])
    features = z.shape[1] - dim
    choice = group == 0
    uses_terms = bool(choice.sum() >= FOLDS * 10)

    linear_w = np.zeros((len(GROUPS), dim + features, 2), np.float32)
    linear_b = np.zeros((len(GROUPS), 2), np.float32)
    stack_w = np.zeros((len(GROUPS), 2), np.float32)
    stack_b = np.zeros(len(GROUPS), np.float32)
    parts = np.zeros((len(rows), 2), np.float64)  # out of fold
    with _steps(progress, FOLDS + 2) as advance:
        for k in range(FOLDS):
            train, held = fold != k, fold == k
            for g in range(len(GROUPS)):
                tr, te = train & (group == g), held & (group == g)
                if tr.sum() >= 10 and te.any():
                    small, large = _linear(zs[g][tr], weak[tr], strong[tr], LINEAR_L2[GROUPS[g]])
                    parts[te, 0] = _linear_gain(zs[g][te], small, large)
            if uses_terms:
                tr, te = np.flatnonzero(train & choice), np.flatnonzero(held & choice)
                fitted = _Terms([texts[i] for i in tr], weak[tr], strong[tr])
                parts[te, 1] = fitted.gain([texts[i] for i in te])
            advance()
        for g, name in enumerate(GROUPS):
            m = group == g
            if m.sum() < 10:
                continue  # no such rows: the group keeps a zero head (difficulty 0.5)
            small, large = _linear(zs[g][m], weak[m], strong[m], LINEAR_L2[name])
            linear_w[g] = np.stack([small[0], large[0]], axis=1)
            linear_b[g] = (small[1], large[1])
            used = [p for p in STACK_PARTS[name] if p == 0 or uses_terms]
            w, b = logistic_fit(parts[m][:, used], needs[m], STACK_L2)
            stack_w[g, used], stack_b[g] = w, b
        advance()
        chosen = np.flatnonzero(choice) if uses_terms else np.empty(0, np.int64)
        whole = _Terms([texts[i] for i in chosen], weak[chosen], strong[chosen])
        advance()

    oof = (parts * stack_w[group]).sum(axis=1) + stack_b[group]
    meta = {
        "format": FORMAT,
        "embedder": dict(embedder),
        "features": [*FEATURE_NAMES, *PROBLEM_FEATURES],
        "groups": list(GROUPS),
        "label": "needs_strong = strong_score > weak_score",
        "linear_l2": LINEAR_L2,
        "feature_weight": FEATURE_WEIGHT,
        "group_features": GROUP_FEATURES,
        "terms": {"l2": TERMS_L2, "min_rows": TERMS_MIN_ROWS, "size": len(whole.vocabulary)},
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(rows),
        "rows_per_group": {name: int((group == g).sum()) for g, name in enumerate(GROUPS)},
        "cross_validated_apgr": {
            "linear": _apgr_by_benchmark(rows, parts[:, 0]),
            "terms": _apgr_by_benchmark(rows, parts[:, 1]),
            "stacked": _apgr_by_benchmark(rows, oof),
        },
    }
    return Head(
        meta=meta,
        feature_mean=mean.astype(np.float32),
        feature_std=std.astype(np.float32),
        linear_w=linear_w,
        linear_b=linear_b,
        vocabulary=whole.vocabulary,
        idf=whole.idf,
        terms_w=np.stack([whole.small[0], whole.large[0]], axis=1).astype(np.float32),
        terms_b=np.array([whole.small[1], whole.large[1]], np.float32),
        stack_w=stack_w,
        stack_b=stack_b,
        train_ids=id_hashes([r.id for r in rows]),
    )


def _apgr_by_benchmark(rows: Sequence[LabelledRow], score: F64) -> dict[str, float]:
    from gateway.training.router import metrics

    out = {}
    for name in sorted({r.benchmark for r in rows}):
        m = np.array([r.benchmark == name for r in rows])
        weak = [r.weak_score for r in rows if r.benchmark == name]
        strong = [r.strong_score for r in rows if r.benchmark == name]
        out[name] = round(metrics.report(score[m], weak, strong).apgr, 4)
    return out


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
