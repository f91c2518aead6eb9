#!/usr/bin/env python3
"""Memory of the in-process semantic index (gateway.semantic.index.LocalIndex) per million
entries: an input of the capacity model (docs/capacity.md).

    python bench/capacity/faiss_memory.py [--entries 200000] [--text-bytes 100]
                                          [--payload-bytes 1000] [--out FILE]

Adds ``--entries`` entries of random unit vectors (384 dimensions, all-MiniLM-L6-v2's) to one
partition, as a replica does when it reads the shared entry stream: above ``approximate_after``
the partition is an HNSW graph. Each entry holds a question of ``--text-bytes`` and an answer of
``--payload-bytes`` (the cached response as stored; each its own object, as entries read from
Redis are), so the figure counts what a replica really keeps, not only the vectors. Memory is
the process's resident set (``VmRSS``) after the adds minus before, measured at half the
entries and at all of them; the per-million figure is the slope between the two (start-up
costs left out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from gateway.semantic.index import IndexConfig, LocalIndex, StoredEntry  # noqa: E402

DIM = 384


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fill(index: LocalIndex, first: int, stop: int, text: str, payload: bytes) -> None:
    rng = np.random.default_rng(first)
    chunk = 20_000
    for start in range(first, stop, chunk):
        rows = rng.standard_normal((min(chunk, stop - start), DIM), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        now = time.time()
        entries = (
            StoredEntry(start + i + 1, "t", "f", f"{start + i}{text}", b"%d%s" % (i, payload), now)
            for i in range(len(rows))
        )
        index.add(zip(entries, rows, strict=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--text-bytes", type=int, default=100)
    ap.add_argument("--payload-bytes", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "faiss_memory.json")
    args = ap.parse_args()
    n, half = args.entries, args.entries // 2
    text, payload = "q" * args.text_bytes, b"a" * args.payload_bytes
    config = IndexConfig(dim=DIM, max_entries=n, max_bytes=1 << 50, ttl_s=1e9)
    index = LocalIndex(config)
    base = rss_mb()
    started = time.perf_counter()
    fill(index, 0, half, text, payload)
    at_half = rss_mb()
    fill(index, half, n, text, payload)
    at_all = rss_mb()
    result = {
        "backend": "faiss-local",
        "entries": n,
        "kind": "hnsw" if index.approximate_partitions() else "flat",
        "text_bytes": args.text_bytes,
        "payload_bytes": args.payload_bytes,
        "build_s": round(time.perf_counter() - started, 1),
        "rss_mb_added": round(at_all - base, 1),
        "replica_rss_mb_per_million": round((at_all - at_half) / (n - half) * 1e6, 1),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
