"""Sweep hit policies over saved cross-encoder scores (bench/cache/cross_scores.py).

A pair is a hit iff cosine ≥ threshold AND (the rules pass and the cross-encoder says ≥ cutoff,
OR only an ``--soft`` rule vetoed and the cross-encoder says ≥ override). The cutoff is chosen
on the held-out QQP-dev slice only; test and paraphrase figures are printed beside it.

    python bench/cache/cross_policy.py .gateway/bench/cross/l6 --threshold 0.70
"""

from __future__ import annotations

import argparse

import numpy as np


def load(prefix: str, name: str) -> dict[str, np.ndarray]:
    with np.load(f"{prefix}-{name}.scores.npz") as data:
        return {k: data[k] for k in data.files}


def hits(s: dict[str, np.ndarray], t: float, c: float, soft: set[str], over: float) -> np.ndarray:
    rules_ok = s["reasons"] == ""
    softened = np.isin(s["reasons"], sorted(soft)) if soft else np.zeros_like(rules_ok)
    return (s["cos"] >= t) & ((rules_ok & (s["scores"] >= c)) | (softened & (s["scores"] >= over)))


def pr(s: dict[str, np.ndarray], hit: np.ndarray) -> tuple[float, float]:
    labels = s["labels"].astype(bool)
    n = int(hit.sum())
    return (
        float((hit & labels).sum() / n) if n else 1.0,
        float((hit & labels).sum() / labels.sum()),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("--threshold", type=float, default=0.75)
    parser.add_argument(
        "--soft", default="", help="comma-separated rule reasons the model may override"
    )
    parser.add_argument("--override", type=float, default=0.99)
    args = parser.parse_args()
    soft = {r for r in args.soft.split(",") if r}
    sets = {n: load(args.prefix, n) for n in ("heldout", "qqp_test", "paraphrases")}
    print(f"threshold {args.threshold} soft {sorted(soft)} override {args.override}")
    print("cutoff | heldout P R | test P R | paraphrase P R")
    for c in [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]:
        row = [pr(s, hits(s, args.threshold, c, soft, args.override)) for s in sets.values()]
        print(f"{c:.2f} | " + " | ".join(f"{p:.3f} {r:.3f}" for p, r in row))


if __name__ == "__main__":
    main()
