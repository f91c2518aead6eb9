"""The semantic cache: answers to earlier requests that mean the same, in the same context.

- :mod:`~gateway.semantic.fingerprint`: the context fingerprint a hit must share.
- :mod:`~gateway.semantic.index`: FAISS search per (tenant, fingerprint), LRU and TTL.
- :mod:`~gateway.semantic.store` and :mod:`~gateway.semantic.codec`: entries in Redis.
- :mod:`~gateway.semantic.mirror`: keeps this process's index in step with Redis (resync,
  follow the log, degrade while Redis is away).
- :mod:`~gateway.semantic.cache`: :class:`SemanticCache`, the async API the pipeline calls.
- :mod:`~gateway.semantic.lazy`: the cache as the gateway holds it, opened once when needed.

The meaning guard that every candidate hit must pass is a serving model, in
:mod:`gateway.ml.guard`. The cache takes vectors, never text to embed: the pipeline embeds each
request once and hands the same vector to the cache and to the router.
"""

from gateway.semantic.cache import Hit, SemanticCache
from gateway.semantic.fingerprint import context_fingerprint

DEFAULT_THRESHOLD = 0.75
"""Recommended ``cache.semantic.threshold`` (cosine, all-MiniLM-L6-v2), used together with the
meaning guard's learned verifier, which makes the finer cut; see bench/cache/RESULTS.md."""

__all__ = ["DEFAULT_THRESHOLD", "Hit", "SemanticCache", "context_fingerprint"]
