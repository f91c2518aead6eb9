"""Routing-quality metrics of the RouteLLM paper, computed exactly rather than on 10 bins.

A router ranks prompts by a score; sending the top share ``c`` to the strong model gives a
quality ``Q(c)`` (mean per-prompt score of whichever model answered). With ``Q_w = Q(0)`` and
``Q_s = Q(1)``:

- ``PGR(c) = (Q(c) - Q_w) / (Q_s - Q_w)``, the performance gap recovered;
- ``APGR`` = the area under PGR over ``c`` in [0, 1];
- ``CPT(x)`` = the smallest share of strong calls whose PGR reaches ``x``;
- ``share_for_quality(q)`` = the smallest share whose ``Q(c)`` reaches ``q * Q_s``.

The curve has a point after every group of tied scores, with straight lines between: the
expected curve when ties are broken at random. A random router's expected curve is the
diagonal, ``PGR(c) = c``: APGR 0.5, ``CPT(x) = x``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Curve:
    share: Array
    """Share of prompts sent to the strong model at each point, from 0 to 1."""
    quality: Array
    """Mean quality at each point."""

    @property
    def weak_quality(self) -> float:
        return float(self.quality[0])

    @property
    def strong_quality(self) -> float:
        return float(self.quality[-1])

    @property
    def pgr(self) -> Array:
        gap = self.strong_quality - self.weak_quality
        if gap == 0:
            return np.full_like(self.quality, np.nan)
        return (self.quality - self.weak_quality) / gap


def curve(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Curve:
    """The quality curve of routing the highest ``scores`` to the strong model first."""
    s = np.asarray(scores, np.float64)
    w = np.asarray(weak, np.float64)
    t = np.asarray(strong, np.float64)
    n = len(s)
    if n == 0 or not len(w) == len(t) == n:
        raise ValueError("scores, weak and strong need the same, non-zero length")
    order = np.argsort(-s, kind="stable")
    gain = np.cumsum((t - w)[order])
    sorted_scores = s[order]
    # a point only where the score changes (the end of a group of ties), and at n
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True]) + 1
    counts = np.r_[0, ends]
    quality = (w.sum() + np.r_[0.0, gain[ends - 1]]) / n
    return Curve(share=counts / n, quality=quality)


def apgr(c: Curve) -> float:
    """Average performance gap recovered: the trapezoid area under PGR(share)."""
    p = c.pgr
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(c.share)))


def cpt(c: Curve, x: float) -> float:
    """Call-performance threshold: the smallest strong share at which PGR reaches ``x``
    (linear between points); nan if it never does."""
    return _first_crossing(c.share, c.pgr, x)


def share_for_quality(c: Curve, fraction: float = 0.95) -> float:
    """The smallest strong share whose quality reaches ``fraction`` of the strong model's."""
    return _first_crossing(c.share, c.quality, fraction * c.strong_quality)


def _first_crossing(xs: Array, ys: Array, target: float) -> float:
    if np.isnan(ys).any():
        return float("nan")
    reached = np.flatnonzero(ys >= target - 1e-12)
    if len(reached) == 0:
        return float("nan")
    k = int(reached[0])
    if k == 0:
        return float(xs[0])
    x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0))


@dataclass(frozen=True, slots=True)
class Report:
    """The figures ``gateway router eval`` prints for one benchmark."""

    n: int
    weak_quality: float
    strong_quality: float
    apgr: float
    cpt50: float
    cpt80: float
    share95: float
    """Strong share for 95% of the strong model's quality."""


def report(scores: npt.ArrayLike, weak: npt.ArrayLike, strong: npt.ArrayLike) -> Report:
    c = curve(scores, weak, strong)
    return Report(
        n=len(np.asarray(weak)),
        weak_quality=c.weak_quality,
        strong_quality=c.strong_quality,
        apgr=apgr(c),
        cpt50=cpt(c, 0.5),
        cpt80=cpt(c, 0.8),
        share95=share_for_quality(c, 0.95),
    )


def random_report(weak: npt.ArrayLike, strong: npt.ArrayLike) -> Report:
    """The expected figures of a router that picks the strong model at random."""
    n = len(np.asarray(weak))
    return report(np.zeros(n), weak, strong)
