"""Semantic-cache quality: our hit decision (cosine threshold AND meaning guard) side by side
with GPTCache's (same model, its default similarity evaluation), in one run.

    . .venv/bin/activate && python bench/cache/quality.py [--out bench/results/quality.json]

Data: ../shared/data/cache/qqp_pairs_dev.jsonl, split deterministically (even rows = dev, used
to design the guard and pick the default threshold; odd rows = test, reported here) and
gptcache_mock_paraphrases.jsonl (999 positives; 999 negatives built by pairing each paraphrase
with another row's origin). Protocol: store the first text, look up with the second; a hit is
right iff the pair is labelled the same question.

Ours is reported at each ``cache.semantic.strictness`` (``gateway.semantic.STRICTNESS``: a
cosine threshold and a verifier cutoff) and as a frontier: over a grid of thresholds and
cutoffs (cutoff 0: the hard vetoes alone, rules and opposite meanings), the best recall at each
precision level, against GPTCache's best recall over its own threshold at that level.

Vectors come from bench/cache/vectors.py (embedded once, cached on disk). GPTCache runs in its
own venv (bench/.venv-gptcache) through bench/cache/gptcache_side.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cache.vectors import VectorStore  # noqa: E402
from gateway.ml import guard  # noqa: E402
from gateway.semantic import STRICTNESS  # noqa: E402
from gateway.training.cache import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"
GPTCACHE_PY = ROOT / "bench" / ".venv-gptcache" / "bin" / "python"
THRESHOLDS = [round(float(t), 4) for t in np.arange(0.60, 0.9951, 0.005)]
CUTOFFS = [0.0] + [round(float(c), 3) for c in np.arange(0.30, 0.901, 0.02)]
"""Verifier cutoffs of the frontier; 0: the verifier refuses nothing."""
PRECISION_LEVELS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.95)


def vectors_for(store: VectorStore, pairs: list[evaluate.Pair]) -> tuple[np.ndarray, np.ndarray]:
    return store.get([p.stored for p in pairs]), store.get([p.query for p in pairs])


def gptcache_side(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(GPTCACHE_PY), str(ROOT / "bench" / "cache" / "gptcache_side.py")],
        input=json.dumps(job),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit("gptcache side failed (its stderr is above)")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def recall_at_precision(points: list[evaluate.Point], precision: float) -> float:
    ok = [p.recall for p in points if p.hits and p.precision >= precision]
    return max(ok) if ok else 0.0


def guard_signals(
    pairs: list[evaluate.Pair], scores: np.ndarray, vectors: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, int]]]:
    """Per pair: whether the hard vetoes (rules, opposite meanings) pass, the verifier's
    probability (where the cosine is ≥ 0.5 and they pass), and the vetoes by reason above the
    lowest strictness threshold."""
    verifier = guard.default_guard().verifier
    assert verifier is not None
    hard = np.ones(len(pairs), bool)
    probability = np.zeros(len(pairs), np.float32)
    reasons: dict[str, dict[str, int]] = {}
    lowest = min(op.threshold for op in STRICTNESS.values())
    for i, p in enumerate(pairs):
        if scores[i] < 0.5:
            continue
        verdict = guard.check_rules(p.query, p.stored)
        hard[i] = verdict.ok
        if verdict.ok:
            probability[i] = verifier.probability(p.query, p.stored, vectors[1][i], vectors[0][i])
        elif scores[i] >= lowest:
            r = reasons.setdefault(
                str(verdict.reason), {"vetoed_negatives": 0, "vetoed_positives": 0}
            )
            r["vetoed_positives" if p.label else "vetoed_negatives"] += 1
    return hard, probability, reasons


def frontier(
    labels: np.ndarray, scores: np.ndarray, hard: np.ndarray, probability: np.ndarray
) -> list[evaluate.Point]:
    """Every (threshold, cutoff) point of the grid (the threshold field holds the cosine)."""
    points = []
    for cutoff in CUTOFFS:
        accepted = hard & (probability >= cutoff)
        points += evaluate.sweep(labels, scores, accepted, THRESHOLDS)
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    parser.add_argument("--confirm", type=int, default=100, help="pairs run end to end in GPTCache")
    parser.add_argument("--latency-entries", type=int, default=500)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--render", type=Path, help="print the tables of a saved report, no run")
    args = parser.parse_args()
    if args.render:
        for name, result in json.loads(args.render.read_text())["sets"].items():
            print_set(name, result)
        return
    store = VectorStore()
    qqp = evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl")
    sets = {
        "qqp_test": evaluate.split(qqp, "test"),
        "qqp_dev": evaluate.split(qqp, "dev"),
        "paraphrases": evaluate.load_pairs(DATA / "gptcache_mock_paraphrases.jsonl"),
    }
    report: dict[str, object] = {
        "strictness": {k: [op.threshold, op.cutoff] for k, op in STRICTNESS.items()},
        "sets": {},
    }
    for name, pairs in sets.items():
        labels = np.array([p.label for p in pairs])
        vectors = vectors_for(store, pairs)
        scores = np.einsum("ij,ij->i", *vectors).astype(np.float32)
        guard.default_guard()  # load the verifier and the antonym table before timing them
        started = time.perf_counter()
        hard, probability, reasons = guard_signals(pairs, scores, vectors)
        guard_us = (time.perf_counter() - started) / max(1, int((scores >= 0.5).sum())) * 1e6
        settings = {
            setting: evaluate.sweep(labels, scores, hard & (probability >= op.cutoff), THRESHOLDS)
            for setting, op in STRICTNESS.items()
        }
        grid = frontier(labels, scores, hard, probability)
        raw = evaluate.sweep(labels, scores, np.ones_like(hard), THRESHOLDS)
        job: dict[str, Any] = {
            "vectors": str(store.path),
            "pairs": [[p.stored, p.query] for p in pairs],
            "check_vectors": [p.query for p in pairs[:50]],
            "confirm": [[p.stored, p.query] for p in pairs[: args.confirm]]
            if name != "qqp_dev"
            else [],
            "latency_entries": [p.stored for p in pairs[: args.latency_entries]]
            if name == "qqp_test"
            else [],
            "latency_queries": [p.query for p in pairs[: args.latency_queries]]
            if name == "qqp_test"
            else [],
        }
        theirs_raw = gptcache_side(job)
        gscores = np.array(theirs_raw["scores"], dtype=np.float32)
        # GPTCache hits when score >= 4 * similarity_threshold: sweep similarity_threshold.
        g_thresholds = [round(float(t), 4) for t in np.arange(0.50, 0.9976, 0.0025)]
        theirs = evaluate.sweep(labels, gscores / 4.0, np.ones_like(hard), g_thresholds)
        predicted = [bool(s >= 3.2) for s in gscores[: len(theirs_raw["confirm"])]]
        g_default = next(p for p in theirs if abs(p.threshold - 0.8) < 1e-6)
        report["sets"][name] = {  # type: ignore[index]
            "pairs": len(pairs),
            "positives": int(labels.sum()),
            "settings": {
                setting: {
                    "sweep": [_point(p) for p in points],
                    "at_default": _point(
                        next(
                            p
                            for p in points
                            if abs(p.threshold - STRICTNESS[setting].threshold) < 1e-6
                        )
                    ),
                }
                for setting, points in settings.items()
            },
            "threshold_only": [_point(p) for p in raw],
            "gptcache": [_point(p) for p in theirs],
            "gptcache_at_default": _point(g_default),
            "guard_vetoes_above_threshold": reasons,
            "guard_us_per_pair": guard_us,
            "gptcache_confirm_agreement": (
                sum(a == b for a, b in zip(predicted, theirs_raw["confirm"], strict=True))
                / max(1, len(predicted))
            ),
            "gptcache_vector_min_cosine": theirs_raw["vector_agreement_min_cosine"],
            "gptcache_latency": theirs_raw.get("latency"),
            "recall_at_equal_precision": [
                {
                    "precision": level,
                    "gptcache_recall": recall_at_precision(theirs, level),
                    "ours_recall": recall_at_precision(grid, level),
                    **{
                        f"{setting}_recall": recall_at_precision(points, level)
                        for setting, points in settings.items()
                    },
                }
                for level in PRECISION_LEVELS
            ],
        }
        print_set(name, report["sets"][name])  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten {args.out}")


def _point(p: evaluate.Point) -> dict[str, float]:
    return {
        "threshold": p.threshold,
        "precision": round(p.precision, 4),
        "recall": round(p.recall, 4),
        "f1": round(p.f1, 4),
        "hits": p.hits,
    }


def print_set(name: str, r: dict[str, Any]) -> None:
    print(f"\n## {name}: {r['pairs']} pairs, {r['positives']} positive")
    settings = r["settings"]
    print(
        "\nOurs at each strictness (its verifier cutoff) by cosine threshold; the cosine alone:\n"
    )
    names = list(settings)
    print("| threshold | " + " | ".join(f"{n} P / R" for n in names) + " | cosine-only P / R |")
    print("|---|" + "---|" * len(names) + "---|")
    raw = {p["threshold"]: p for p in r["threshold_only"]}
    sweeps = {n: {p["threshold"]: p for p in settings[n]["sweep"]} for n in names}
    for t in (0.70, 0.75, 0.78, 0.80, 0.82, 0.85, 0.88, 0.90, 0.92, 0.95):
        cells = [sweeps[n].get(round(t, 4)) for n in names]
        c = raw.get(round(t, 4))
        if c and all(cells):
            ours = " | ".join(f"{o['precision']:.3f} / {o['recall']:.3f}" for o in cells if o)
            print(f"| {t:.2f} | {ours} | {c['precision']:.3f} / {c['recall']:.3f} |")
    print(
        "\nGPTCache (similarity_threshold t: hit when 4 - squared L2 >= 4t, i.e. cosine >= 2t-1):\n"
    )
    print("| similarity_threshold | precision | recall | F1 |")
    print("|---|---|---|---|")
    theirs = {p["threshold"]: p for p in r["gptcache"]}
    for t in (0.70, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98):
        g = theirs.get(round(t, 4))
        if g:
            print(f"| {t:.2f} | {g['precision']:.3f} | {g['recall']:.3f} | {g['f1']:.3f} |")
    print("\nRecall at equal precision (best threshold of each; ours: best of the whole grid of")
    print("thresholds and verifier cutoffs, and along each strictness's cutoff):\n")
    print(
        "| precision at least | GPTCache recall | our recall (grid) | "
        + " | ".join(f"{n} cutoff" for n in names)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(names))
    for c in r["recall_at_equal_precision"]:
        recalls = " | ".join(f"{c[f'{n}_recall']:.3f}" for n in names)
        print(
            f"| {c['precision']:.2f} | {c['gptcache_recall']:.3f} | {c['ours_recall']:.3f} | "
            f"{recalls} |"
        )
    for n in names:
        print(f"\nours at {n} (default point): {settings[n]['at_default']}")
    print(f"GPTCache at its default 0.8: {r['gptcache_at_default']}")
    print(f"hard vetoes above the lowest threshold: {r['guard_vetoes_above_threshold']}")
    print(
        f"guard: {r['guard_us_per_pair']:.1f} µs per pair; GPTCache end-to-end agreement with "
        f"the score rule: {r['gptcache_confirm_agreement']:.3f}; vector agreement min cosine "
        f"{r['gptcache_vector_min_cosine']:.4f}"
    )
    if r.get("gptcache_latency"):
        print(f"GPTCache get() latency: {r['gptcache_latency']}")


if __name__ == "__main__":
    main()
