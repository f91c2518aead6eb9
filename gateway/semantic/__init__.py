"""The semantic cache: answers to earlier requests that mean the same, in the same context.

- :mod:`~gateway.semantic.guard`: the meaning guard (numbers, negation, entities, direction),
  then :mod:`~gateway.semantic.verifier`, a learned pair verifier (its artifact is
  ``gateway/data/semantic_verifier.npz``, trained by :mod:`~gateway.semantic.train_guard`).
- :mod:`~gateway.semantic.fingerprint`: the context fingerprint and the text that is embedded.
- :mod:`~gateway.semantic.index`: FAISS search per (tenant, fingerprint), LRU and TTL.
- :mod:`~gateway.semantic.store` and :mod:`~gateway.semantic.codec`: entries in Redis.
- :mod:`~gateway.semantic.cache`: :class:`SemanticCache`, the async API the pipeline calls.
- :mod:`~gateway.semantic.evaluate` and :mod:`~gateway.semantic.cli`: ``gateway cache eval``
  and ``gateway cache train-guard``.

The cache takes vectors, never text to embed: the pipeline embeds each request once and hands
the same vector to the cache and to the router.
"""

from gateway.semantic.cache import Hit, SemanticCache
from gateway.semantic.fingerprint import cache_text, context_fingerprint
from gateway.semantic.guard import Guard, Reason, Verdict, check, default_guard, same_question

DEFAULT_THRESHOLD = 0.75
"""Recommended ``cache.semantic.threshold`` (cosine, all-MiniLM-L6-v2), used together with the
meaning guard's learned verifier, which makes the finer cut; see bench/cache/RESULTS.md."""

__all__ = [
    "DEFAULT_THRESHOLD",
    "Guard",
    "Hit",
    "Reason",
    "SemanticCache",
    "Verdict",
    "cache_text",
    "check",
    "context_fingerprint",
    "default_guard",
    "same_question",
]
