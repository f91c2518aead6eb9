"""The cross-encoder verifier on ONNX Runtime: export from a delta, agreement with torch, and
single-thread latency per pair (batch 1) and per pair in batches of 8 and 32.

    python bench/cache/cross_latency.py .gateway/bench/cross/l3.npz [--quantize]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cache import cross_train as train_cross  # noqa: E402
from bench.cache.cross_onnx import CrossEncoder  # noqa: E402
from bench.cache.cross_scores import load_model, pair_sets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("delta", type=Path)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()
    cache_dir = args.delta.parent / "onnx"
    started = time.perf_counter()
    encoder = CrossEncoder.load(args.delta, threads=1, cache_dir=cache_dir)
    load_s = time.perf_counter() - started
    test = pair_sets()["qqp_test"][: args.pairs]
    pairs = [(p.query, p.stored) for p in test]
    model, tokenizer = load_model(args.delta, 1)
    reference = train_cross.predict(model, tokenizer, pairs)
    onnx = encoder.probabilities(pairs)
    single = []
    for pair in pairs:
        t0 = time.perf_counter()
        encoder.probabilities([pair])
        single.append(time.perf_counter() - t0)
    batched = {}
    for size in (8, 32):
        t0 = time.perf_counter()
        for start in range(0, len(pairs), size):
            encoder.probabilities(pairs[start : start + size])
        batched[size] = (time.perf_counter() - t0) / len(pairs) * 1e3
    report = {
        "delta_bytes": args.delta.stat().st_size,
        "onnx_bytes": encoder.path.stat().st_size,
        "load_and_export_s": round(load_s, 1),
        "max_abs_diff_torch_onnx": float(np.abs(reference - onnx).max()),
        "p50_ms_batch1": float(np.percentile(single, 50) * 1e3),
        "p95_ms_batch1": float(np.percentile(single, 95) * 1e3),
        "ms_per_pair_batched": batched,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
