"""The learned pair verifier: the committed artifact loads, refuses hard negatives together with
the rules, accepts paraphrases, is symmetric and cheap; training writes a loadable artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.ml import guard
from gateway.ml.embedder import Embedder
from gateway.ml.verifier import DEFAULT_VERIFIER, FEATURES_VERSION, Verifier
from gateway.training.cache.evaluate import Pair
from gateway.training.cache.train_guard import save, train

pytestmark = pytest.mark.model

HARD_NEGATIVES = [
    ("What is the best phone to buy under 10k?", "What is the best phone to buy under 15k?"),
    ("Why do vegans not eat meat?", "Why do vegans eat meat?"),
    ("Which foods are safe for dogs?", "Which foods are not safe for dogs?"),
    ("What are the best online forums in Canada?", "What are the best online forums in Germany?"),
    ("How do I install Node.js on Windows?", "How do I install Node.js on macOS?"),
    ("How do I get from Paris to London by train?", "How do I get from London to Paris by train?"),
    ("Convert USD to EUR", "Convert EUR to USD"),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
]
PARAPHRASES = [
    ("How do I cook risotto?", "How do I make risotto?"),
    ("What is the capital of France?", "what's the capital of france"),
    (
        "What should I do to increase my followers on Instagram?",
        "How can I get more followers on Instagram?",
    ),
    ("Why can't I sleep at night?", "Why am I not able to sleep at night?"),
    ("What is the best way to learn Python?", "How should I learn Python?"),
    ("How do I lose weight fast?", "What is the fastest way to lose weight?"),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder.load()


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier.load()


def test_the_committed_artifact_is_small_and_describes_itself(verifier: Verifier) -> None:
    assert DEFAULT_VERIFIER.stat().st_size < 2_000_000
    meta = verifier.meta
    assert meta["features_version"] == FEATURES_VERSION
    assert 0.0 < verifier.cutoff < 1.0
    assert meta["embedder"] == {
        "model": "all-MiniLM-L6-v2",
        "max_seq_length": 128,
        "quantized": False,
        "dim": 384,
    }
    assert meta["pairs"] == 10_000  # the development half of qqp_pairs_dev.jsonl


@pytest.mark.parametrize(("a", "b"), HARD_NEGATIVES)
def test_hard_negatives_are_refused(embedder: Embedder, a: str, b: str) -> None:
    u, v = embedder.embed_sync([a, b])
    assert not guard.check(a, b, u, v).ok
    assert not guard.check(b, a, v, u).ok


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_are_accepted(embedder: Embedder, a: str, b: str) -> None:
    u, v = embedder.embed_sync([a, b])
    verdict = guard.check(a, b, u, v)
    assert verdict.ok, verdict


def test_the_verifier_refuses_what_no_rule_names(embedder: Embedder) -> None:
    a, b = "How can I learn to play the guitar?", "How long does it take to learn the guitar?"
    u, v = embedder.embed_sync([a, b])
    assert guard.check_rules(a, b).ok
    assert float(u @ v) >= 0.7
    verdict = guard.check(a, b, u, v)
    assert not verdict.ok and verdict.reason == guard.Reason.VERIFIER


def test_symmetric(embedder: Embedder, verifier: Verifier) -> None:
    """(Its cost per pair is measured in bench/cache/latency.py, not asserted here.)"""
    a, b = PARAPHRASES[2]
    u, v = embedder.embed_sync([a, b])
    assert verifier.probability(a, b, u, v) == pytest.approx(verifier.probability(b, a, v, u))


def test_training_writes_a_loadable_artifact(tmp_path: Path, embedder: Embedder) -> None:
    rows = [Pair(a, b, True) for a, b in PARAPHRASES] + [
        Pair(a, b, False) for a, b in HARD_NEGATIVES
    ]
    stored = embedder.embed_sync([p.stored for p in rows])
    query = embedder.embed_sync([p.query for p in rows])
    signature = dict(embedder.signature)
    model, idf, meta = train(
        rows,
        stored,
        query,
        embedder=signature,
        threshold=0.5,
        members=2,
        folds=2,
        log=lambda _: None,
    )
    path = tmp_path / "verifier.npz"
    save(path, model, idf, meta)
    loaded = guard.Guard.load(path)
    assert loaded.verifier is not None and loaded.verifier.meta["pairs"] == len(rows)
    p = loaded.verifier.probability(rows[0].query, rows[0].stored, query[0], stored[0])
    assert 0.0 <= p <= 1.0


def test_a_long_text_is_read_by_its_opening(embedder: Embedder, verifier: Verifier) -> None:
    document = "How do I tune PostgreSQL autovacuum for a write-heavy table? " * 70_000
    opening = document[: guard.MAX_CHARS]
    pieces = verifier.pieces
    assert np.array_equal(pieces.pieces(document), pieces.pieces(opening))
    u, v = embedder.embed_sync([document, opening])
    assert verifier.probability(document, opening, u, v) == verifier.probability(
        opening, opening, v, v
    )
    for i in range(30):
        pieces.pieces(f"{i} {document}")
    assert len(pieces._memo) <= 8192 and pieces._memo.size_bytes < 30 * 4096
