"""Quality of the semantic hit decision on labelled pairs (``gateway cache eval``, bench/cache).

A pair is (stored text, query text, label). The decision under test is the whole hit rule:
cosine ≥ threshold AND the meaning guard accepts the pair (its rules and, given the vectors, its
learned verifier). Rows come as ``text_a, text_b,
label`` (Quora Question Pairs) or as ``origin, similar`` (the GPTCache paraphrase file, all
positives); for the latter, negatives are built by pairing each origin with the origin of another
row (a fixed rotation, so runs are reproducible).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.ml import guard

__all__ = [
    "Pair",
    "Point",
    "decide",
    "load_pairs",
    "lowest_threshold",
    "pair_scores",
    "pair_vectors",
    "split",
    "sweep",
]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Pair:
    stored: str
    query: str
    label: bool


@dataclass(frozen=True, slots=True)
class Point:
    """Precision, recall and F1 of the hit decision at one threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float
    hits: int
    true_hits: int
    positives: int


def load_pairs(path: Path, negatives_per_positive: int = 1) -> list[Pair]:
    """Read a pairs file in either format (see the module docstring)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    if "text_a" in rows[0]:
        return [Pair(r["text_a"], r["text_b"], bool(int(r["label"]))) for r in rows]
    if "origin" in rows[0]:
        origins = [r["origin"] for r in rows]
        pairs = [Pair(r["origin"], r["similar"], True) for r in rows]
        n = len(rows)
        for shift in range(1, negatives_per_positive + 1):
            step = 1 + (shift * 7919) % max(1, n - 1)  # a rotation never maps a row to itself
            for i, r in enumerate(rows):
                j = (i + step) % n
                if origins[j] != r["origin"]:
                    pairs.append(Pair(origins[j], r["similar"], False))
        return pairs
    raise ValueError(f"{path}: rows need text_a/text_b/label or origin/similar")


def split(pairs: Sequence[Pair], part: str) -> list[Pair]:
    """A deterministic half of ``pairs``: ``dev`` (even positions) or ``test`` (odd)."""
    if part not in {"dev", "test"}:
        raise ValueError("part is dev or test")
    start = 0 if part == "dev" else 1
    return list(pairs[start::2])


def decide(
    pairs: Sequence[Pair],
    scores: npt.NDArray[np.float32],
    check: Callable[..., guard.Verdict] | None = guard.check,
    progress: Callable[[int], None] | None = None,
    vectors: tuple[F32, F32] | None = None,
) -> npt.NDArray[np.bool_]:
    """Whether the guard accepts each pair (all True when ``check`` is None); with ``vectors``
    (the stored sides' rows, the queries' rows) the guard gets them too, as in the cache. The
    guard only runs where the score could matter (≥ 0.5), to keep large sweeps quick."""
    ok = np.ones(len(pairs), dtype=bool)
    if check is None:
        return ok
    for i, pair in enumerate(pairs):
        if scores[i] >= 0.5:
            if vectors is None:
                ok[i] = check(pair.query, pair.stored).ok
            else:
                ok[i] = check(pair.query, pair.stored, vectors[1][i], vectors[0][i]).ok
        if progress and i % 256 == 255:
            progress(256)
    if progress:
        progress(len(pairs) % 256)
    return ok


def sweep(
    labels: npt.NDArray[np.bool_],
    scores: npt.NDArray[np.float32],
    accepted: npt.NDArray[np.bool_],
    thresholds: Iterable[float],
) -> list[Point]:
    """Precision/recall/F1 of ``score ≥ t and accepted`` at each threshold ``t``."""
    positives = int(labels.sum())
    points = []
    for t in thresholds:
        hit = (scores >= t) & accepted
        hits, true_hits = int(hit.sum()), int((hit & labels).sum())
        precision = true_hits / hits if hits else 1.0
        recall = true_hits / positives if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        points.append(Point(round(float(t), 4), precision, recall, f1, hits, true_hits, positives))
    return points


def lowest_threshold(points: Sequence[Point], target_precision: float) -> Point | None:
    """The lowest threshold whose precision reaches the target (with at least one hit)."""
    for point in sorted(points, key=lambda p: p.threshold):
        if point.hits and point.precision >= target_precision:
            return point
    return None


def pair_vectors(pairs: Sequence[Pair], embed: Callable[[list[str]], F32]) -> tuple[F32, F32]:
    """(stored-side rows, query-side rows) from an embedding function (unit rows), each
    distinct text embedded once."""
    texts = list(dict.fromkeys([p.stored for p in pairs] + [p.query for p in pairs]))
    vectors = embed(texts)
    row = {t: i for i, t in enumerate(texts)}
    return vectors[[row[p.stored] for p in pairs]], vectors[[row[p.query] for p in pairs]]


def pair_scores(vectors: tuple[F32, F32]) -> F32:
    """Cosine of each pair, from its (stored, query) unit rows (see :func:`pair_vectors`)."""
    a, b = vectors
    return np.asarray(np.einsum("ij,ij->i", a, b), dtype=np.float32)
