"""The semantic cache: answers to earlier requests that mean the same, in the same context.

- :mod:`~gateway.semantic.fingerprint`: the context fingerprint a hit must share.
- :mod:`~gateway.semantic.index`: FAISS search per (tenant, fingerprint), LRU and TTL, and the
  interface (``VectorIndex``) that the cache asks of an index.
- :mod:`~gateway.semantic.pgvector`: the shared index instead (``cache.semantic.index:
  pgvector``): one PostgreSQL table that every replica searches.
- :mod:`~gateway.semantic.store` and :mod:`~gateway.semantic.codec`: entries in Redis.
- :mod:`~gateway.semantic.mirror`: keeps this process's index in step with Redis (resync,
  follow the log, degrade while Redis is away).
- :mod:`~gateway.semantic.cache`: :class:`SemanticCache`, the async API the pipeline calls.
- :mod:`~gateway.semantic.lazy`: the cache as the gateway holds it, opened once when needed.

The meaning guard that every candidate hit must pass is a serving model, in
:mod:`gateway.ml.guard`. The cache takes vectors, never text to embed: the pipeline embeds each
request once and hands the same vector to the cache and to the router.
"""

from dataclasses import dataclass

from gateway.semantic.cache import Hit, SemanticCache
from gateway.semantic.fingerprint import context_fingerprint


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where the hit rule cuts: cosine ≥ ``threshold`` (all-MiniLM-L6-v2) and the meaning
    guard's learned verifier at least ``cutoff`` sure the two texts are the same question."""

    threshold: float
    cutoff: float


STRICTNESS = {
    "strict": OperatingPoint(threshold=0.85, cutoff=0.66),
    "balanced": OperatingPoint(threshold=0.75, cutoff=0.515),
}
"""``cache.semantic.strictness``, measured in bench/cache/RESULTS.md. ``strict`` (the default): a
wrong answer costs a user far more than a miss, so the point is the most precise one (over a
grid of thresholds and cutoffs, out-of-fold verifier probabilities) on the development half of
QQP that keeps recall ≥ 0.40 there (bench/cache/strictness.py); ``balanced``: the threshold
and the verifier cutoff of the previous default (the best precision at the recall the rules
alone had, 0.64): about twice the hits on QQP and 2.4 times the paraphrase hits, and a wrong
answer in four QQP hits instead of one in seven."""

__all__ = [
    "STRICTNESS",
    "Hit",
    "OperatingPoint",
    "SemanticCache",
    "context_fingerprint",
]
