"""The guard's verifier trained two ways, side by side: the hand-written numpy MLP ensemble (Adam by
hand) as it was at commit ``BASELINE`` (bench/router/baseline.py), and scikit-learn's
``MLPClassifier`` members as ``gateway/training/cache/train_guard.py`` has them now. Both run the
same recipe (``train_guard.train``: 8 members of 32 units, 5-fold cross-validated cutoff) on the
QQP development half; both are then scored on the test half, never trained on.

    .venv/bin/python bench/cache/guard_fits.py [--pairs ../shared/data/cache/qqp_pairs_dev.jsonl]

Reported per fit and ensemble seed (``--seeds 0,1,2``: the spread is the noise): wall time of
``train`` (5 folds and the final fit), the cross-validated precision/recall at the chosen cutoff
(dev), and on the test half the precision/recall of the verifier's decision among the pairs the
cache would otherwise hit (cosine >= 0.75 and the rules accept), plus the threshold-free average
precision there. The baseline is read from git, so the hand-written code need not stay in the
package to be measured. Vectors are cached in
.gateway/bench/guard-vectors (the first run embeds about 40k questions, a few minutes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import average_precision_score  # type: ignore[import-untyped]

from gateway.ml import guard
from gateway.ml.embedder import Embedder
from gateway.ml.verifier import WordPieces
from gateway.training.cache import evaluate, train_guard
from gateway.training.router.data import cached_embeddings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "router"))  # baseline.py
from baseline import arguments, module_at

THRESHOLD = 0.75
console = Console(highlight=False, width=120)


def main() -> None:
    parser = arguments(__doc__, "--pairs", Path("../shared/data/cache/qqp_pairs_dev.jsonl"))
    parser.add_argument("--seeds", default="0", help="ensemble seeds, comma-separated (noise)")
    args = parser.parse_args()

    rows = evaluate.load_pairs(args.pairs)
    dev, test = evaluate.split(rows, "dev"), evaluate.split(rows, "test")
    embedder = Embedder.load("all-MiniLM-L6-v2", threads=2)
    cache = Path(".gateway/bench/guard-vectors")

    def embed(texts: list[str]) -> np.ndarray:
        return cached_embeddings(embedder, texts, cache)

    dev_vectors = evaluate.pair_vectors(dev, embed)
    test_vectors = evaluate.pair_vectors(test, embed)
    labels = np.array([p.label for p in test])
    cosine = evaluate.pair_scores(test_vectors)
    eligible = (cosine >= THRESHOLD) & np.array([guard.check(p.query, p.stored).ok for p in test])
    pieces = WordPieces.load(model="all-MiniLM-L6-v2")
    console.print(f"{len(dev)} dev pairs, {len(test)} test pairs, {eligible.sum()} test eligible")

    table = Table(title=f"guard verifier: QQP, cosine >= {THRESHOLD} and the rules accept")
    for column in (
        "fit",
        "seed",
        "seconds",
        "cutoff",
        "CV precision",
        "CV recall",
        "test precision",
        "test recall",
        "test AP",
    ):
        table.add_column(column, justify="left" if column == "fit" else "right")
    modules = {
        f"hand-written ({args.baseline})": module_at(
            args.baseline, "gateway/training/cache/train_guard.py"
        ),
        "scikit-learn": train_guard,
    }
    runs = [(n, m, int(seed)) for seed in args.seeds.split(",") for n, m in modules.items()]
    for name, module, seed in runs:
        started = time.perf_counter()
        model, idf, meta = module.train(
            dev,
            *dev_vectors,
            embedder=embedder.signature,
            threshold=THRESHOLD,
            seed=seed,
            log=lambda _: None,
        )
        seconds = time.perf_counter() - started
        x = train_guard.features(pieces.with_idf(idf), test, *test_vectors)
        prob = model.probability(x)
        hit = eligible & (prob >= meta["cutoff"])
        true_hits = int((hit & labels).sum())
        cross = meta["cross_validation"]
        table.add_row(
            name,
            str(seed),
            f"{seconds:.0f}",
            f"{meta['cutoff']:.3f}",
            f"{cross['precision']:.4f}",
            f"{cross['recall']:.4f}",
            f"{true_hits / max(1, int(hit.sum())):.4f}",
            f"{true_hits / int(labels.sum()):.4f}",
            f"{average_precision_score(labels[eligible], prob[eligible]):.4f}",
        )
        console.print(f"{name}, seed {seed}: trained in {seconds:.0f} s")
    console.print(table)


if __name__ == "__main__":
    main()
