"""How ``cache.semantic.strictness`` was chosen, and what each setting measures, in one run.

    . .venv/bin/activate && python bench/cache/strictness.py [--out bench/results/strictness.json]

1. QQP development half (even rows, the verifier's training data): out-of-fold probabilities of
   the verifier's recipe (5 folds, ``gateway.training.cache.train_guard``), the hard vetoes
   (rules and opposite meanings) and the cosine. Over a grid of (cosine threshold, verifier
   cutoff), ``strict`` is the most precise point whose recall stays ≥ ``--min-recall`` (0.40,
   the recall floor the issue sets for the test half).
2. With the committed verifier, each setting of ``gateway.semantic.STRICTNESS`` on the QQP test
   half (odd rows, read only here and by quality.py), the GPTCache paraphrases (999 positives
   and 999 rotated negatives) and the held-out opposite pairs
   (bench/cache/data/opposites_heldout.jsonl, written before the opposite check was designed):
   precision, recall, hits; and the same without the opposite check, to show what it adds.

Vectors: bench/cache/vectors.py (all-MiniLM-L6-v2, embedded once and cached on disk).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cache.vectors import VectorStore  # noqa: E402
from gateway.ml import guard, rules  # noqa: E402
from gateway.ml.verifier import Verifier, WordPieces  # noqa: E402
from gateway.semantic import STRICTNESS  # noqa: E402
from gateway.training.cache import evaluate, train_guard  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"
HELD_OUT = ROOT / "bench" / "cache" / "data" / "opposites_heldout.jsonl"
THRESHOLDS = np.round(np.arange(0.70, 0.96, 0.01), 3)
CUTOFFS = np.round(np.arange(0.40, 0.90, 0.01), 3)
Bools = npt.NDArray[np.bool_]
F32 = npt.NDArray[np.float32]


def held_out() -> list[dict[str, str]]:
    return [json.loads(line) for line in HELD_OUT.read_text().splitlines() if line.strip()]


def held_out_pairs() -> list[evaluate.Pair]:
    """The held-out opposite pairs: every one is a different question (label False)."""
    return [evaluate.Pair(r["stored"], r["query"], False) for r in held_out()]


def signals(
    pairs: list[evaluate.Pair], store: VectorStore, verifier: Verifier | None
) -> dict[str, Any]:
    """Cosine, the rules' and the opposite check's vetoes, and (with a verifier) its
    probability, per pair."""
    stored, query = store.get([p.stored for p in pairs]), store.get([p.query for p in pairs])
    cosine = np.einsum("ij,ij->i", stored, query).astype(np.float32)
    rules_ok = np.array([rules.check_rules(p.query, p.stored).ok for p in pairs])
    hard_ok = np.array([guard.check_rules(p.query, p.stored).ok for p in pairs])
    probability = np.zeros(len(pairs), np.float32)
    if verifier is not None:
        for i, p in enumerate(pairs):
            if cosine[i] >= THRESHOLDS[0] and rules_ok[i]:
                probability[i] = verifier.probability(p.query, p.stored, query[i], stored[i])
    return {
        "labels": np.array([p.label for p in pairs]),
        "cosine": cosine,
        "rules_ok": rules_ok,
        "hard_ok": hard_ok,
        "probability": probability,
        "stored": stored,
        "query": query,
    }


def out_of_fold(pairs: list[evaluate.Pair], s: dict[str, Any], folds: int = 5) -> F32:
    """The verifier recipe's out-of-fold probabilities on its own training pairs."""
    pieces = WordPieces.load()
    texts = list({t for p in pairs for t in (p.stored, p.query)})
    pieces = pieces.with_idf(pieces.document_frequency_idf(texts))
    x = train_guard.features(pieces, pairs, s["stored"], s["query"])
    y = s["labels"].astype(np.float32)
    fold = np.arange(len(pairs)) % folds
    result = np.zeros(len(pairs), np.float32)
    for k in range(folds):
        model = train_guard.fit(x[fold != k], y[fold != k], members=8, hidden=32, l2=0.015, seed=0)
        result[fold == k] = model.probability(x[fold == k])
        print(f"fold {k + 1}/{folds}", file=sys.stderr)
    return result


def point(labels: Bools, hit: Bools) -> dict[str, float | int]:
    hits, true = int(hit.sum()), int((hit & labels).sum())
    positives = max(1, int(labels.sum()))
    return {
        "precision": round(true / hits, 4) if hits else 1.0,
        "recall": round(true / positives, 4),
        "hits": hits,
        "wrong_hits": hits - true,
    }


def hits(s: dict[str, Any], threshold: float, cutoff: float, opposites: bool = True) -> Bools:
    ok = s["hard_ok"] if opposites else s["rules_ok"]
    return (s["cosine"] >= threshold) & ok & (s["probability"] >= cutoff)  # type: ignore[no-any-return]


def choose(s: dict[str, Any], min_recall: float) -> dict[str, Any]:
    """The most precise (threshold, cutoff) on ``s`` with recall ≥ ``min_recall``."""
    best: dict[str, Any] = {"precision": 0.0}
    for t in THRESHOLDS:
        for c in CUTOFFS:
            p = point(s["labels"], hits(s, float(t), float(c)))
            if p["recall"] >= min_recall and p["precision"] > best["precision"]:
                best = {"threshold": float(t), "cutoff": float(c), **p}
    return best


def by_kind(store: VectorStore, verifier: Verifier | None) -> dict[str, dict[str, int]]:
    """Held-out opposite pairs answered from the cache, per kind of opposite and setting, with
    and without the opposite check."""
    rows = held_out()
    s = signals(held_out_pairs(), store, verifier)
    table: dict[str, dict[str, int]] = {}
    print("\n## held-out opposites by kind (hits; without the opposite check in brackets)\n")
    print("| kind | pairs | " + " | ".join(STRICTNESS) + " |")
    print("|---|---|" + "---|" * len(STRICTNESS))
    for kind in sorted({r["kind"] for r in rows}):
        mine = np.array([r["kind"] == kind for r in rows])
        table[kind] = {"pairs": int(mine.sum())}
        cells = []
        for setting, op in STRICTNESS.items():
            with_check = int((hits(s, op.threshold, op.cutoff) & mine).sum())
            without = int((hits(s, op.threshold, op.cutoff, opposites=False) & mine).sum())
            table[kind][setting] = with_check
            table[kind][f"{setting}_without_opposite_check"] = without
            cells.append(f"{with_check} ({without})")
        print(f"| {kind} | {int(mine.sum())} | " + " | ".join(cells) + " |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "strictness.json")
    parser.add_argument("--min-recall", type=float, default=0.40)
    args = parser.parse_args()
    store = VectorStore()
    qqp = evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl")
    dev_pairs = evaluate.split(qqp, "dev")
    dev = signals(dev_pairs, store, None)
    dev["probability"] = out_of_fold(dev_pairs, dev)
    for floor in (0.38, 0.40, 0.42, 0.45, 0.50, 0.55, 0.60):
        print(f"dev (out-of-fold), best precision at recall >= {floor:.2f}: {choose(dev, floor)}")
    chosen = choose(dev, args.min_recall)
    print(f"chosen (recall >= {args.min_recall}): {chosen}")
    verifier = guard.default_guard().verifier
    sets = {
        "qqp_test": evaluate.split(qqp, "test"),
        "paraphrases": evaluate.load_pairs(DATA / "gptcache_mock_paraphrases.jsonl"),
        "opposites_held_out": held_out_pairs(),
    }
    report: dict[str, Any] = {"chosen_on_dev": chosen, "sets": {}}
    for name, pairs in sets.items():
        s = signals(pairs, store, verifier)
        rows = {}
        for setting, op in STRICTNESS.items():
            rows[setting] = point(s["labels"], hits(s, op.threshold, op.cutoff))
            rows[f"{setting}, no opposite check"] = point(
                s["labels"], hits(s, op.threshold, op.cutoff, opposites=False)
            )
        rows["dev-chosen point"] = point(
            s["labels"], hits(s, chosen["threshold"], chosen["cutoff"])
        )
        report["sets"][name] = rows
        print(f"\n## {name}: {len(pairs)} pairs, {int(s['labels'].sum())} positive\n")
        print("| setting | precision | recall | hits | wrong hits |")
        print("|---|---|---|---|---|")
        for setting, r in rows.items():
            print(
                f"| {setting} | {r['precision']:.3f} | {r['recall']:.3f} | {r['hits']} | "
                f"{r['wrong_hits']} |"
            )
    report["held_out_by_kind"] = by_kind(store, verifier)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
