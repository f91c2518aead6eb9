"""The whole hit decision with the real all-MiniLM-L6-v2 embeddings and the shipped threshold."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.ml.text import request_text
from gateway.semantic import STRICTNESS, SemanticCache, context_fingerprint

THRESHOLD = STRICTNESS["balanced"].threshold
"""The cache's own guard (no per-lookup check) refuses at the artifact's cutoff, balanced's."""

pytestmark = pytest.mark.model

STORED = [
    "How do I get from Paris to London by train?",
    "What are the most popular online forums in Canada?",
    "Why do vegans not eat meat?",
    "What is the best phone to buy under 10k?",
    "How do I cook risotto?",
]
HITS = [
    ("What's the best way to get from Paris to London by train?", STORED[0]),
    ("Which online forums are the most popular in Canada?", STORED[1]),
    ("Why don't vegans eat meat?", STORED[2]),
    ("Which is the best phone to buy under 10k?", STORED[3]),
    ("How do I make risotto?", STORED[4]),
]
MISSES = [
    "How do I get from London to Paris by train?",  # direction
    "What are the most popular online forums in Germany?",  # entity
    "Why do vegans eat meat?",  # negation
    "What is the best phone to buy under 15k?",  # number
    "Who invented risotto?",  # question word
]


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    embed = pytest.importorskip("gateway.ml.embedder")
    return embed.Embedder.load()


@pytest.fixture
async def filled(embedder) -> AsyncIterator[SemanticCache]:  # type: ignore[no-untyped-def]
    cache = await SemanticCache.open(None, namespace="model-test")
    vectors = await embedder.embed(STORED)
    for text, vector in zip(STORED, vectors, strict=True):
        await cache.store("team-a", "fp", vector, text, text.encode())
    yield cache
    await cache.aclose()


async def test_paraphrases_hit_and_hard_negatives_miss(filled: SemanticCache, embedder) -> None:  # type: ignore[no-untyped-def]
    vectors = await embedder.embed([q for q, _ in HITS] + MISSES)
    for (query, expected), vector in zip(HITS, vectors[: len(HITS)], strict=True):
        hit = await filled.lookup("team-a", "fp", vector, query, THRESHOLD)
        assert hit is not None and hit.payload == expected.encode(), query
    for query, vector in zip(MISSES, vectors[len(HITS) :], strict=True):
        assert await filled.lookup("team-a", "fp", vector, query, THRESHOLD) is None, query


async def test_follow_up_only_matches_its_conversation(embedder) -> None:  # type: ignore[no-untyped-def]
    def body(first: str) -> dict[str, object]:
        return {"model": "auto", "messages": [
            {"role": "user", "content": first},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "now do it in Rust"},
        ]}  # fmt: skip

    cache = await SemanticCache.open(None, namespace="model-test")
    try:
        a, b = body("reverse a string in Python"), body("parse JSON in Python")
        (vector,) = await embedder.embed([request_text(a["messages"])])
        await cache.store(
            "team-a", context_fingerprint(a), vector, request_text(a["messages"]), b"rust reverse"
        )
        assert await cache.lookup(
            "team-a", context_fingerprint(a), vector, request_text(a["messages"]), 0.9
        )
        assert (
            await cache.lookup(
                "team-a", context_fingerprint(b), vector, request_text(b["messages"]), 0.0
            )
            is None
        )
    finally:
        await cache.aclose()


async def test_the_learned_verifier_refuses_what_no_rule_names(embedder) -> None:  # type: ignore[no-untyped-def]
    stored = "How do I become a data scientist?"
    query = "How long does it take to become a data scientist?"
    cache = await SemanticCache.open(None, namespace="model-test")
    try:
        (s, q) = await embedder.embed([stored, query])
        await cache.store("team-a", "fp", s, stored, b"answer")
        assert float(s @ q) >= THRESHOLD
        assert await cache.lookup("team-a", "fp", q, query, THRESHOLD) is None
        assert cache.health()["guard_veto_verifier"] == 1
        assert await cache.lookup("team-a", "fp", s, stored, THRESHOLD) is not None
    finally:
        await cache.aclose()
