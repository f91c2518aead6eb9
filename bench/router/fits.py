"""The router head fitted two ways, side by side: the hand-written numpy fitting (Newton for the
dense logistic regressions, Newton-CG for the sparse terms part, a hand-built TF-IDF) as it was
at commit ``BASELINE`` (bench/router/baseline.py), and scikit-learn's (``LogisticRegression``,
``TfidfVectorizer``) as ``gateway/training/router/train.py`` has it now. Same rows, same
embeddings, same split; the figures behind the choice recorded in bench/router/RESULTS.md.

    .venv/bin/python bench/router/fits.py [--data ../shared/data/routing/routellm_train.jsonl]

The baseline is read from git (``git show BASELINE:gateway/training/router/train.py``), so the
hand-written code need not stay in the package to be measured. Embeddings come from
.gateway/router-cache (the first run embeds 7,732 prompts, about 2 minutes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from gateway.ml.classifier import features_of_text
from gateway.ml.embedder import Embedder
from gateway.training.router import train
from gateway.training.router.data import cached_embeddings, load_labelled, split
from gateway.training.router.evaluate import evaluate_rows

sys.path.insert(0, str(Path(__file__).resolve().parent))  # baseline.py
from baseline import arguments, module_at

console = Console(highlight=False, width=120)


def main() -> None:
    parser = arguments(__doc__, "--data", Path("../shared/data/routing/routellm_train.jsonl"))
    args = parser.parse_args()

    rows = load_labelled(args.data)
    train_rows, held = split(rows)
    embedder = Embedder.load("all-MiniLM-L6-v2", max_seq_length=128, threads=0)
    vectors = cached_embeddings(embedder, [r.prompt for r in rows], Path(".gateway/router-cache"))
    index = {r.id: i for i, r in enumerate(rows)}
    train_vectors = vectors[[index[r.id] for r in train_rows]]
    held_vectors = vectors[[index[r.id] for r in held]]
    console.print(f"{len(train_rows)} training rows, {len(held)} validation rows")

    fits: dict[str, Any] = {
        f"hand-written ({args.baseline})": module_at(
            args.baseline, "gateway/training/router/train.py"
        ).fit,
        "scikit-learn": train.fit,
    }
    heads, seconds = {}, {}
    for name, fit in fits.items():
        started = time.perf_counter()
        heads[name] = fit(train_rows, train_vectors, embedder.signature)
        seconds[name] = time.perf_counter() - started
        console.print(f"{name}: fitted in {seconds[name]:.1f} s")

    table = Table(title="router head: validation split (and 5-fold CV inside training)")
    for column in ("fit", "seconds", "terms", "benchmark", "val APGR", "strong @95%", "CV APGR"):
        table.add_column(column, justify="left" if column in ("fit", "benchmark") else "right")
    for name, head in heads.items():
        results = evaluate_rows(head, held, held_vectors)
        cross = head.meta["cross_validated_apgr"]["stacked"]
        for k, benchmark in enumerate(("mmlu", "gsm8k", "all")):
            report = results[benchmark][0]
            table.add_row(
                name if k == 0 else "",
                f"{seconds[name]:.1f}" if k == 0 else "",
                str(head.meta["terms"]["size"]) if k == 0 else "",
                benchmark,
                f"{report.apgr:.4f}",
                f"{report.share95:.1%}",
                f"{cross[benchmark]:.4f}" if benchmark in cross else "",
                end_section=k == 2,
            )
    console.print(table)
    features = np.stack([features_of_text(r.prompt).vector() for r in held])
    texts = [r.prompt for r in held]
    scores = [h.difficulty(held_vectors, features, texts) for h in heads.values()]
    console.print(
        f"validation difficulty, hand-written vs scikit-learn: max |difference| "
        f"{np.abs(scores[0] - scores[1]).max():.2e}, correlation "
        f"{np.corrcoef(scores[0], scores[1])[0, 1]:.6f}"
    )


if __name__ == "__main__":
    main()
