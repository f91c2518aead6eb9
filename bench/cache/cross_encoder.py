"""Experiment: a cross-encoder verifier fine-tuned from all-MiniLM-L6-v2 on QQP-dev (CPU).

    . .venv/bin/activate && python bench/cache/cross_encoder.py --train-layers 6 --tag l6

Train on the even (dev) rows of qqp_pairs_dev.jsonl except every 10th of them, which is the
held-out slice for early stopping and for the cutoff; the odd (test) rows and the GPTCache
paraphrases are only scored, after the cutoff is fixed. Candidates are the pairs the cache would
hand to the verifier: cosine ≥ the default threshold and the hand-written rules passed. Writes
the delta artifact and a JSON report to ``.gateway/bench/cross/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cache import cross_train as train_cross  # noqa: E402
from bench.cache.vectors import VectorStore  # noqa: E402
from gateway.ml import guard  # noqa: E402
from gateway.ml.embedder import resolve_model  # noqa: E402
from gateway.semantic import STRICTNESS  # noqa: E402
from gateway.training.cache import evaluate  # noqa: E402

THRESHOLD = STRICTNESS["balanced"].threshold
"""The threshold of the previous default (balanced), where these experiments were run."""

DATA = ROOT.parent / "shared" / "data" / "cache"


def candidates(store: VectorStore, pairs: list[evaluate.Pair], threshold: float) -> np.ndarray:
    u, v = store.get([p.stored for p in pairs]), store.get([p.query for p in pairs])
    cos = np.einsum("ij,ij->i", u, v)
    return np.array(
        [
            c >= threshold and guard.check_rules(p.query, p.stored).ok
            for p, c in zip(pairs, cos, strict=True)
        ]
    )


def at_cutoffs(
    labels: np.ndarray, cand: np.ndarray, scores: np.ndarray, cuts: list[float]
) -> list[dict[str, float]]:
    out = []
    positives = max(1, int(labels.sum()))
    for c in cuts:
        hit = cand & (scores >= c)
        tp = int((hit & labels).sum())
        n = int(hit.sum())
        out.append(
            {"cutoff": c, "precision": tp / n if n else 1.0, "recall": tp / positives, "hits": n}
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-layers", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=25 * 60)
    parser.add_argument("--tag", default="run")
    args = parser.parse_args()
    out_dir = ROOT / ".gateway" / "bench" / "cross"
    out_dir.mkdir(parents=True, exist_ok=True)
    store = VectorStore()
    qqp = evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl")
    dev = evaluate.split(qqp, "dev")
    heldout = dev[::10]
    train_rows = [p for i, p in enumerate(dev) if i % 10]
    held_cand = candidates(store, heldout, THRESHOLD)
    model_dir = resolve_model("all-MiniLM-L6-v2")
    model, tokenizer, meta = train_cross.train(
        model_dir,
        train_rows,
        heldout,
        held_cand,
        max_length=args.max_length,
        train_layers=args.train_layers,
        epochs=args.epochs,
        lr=args.lr,
        threads=args.threads,
        budget_s=args.budget_s,
    )
    train_cross.save_delta(out_dir / f"{args.tag}.npz", model, meta["trainable"], meta)
    # Cutoff from the held-out slice only.
    held_labels = np.array([p.label for p in heldout])
    held_scores = train_cross.predict(model, tokenizer, [(p.query, p.stored) for p in heldout])
    cuts = [round(float(c), 3) for c in np.arange(0.05, 0.996, 0.025)]
    report: dict[str, object] = {"meta": meta, "args": vars(args), "sets": {}}
    report["sets"]["heldout"] = at_cutoffs(held_labels, held_cand, held_scores, cuts)  # type: ignore[index]
    sets = {
        "qqp_test": evaluate.split(qqp, "test"),
        "paraphrases": evaluate.load_pairs(DATA / "gptcache_mock_paraphrases.jsonl"),
    }
    for name, pairs in sets.items():
        cand = candidates(store, pairs, THRESHOLD)
        labels = np.array([p.label for p in pairs])
        idx = np.flatnonzero(cand)
        scores = np.zeros(len(pairs), np.float32)
        started = time.perf_counter()
        scores[idx] = train_cross.predict(
            model, tokenizer, [(pairs[i].query, pairs[i].stored) for i in idx]
        )
        report["sets"][name] = at_cutoffs(labels, cand, scores, cuts)  # type: ignore[index]
        np.save(out_dir / f"{args.tag}-{name}-scores.npy", scores)
        print(f"{name}: scored {len(idx)} candidates in {time.perf_counter() - started:.1f} s")
    np.save(out_dir / f"{args.tag}-heldout-scores.npy", held_scores)
    (out_dir / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    print("cutoff | heldout P/R | test P/R | paraphrase P/R")
    for h, t, q in zip(
        *(report["sets"][k] for k in ("heldout", "qqp_test", "paraphrases")), strict=True
    ):  # type: ignore[index]
        print(
            f"{h['cutoff']:.3f} | {h['precision']:.3f} {h['recall']:.3f} | "
            f"{t['precision']:.3f} {t['recall']:.3f} | {q['precision']:.3f} {q['recall']:.3f}"
        )


if __name__ == "__main__":
    main()
