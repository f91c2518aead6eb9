"""Labels from the gateway's own traffic as training and evaluation rows.

The labels store (`gateway.labels_store`) holds, per request the router sent to the small
model and kept, the embedding and dense features the head read, and its labels: a shadow
comparison's judged grades of the small and the large model's answers, and the client's
feedback score. A row's ``weak_score`` is what the answer the client got was worth (the
client's own score when it gave one, else the judge's grade), its ``strong_score`` the judge's
grade of the large model's answer, or 1 when only feedback is known (the large model is taken
to satisfy: a low score then says "this needed the large model").

The newest labels are held out (``holdout``, by time): ``train --from-ledger`` fits on the
older ones and ``eval --from-ledger`` reports on the newest, which the head has not seen, the
way traffic arrives after a retraining.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.labels_store import Labelled, open_labels
from gateway.ml.classifier import FEATURE_NAMES
from gateway.ml.head import Head
from gateway.settings import Settings
from gateway.training.router import metrics
from gateway.training.router.data import LabelledRow

TRAFFIC = "traffic"
HOLDOUT = 0.2
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrafficRows:
    rows: list[LabelledRow]
    """Prompt-less rows (the store keeps no text), benchmark ``traffic``, subset the tenant."""
    vectors: F32
    dense: F32
    routed: npt.NDArray[np.float64]
    """The difficulty each request was routed by (the head in force then)."""

    def __len__(self) -> int:
        return len(self.rows)

    def part(self, mask: npt.NDArray[np.bool_]) -> TrafficRows:
        keep = np.flatnonzero(mask)
        return TrafficRows(
            [self.rows[i] for i in keep], self.vectors[keep], self.dense[keep], self.routed[keep]
        )

    def difficulty(self, head: Head) -> npt.NDArray[np.float32]:
        return head.difficulty(
            self.vectors, self.dense[:, : len(FEATURE_NAMES)], None, dense=self.dense
        )


def scores(label: Labelled) -> tuple[float, float] | None:
    """(weak, strong) for one labelled request; None when it has neither label."""
    weak = label.feedback if label.feedback is not None else label.small_score
    if weak is None:
        return None
    strong = label.large_score if label.large_score is not None else 1.0
    return weak, strong


def rows_of(labels: Sequence[Labelled]) -> TrafficRows:
    rows, vectors, dense, routed = [], [], [], []
    for label in labels:
        pair = scores(label)
        if pair is None:
            continue
        sample = label.sample
        rows.append(LabelledRow(sample.request_id, TRAFFIC, sample.tenant, "", *pair))
        vectors.append(label.vector)
        dense.append(label.dense)
        routed.append(sample.difficulty)
    if not rows:
        return TrafficRows(
            [], np.empty((0, 0), np.float32), np.empty((0, 0), np.float32), np.empty(0)
        )
    return TrafficRows(rows, np.stack(vectors), np.stack(dense), np.array(routed, np.float64))


def load(settings: Settings, since: float) -> TrafficRows:
    """The rows of the labelled requests since ``since``, oldest first."""
    return rows_of(load_labelled(settings, since))


def split_by_time(
    traffic: TrafficRows, holdout: float = HOLDOUT
) -> tuple[TrafficRows, TrafficRows]:
    """(older, newest): the newest ``holdout`` share of the rows (they come oldest first)."""
    held = round(len(traffic) * holdout)
    newest = np.zeros(len(traffic), bool)
    if held:
        newest[-held:] = True
    return traffic.part(~newest), traffic.part(newest)


@dataclass(frozen=True)
class Comparison:
    """Routing quality on held-out traffic: each scorer's report, and random's."""

    reports: dict[str, metrics.Report]


def compare(traffic: TrafficRows, heads: dict[str, Head]) -> Comparison:
    """APGR and the rest for each head, for the difficulty the traffic was routed by, and for a
    random router, on the same rows."""
    weak = np.array([r.weak_score for r in traffic.rows])
    strong = np.array([r.strong_score for r in traffic.rows])
    out = {name: metrics.report(traffic.difficulty(h), weak, strong) for name, h in heads.items()}
    out["as routed"] = metrics.report(traffic.routed, weak, strong)
    out["random"] = metrics.random_report(weak, strong)
    return Comparison(out)


@dataclass(frozen=True)
class Quality:
    """The judged quality of what the router sent to the small model, for one group."""

    group: str
    compared: int
    small: float
    """Mean judge grade of the small model's answers (what clients got), in [0, 1]."""
    large: float
    """Mean judge grade of the large model's answers to the same requests."""
    as_good: float
    """Share of requests where the small answer was graded at least as high as the large."""
    feedback: int
    """Requests with client feedback."""
    feedback_mean: float | None


def quality(labels: Sequence[Labelled], by: str = "model") -> list[Quality]:
    """Per ``by`` (``model``: the small model that answered; ``tenant``; ``difficulty``: the
    quartile band of the difficulty it was routed by) and over all, the judged quality of the
    small model's answers beside the large one's: the evidence before trusting the savings."""
    groups: dict[str, list[Labelled]] = {}
    for label in labels:
        groups.setdefault(_group(label, by), []).append(label)
    out = [_quality(name, rows) for name, rows in sorted(groups.items())]
    if len(groups) > 1:
        out.append(_quality("all", list(labels)))
    return out


def _group(label: Labelled, by: str) -> str:
    sample = label.sample
    if by == "tenant":
        return sample.tenant
    if by == "difficulty":
        band = min(int(sample.difficulty * 4), 3)
        return f"{band / 4:.2f}-{(band + 1) / 4:.2f}"
    return sample.model


def _quality(name: str, rows: Sequence[Labelled]) -> Quality:
    judged = [r for r in rows if r.small_score is not None and r.large_score is not None]
    small = np.array([r.small_score for r in judged], np.float64)
    large = np.array([r.large_score for r in judged], np.float64)
    rated = [r.feedback for r in rows if r.feedback is not None]
    return Quality(
        group=name,
        compared=len(judged),
        small=float(small.mean()) if len(judged) else float("nan"),
        large=float(large.mean()) if len(judged) else float("nan"),
        as_good=float((small >= large).mean()) if len(judged) else float("nan"),
        feedback=len(rated),
        feedback_mean=float(np.mean(rated)) if rated else None,
    )


def load_labelled(settings: Settings, since: float) -> list[Labelled]:
    """The labelled requests since ``since`` in the store the settings point at, oldest first."""

    async def read() -> list[Labelled]:
        store = open_labels(settings.redis_url, settings.data_dir)
        try:
            return await store.labelled(since)
        finally:
            await store.aclose()

    return asyncio.run(read())
