"""Semantic-cache speed: lookup latency (embedding + search + guard) at concurrency 1, lookups/s
at concurrency 32, and FAISS search time at 10k and 1M entries (synthetic vectors).

    . .venv/bin/activate && python bench/cache/latency.py [--million] [--out FILE]

Lookups use the gateway's real embedder (gateway.ml.embedder.Embedder, all-MiniLM-L6-v2 fp32,
ONNX Runtime unless --backend torch, micro-batched in a worker thread) and an in-process
SemanticCache holding the stored side of 2,000 QQP test pairs (their vectors from the on-disk
cache); the queries are the other side. The guard is that of ``--strictness`` (its threshold
and verifier cutoff, as the gateway's stage passes them).

``--compare-opposites`` measures, in the same run and on the same cache, the guard as it was
before the opposite-meaning check (rules, then the verifier) and as it is now (rules, opposite
meanings, then the verifier): c=1 alternates the two per query (which one goes first alternates
too), c=32 runs each in turn, twice, ABAB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cache.vectors import VectorStore  # noqa: E402
from gateway.ml import guard, rules  # noqa: E402
from gateway.semantic import STRICTNESS, SemanticCache  # noqa: E402
from gateway.semantic.cache import GuardCheck  # noqa: E402
from gateway.semantic.index import IndexConfig, LocalIndex, StoredEntry  # noqa: E402
from gateway.training.cache import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cache"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


async def lookups(args: argparse.Namespace) -> dict[str, object]:
    from gateway.ml.embedder import Embedder

    pairs = evaluate.split(evaluate.load_pairs(DATA / "qqp_pairs_dev.jsonl"), "test")
    stored = pairs[: args.entries]
    vectors = VectorStore().get([p.stored for p in stored])
    embedder = await asyncio.to_thread(
        Embedder.load, quantize=args.quantize, backend=args.backend, threads=args.threads
    )
    point = STRICTNESS[args.strictness]
    scored: list[float] = []
    checks: dict[str, GuardCheck] = {
        "guard": (await asyncio.to_thread(guard.default_guard)).with_cutoff(point.cutoff).check
    }
    if args.cross_encoder:
        checks = {
            "guard": await asyncio.to_thread(
                cross_encoder_check, args.cross_encoder, args.cutoff, scored
            )
        }
    elif args.compare_opposites:
        checks = {"before": without_opposites(point.cutoff), "after": checks["guard"]}
    cache = await SemanticCache.open(None, namespace="bench")
    for p, v in zip(stored, vectors, strict=True):
        await cache.store("bench", "fp", v, p.stored, b"answer")
    queries = [p.query for p in pairs[: args.queries]]
    await embedder.embed(queries[:8])  # warm up

    async def one(text: str, check: GuardCheck) -> float:
        t0 = time.perf_counter()
        vector = (await embedder.embed([text]))[0]
        await cache.lookup("bench", "fp", vector, text, point.threshold, check=check)
        return time.perf_counter() - t0

    names = list(checks)
    c1: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries[: args.c1_queries]):
        for name in names if i % 2 == 0 else names[::-1]:
            c1[name].append(await one(q, checks[name]))
    search_only: dict[str, list[float]] = {name: [] for name in names}
    qv = VectorStore().get(queries[:200])
    for i, (text, v) in enumerate(zip(queries[:200], qv, strict=True)):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            await cache.lookup("bench", "fp", v, text, point.threshold, check=checks[name])
            search_only[name].append(time.perf_counter() - t0)

    async def worker(items: list[str], check: GuardCheck, out: list[float]) -> None:
        for text in items:
            out.append(await one(text, check))

    c32: dict[str, list[float]] = {name: [] for name in names}
    c32_s: dict[str, float] = dict.fromkeys(names, 0.0)
    for name in names * (2 if len(names) > 1 else 1):
        started = time.perf_counter()
        await asyncio.gather(*(worker(queries[i::32], checks[name], c32[name]) for i in range(32)))
        c32_s[name] += time.perf_counter() - started
    await cache.aclose()
    await embedder.aclose()
    return {
        "entries": len(stored),
        "strictness": args.strictness,
        "cross_encoder_pairs_scored": len(scored),
        "cross_encoder_p50_ms": pct(scored, 50) if scored else None,
        "embedder": {
            "quantized": args.quantize,
            "max_seq_length": embedder.max_seq_length,
            "backend": embedder.backend,
            "threads": args.threads,
        },
        "guards": {
            name: {
                "c1": {
                    "n": len(c1[name]),
                    "p50_ms": pct(c1[name], 50),
                    "p95_ms": pct(c1[name], 95),
                },
                "cache_lookup_only_c1": {
                    "n": len(search_only[name]),
                    "p50_ms": pct(search_only[name], 50),
                    "p95_ms": pct(search_only[name], 95),
                },
                "c32": {
                    "n": len(c32[name]),
                    "lookups_per_s": len(c32[name]) / c32_s[name],
                    "p50_ms": pct(c32[name], 50),
                    "p95_ms": pct(c32[name], 95),
                },
            }
            for name in names
        },
    }


def without_opposites(cutoff: float) -> GuardCheck:
    """The guard as it was before the opposite-meaning check: the rules, then the verifier."""
    verifier = guard.default_guard().verifier
    assert verifier is not None

    def check(a: str, b: str, u: object, v: object) -> guard.Verdict:
        verdict = rules.check_rules(a, b)
        if not verdict.ok:
            return guard.Verdict(False, verdict.reason, verdict.detail)
        p = verifier.probability(a, b, u, v)  # type: ignore[arg-type]
        if p < cutoff:
            return guard.Verdict(False, guard.Reason.VERIFIER, f"p={p:.3f}")
        return guard.Verdict(True)

    return check


def cross_encoder_check(delta: Path, cutoff: float, scored: list[float]) -> GuardCheck:
    """The rules, then the cross-encoder experiment (bench/cache/cross_onnx.py, one thread) in
    place of the feature verifier; appends each forward pass's seconds to ``scored``."""
    from bench.cache.cross_onnx import CrossEncoder

    encoder = CrossEncoder.load(delta, threads=1, cache_dir=delta.parent / "onnx")

    def check(a: str, b: str, u: object, v: object) -> guard.Verdict:
        verdict = guard.check_rules(a, b)
        if not verdict.ok:
            return verdict
        t0 = time.perf_counter()
        p = encoder.probability(a, b)
        scored.append(time.perf_counter() - t0)
        if p < cutoff:
            return guard.Verdict(False, guard.Reason.VERIFIER, f"cross p={p:.3f}")
        return verdict

    return check


def faiss_search(n: int, dim: int = 384, queries: int = 500) -> dict[str, object]:
    """Build a LocalIndex partition of ``n`` random unit vectors (flat up to the default
    approximate_after, HNSW above) and time single-query searches of perturbed stored rows."""
    rng = np.random.default_rng(0)
    config = IndexConfig(dim=dim, max_entries=max(n, 1), ttl_s=1e9)
    index = LocalIndex(config)
    started = time.perf_counter()
    chunk = 50_000
    sample: list[np.ndarray] = []
    for start in range(0, n, chunk):
        rows = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        if len(sample) < queries:
            sample.extend(rows[: queries - len(sample)])
        index.add(
            (StoredEntry(start + i + 1, "t", "f", "", b"", time.time()), rows[i])
            for i in range(len(rows))
        )
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # as in the cache's worker thread (see LocalIndex)
    timings, found = [], 0
    for i, row in enumerate(sample):
        noisy = row + 0.05 * rng.standard_normal(dim, dtype=np.float32) / np.sqrt(dim)
        noisy /= np.linalg.norm(noisy)
        t0 = time.perf_counter()
        result = index.search("t", "f", noisy[None, :].astype(np.float32), 0.9)[0]
        timings.append(time.perf_counter() - t0)
        found += bool(result) and result[0].entry.entry_id == i + 1
    return {
        "entries": n,
        "kind": "hnsw" if index.approximate_partitions() else "flat",
        "build_s": round(build_s, 1),
        "search_p50_ms": pct(timings, 50),
        "search_p95_ms": pct(timings, 95),
        "recall_of_near_duplicate": found / len(sample),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--c1-queries", type=int, default=300)
    parser.add_argument("--quantize", action="store_true", help="int8 embedder")
    parser.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="embedder threads")
    parser.add_argument(
        "--cross-encoder", type=Path, help="a cross-encoder delta (bench/cache/cross_encoder.py)"
    )
    parser.add_argument("--cutoff", type=float, default=0.75, help="cross-encoder cutoff")
    parser.add_argument("--strictness", choices=sorted(STRICTNESS), default="strict")
    parser.add_argument(
        "--compare-opposites",
        action="store_true",
        help="the guard without and with the opposite-meaning check, side by side",
    )
    parser.add_argument("--million", action="store_true", help="also the 1M-entry search")
    parser.add_argument("--skip-lookups", action="store_true")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = parser.parse_args()
    result: dict[str, object] = {}
    result["load_average_before"] = os.getloadavg()
    if not args.skip_lookups:
        result["lookups"] = asyncio.run(lookups(args))
        result["load_average_after_lookups"] = os.getloadavg()
        print("load average", result["load_average_before"], "->", os.getloadavg())
        print(json.dumps(result["lookups"], indent=1), flush=True)
    sizes = [] if args.skip_faiss else [10_000] + ([1_000_000] if args.million else [])
    result["faiss"] = []
    for n in sizes:
        r = faiss_search(n)
        result["faiss"].append(r)  # type: ignore[attr-defined]
        print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
