"""Score every pair with cosine ≥ 0.6 with a trained cross-encoder delta (torch), and save the
scores with the cosine and the rules' verdict, for policy sweeps (bench/cache/cross_policy.py).

    . .venv/bin/activate && python bench/cache/cross_scores.py .gateway/bench/cross/l6.npz
"""

from __future__ import annotations

import argparse
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
from gateway.training.cache import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"


def load_model(delta: Path, threads: int) -> tuple[object, object]:
    import torch
    from tokenizers import Tokenizer

    torch.set_num_threads(threads)
    model_dir = Path(resolve_model("all-MiniLM-L6-v2"))
    meta = train_cross.read_meta(delta)
    model = train_cross.PairClassifier(model_dir)
    train_cross.apply_delta(model, delta)
    model.eval()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(meta["max_length"]))
    tokenizer.no_padding()
    return model, tokenizer


def pair_sets() -> dict[str, list[evaluate.Pair]]:
    qqp = evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl")
    return {
        "heldout": evaluate.split(qqp, "dev")[::10],
        "qqp_test": evaluate.split(qqp, "test"),
        "paraphrases": evaluate.load_pairs(DATA / "gptcache_mock_paraphrases.jsonl"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("delta", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--floor", type=float, default=0.6)
    args = parser.parse_args()
    model, tokenizer = load_model(args.delta, args.threads)
    store = VectorStore()
    for name, pairs in pair_sets().items():
        u, v = store.get([p.stored for p in pairs]), store.get([p.query for p in pairs])
        cos = np.einsum("ij,ij->i", u, v).astype(np.float32)
        reasons = np.array([str(guard.check_rules(p.query, p.stored).reason or "") for p in pairs])
        idx = np.flatnonzero(cos >= args.floor)
        scores = np.full(len(pairs), -1.0, np.float32)
        started = time.perf_counter()
        scores[idx] = train_cross.predict(
            model, tokenizer, [(pairs[i].query, pairs[i].stored) for i in idx]
        )
        print(f"{name}: {len(idx)} pairs in {time.perf_counter() - started:.0f} s")
        np.savez(
            args.delta.with_name(f"{args.delta.stem}-{name}.scores.npz"),
            scores=scores,
            cos=cos,
            reasons=reasons,
            labels=np.array([p.label for p in pairs]),
        )


if __name__ == "__main__":
    main()
